"""The sharded training step: every question against every passage of the global batch, on any mesh.

The model is used in functional form (:class:`~dpr_jax.models.functional.FunctionalModel`): its
parameters are a pure dict of float32 arrays, replicated, merged back into a module inside ``jit``. The gradient is computed under :func:`jax.shard_map` over the data axis of
:mod:`dpr_jax.mesh` with explicit collectives:

1. each device encodes its own questions and its own passages (its shard of the global batch);
2. the passage vectors (and their id hashes) are ``all_gather``-ed, so each device scores its
   questions against *all* passages of the global batch, on every device and host;
3. the loss of its questions (:func:`dpr_jax.train.loss.question_losses`: contrastive, distillation,
   Matryoshka; a question's gold ids and teacher scores arrive sharded with it), divided by the
   global batch size, is differentiated on each device; gradients flow back through the
   ``all_gather`` (its transpose sums the passage-vector gradients of every device's questions onto
   the device that encoded the passage), and one ``psum`` adds the per-device parameter gradients
   and metrics.

So the gradient is that of the mean loss of the global batch, whatever the number of devices.

With GradCache (:mod:`dpr_jax.train.gradcache`) each device encodes in chunks without keeping
activations, takes the gradient of the global loss with respect to the gathered vectors, and
re-encodes chunk by chunk under a VJP: the same gradient with activation memory of one chunk.

The optimizer update follows in the same ``jit``. A step whose loss, gradient norm or new parameters
are not finite (an update can overflow even from a finite gradient; the new optimizer state is finite
whenever the gradient norm is, being averages of the gradient and its square) leaves
parameters and optimizer state unchanged, so a NaN or inf never reaches a checkpoint; the training
loop stops with an error when it sees one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from dpr_jax.mesh import DATA_AXIS, replicated
from dpr_jax.models.functional import FunctionalModel
from dpr_jax.train.gradcache import gradcache_grads
from dpr_jax.train.loss import LossOptions, question_losses

# {"questions": {ids, mask, types} [B, Lq], "passages": {...} [B, G, Lp], "passage_ids": [B, G],
#  "gold_ids": [B, M], "teacher_scores": [B, G]} (dpr_jax.data.batches)
Batch = dict
_TARGETS = ("passage_ids", "gold_ids", "teacher_scores")


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What the step computes (static: a change recompiles)."""

    loss: LossOptions
    dropout: bool = True
    gradcache: bool = False
    question_chunk: int = 0  # GradCache questions per chunk per device (0: all local questions)
    passage_chunk: int = 0  # GradCache passages per chunk per device (0: all local passages)
    nan_at_step: int = -1  # testing aid: make this step's loss and gradients NaN


