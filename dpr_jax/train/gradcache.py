"""GradCache: the gradient of a big-batch contrastive loss with activation memory of one chunk.

Gao, Zhang, Han & Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (and Tevatron's JAX trainer). The contrastive loss couples every question with every
passage, but it depends on the encoder only through the vectors. So, on each device:

1. encode the local questions and passages chunk by chunk without keeping activations;
2. gather every device's vectors, evaluate the loss and take its gradient with respect to the
   *vectors* (cheap: a ``[B, B*G]`` score matrix), keeping this device's rows of it;
3. re-encode each chunk under :func:`jax.vjp`, feed it that chunk's cached vector gradient and add
   the resulting parameter gradients up.

Steps 1 and 3 are :func:`jax.lax.scan` loops over chunks, so only one chunk's activations are alive at
a time. By the chain rule the sum in step 3 is exactly the plain gradient (up to float rounding);
dropout masks are drawn per chunk with the same key in steps 1 and 3, so they agree between the two
passes (though not with the plain step's masks).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dpr_jax.errors import DprJaxError


def split_chunks(tree, chunk: int):
    """Reshape the leading axis ``n`` of every leaf to ``[n // chunk, chunk, ...]`` (``chunk=0``: one chunk)."""
    n = jax.tree.leaves(tree)[0].shape[0]
    chunk = chunk or n
    if n % chunk:
        raise DprJaxError(f"GradCache chunk size {chunk} does not divide the {n} sequences per device")
    return jax.tree.map(lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), tree)


def _chunk_key(key, i):
    return None if key is None else jax.random.fold_in(key, i)


def encode_in_chunks(encode: Callable, params, side: str, chunks, key) -> jax.Array:
    """Vectors of every chunk (``[n, c, ...]`` inputs -> ``[n*c, D]``), no gradient, one chunk at a time."""
    n = jax.tree.leaves(chunks)[0].shape[0]
    reps = jax.lax.map(lambda xs: encode(params, side, xs[1], _chunk_key(key, xs[0])), (jnp.arange(n), chunks))
    return jax.lax.stop_gradient(reps.reshape((-1, reps.shape[-1])))


def accumulate_chunk_grads(encode: Callable, params, side: str, chunks, rep_grads: jax.Array, key, grads):
    """``grads + sum_chunks vjp(encode(chunk))(rep_grad of chunk)``, re-encoding one chunk at a time."""
    n = jax.tree.leaves(chunks)[0].shape[0]
    rep_grads = rep_grads.reshape((n, -1, rep_grads.shape[-1]))

    def body(acc, xs):
        i, chunk, g = xs
        _, vjp = jax.vjp(lambda prm: encode(prm, side, chunk, _chunk_key(key, i)), params)
        return jax.tree.map(jnp.add, acc, vjp(g)[0]), None

    return jax.lax.scan(body, grads, (jnp.arange(n), chunks, rep_grads))[0]


def gradcache_grads(encode: Callable, params, questions: dict, passages: dict, global_loss: Callable, *,
                    axis_name: str, device, question_chunk: int = 0, passage_chunk: int = 0, key_q=None, key_p=None):
    """This device's share of the parameter gradient of ``global_loss`` (``psum`` them to get the total).

    Runs inside ``shard_map`` over ``axis_name``. ``encode(params, side, batch, key)`` encodes one chunk
    (``side`` = ``"question"``/``"passage"``; dropout iff ``key``); ``questions``/``passages`` are this
    device's ``[n, L]`` inputs; ``global_loss(q_all, p_all) -> (loss, aux)`` is the loss of the gathered
    vectors of all devices (in device order). Returns ``(grads, (loss, aux))``.
    """
    q_chunks = split_chunks(questions, question_chunk)
    p_chunks = split_chunks(passages, passage_chunk)
    q = encode_in_chunks(encode, params, "question", q_chunks, key_q)
    p = encode_in_chunks(encode, params, "passage", p_chunks, key_p)

    q_all = jax.lax.all_gather(q, axis_name, tiled=True)
    p_all = jax.lax.all_gather(p, axis_name, tiled=True)
    (loss, aux), (gq_all, gp_all) = jax.value_and_grad(global_loss, argnums=(0, 1), has_aux=True)(q_all, p_all)
    gq = jax.lax.dynamic_slice_in_dim(gq_all, device * q.shape[0], q.shape[0])
    gp = jax.lax.dynamic_slice_in_dim(gp_all, device * p.shape[0], p.shape[0])

    grads = jax.tree.map(jnp.zeros_like, params)
    grads = accumulate_chunk_grads(encode, params, "question", q_chunks, gq, key_q, grads)
    grads = accumulate_chunk_grads(encode, params, "passage", p_chunks, gp, key_p, grads)
    return grads, (loss, aux)