def _flatten_groups(passages: dict) -> dict:
    """``[b, G, L]`` passage arrays -> ``[b*G, L]``."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), passages)


def psum_tree(tree, axis_name: str):
    """``psum`` of a whole pytree as ONE all-reduce of its leaves raveled into a float32 vector.

    XLA does not always merge per-leaf all-reduces (CPU/gloo does not), and each costs a round trip.
    """
    flat, unravel = ravel_pytree(tree)
    return unravel(jax.lax.psum(flat, axis_name))


def make_grad_fn(fmodel: FunctionalModel, mesh, opts: StepOptions) -> Callable:
    """``f(params, batch, key) -> (grads, metrics)`` of the global batch's mean loss.

    ``params`` replicated, ``batch`` sharded over the data axis (leading dim = global batch), ``key``
    the step's dropout key. ``metrics``: the batch means of :func:`~dpr_jax.train.loss.question_losses`
    (``loss``, ``accuracy``, and with distillation its two parts). Call it inside ``jit``.
    """
    num_devices = mesh.devices.size
    keys_of = lambda key: (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1))  # noqa: E731

    def local_plain(params, questions, passages, targets, key):
        b = questions["input_ids"].shape[0]
        global_b = b * num_devices
        device = jax.lax.axis_index(DATA_AXIS)
        key_q, key_p = keys_of(jax.random.fold_in(key, device)) if opts.dropout else (None, None)
        passages = _flatten_groups(passages)
        # this device's questions' own targets, and the ids of every passage of the global batch
        targets = dict(targets, passage_ids=jax.lax.all_gather(targets["passage_ids"].reshape(-1), DATA_AXIS,
                                                               tiled=True))

        def loss_fn(params):
            q = fmodel.encode(params, "question", questions, key_q)
            p = fmodel.encode(params, "passage", passages, key_p)
            p_all = jax.lax.all_gather(p, DATA_AXIS, tiled=True)
            terms = question_losses(q, p_all, targets, opts.loss, first_question=device * b)
            metrics = {k: v.sum() / global_b for k, v in terms.items()}
            return metrics["loss"], metrics

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return psum_tree((grads, metrics), DATA_AXIS)

    def local_gradcache(params, questions, passages, targets, key):
        device = jax.lax.axis_index(DATA_AXIS)
        key_q, key_p = keys_of(jax.random.fold_in(key, device)) if opts.dropout else (None, None)
        passages = _flatten_groups(passages)
        targets = {k: jax.lax.all_gather(v, DATA_AXIS, tiled=True) for k, v in targets.items()}
        targets["passage_ids"] = targets["passage_ids"].reshape(-1)

        def global_loss(q_all, p_all):
            metrics = {k: v.mean() for k, v in question_losses(q_all, p_all, targets, opts.loss).items()}
            return metrics["loss"], metrics

        grads, (_, metrics) = gradcache_grads(
            fmodel.encode, params, questions, passages, global_loss, axis_name=DATA_AXIS, device=device,
            question_chunk=opts.question_chunk, passage_chunk=opts.passage_chunk, key_q=key_q, key_p=key_p)
        return psum_tree(grads, DATA_AXIS), metrics

    local = local_gradcache if opts.gradcache else local_plain
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
                            out_specs=(P(), P()), check_vma=False)

    def grad_fn(params, batch: Batch, key):
        return sharded(params, batch["questions"], batch["passages"], {k: batch[k] for k in _TARGETS}, key)

    return grad_fn


def _all_finite(tree) -> jax.Array:
    """One boolean: every element of every leaf is finite (integer leaves always are)."""
    return jax.tree.reduce(lambda ok, x: ok & jnp.all(jnp.isfinite(x)), tree, jnp.bool_(True))


def init_train_state(params: dict, optimizer: optax.GradientTransformation, mesh) -> dict:
    """``{"params", "opt_state", "step"}`` replicated over the mesh."""
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    return jax.device_put(state, replicated(mesh))


def make_train_step(fmodel: FunctionalModel, mesh, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, opts: StepOptions) -> Callable:
    """A jitted ``step(state, batch, base_key) -> (state, metrics)``; ``state`` is donated.

    The step's dropout key is ``fold_in(base_key, step)``, a pure function of the seed and the step,
    so a resumed run draws the same masks. ``metrics``: loss, accuracy (in-batch top-1), grad_norm
    (before clipping), lr (of this update), finite (0 if the update was skipped).
    """
    grad_fn = make_grad_fn(fmodel, mesh, opts)

    def step(state, batch, base_key):
        params, opt_state, n = state["params"], state["opt_state"], state["step"]
        grads, metrics = grad_fn(params, batch, jax.random.fold_in(base_key, n))
        if opts.nan_at_step >= 0:
            poison = jnp.where(n == opts.nan_at_step, jnp.nan, 1.0)
            grads = jax.tree.map(lambda g: g * poison, grads)
            metrics = dict(metrics, loss=metrics["loss"] * poison)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # the new optimizer state needs no check of its own: its moments are averages of g and g**2, finite
        # whenever the (clipped) gradient norm is; checking it as well kept a second copy of the whole state
        # alive and cost the quickstart's step 0.7 GB of RSS (3.1 -> 2.4 GB with all-MiniLM-L6-v2)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & _all_finite(new_params)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        state = {"params": keep(new_params, params), "opt_state": keep(new_opt_state, opt_state), "step": n + 1}
        metrics = dict(metrics, grad_norm=grad_norm, lr=schedule(n), finite=finite.astype(jnp.float32))
        return state, metrics

    return jax.jit(step, donate_argnums=(0,), out_shardings=(replicated(mesh), replicated(mesh)))

