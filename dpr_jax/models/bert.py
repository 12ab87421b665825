"""BERT in Flax NNX, written to match Hugging Face's PyTorch ``BertModel`` number for number.

Post-LayerNorm transformer layers, exact (erf) GELU, learned absolute positions and token types,
padding-masked self-attention. Parameters are float32; activations are computed in ``dtype``
(float32 or bfloat16) with softmax and LayerNorm statistics kept in float32. Dropout is applied only
when an ``nnx.Rngs`` with a ``dropout`` stream is passed at call time, so a training step's dropout
masks are a pure function of the key it is given (exact resume needs that).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from dpr_jax.models.config import BertConfig

_INIT = nnx.initializers.normal(0.02)


def dropout(x: jax.Array, rate: float, rngs: nnx.Rngs | None) -> jax.Array:
    """Inverted dropout; identity when ``rngs`` is None (inference) or the rate is 0."""
    if rngs is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _linear(n_in, n_out, dtype, rngs):
    return nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=jnp.float32, kernel_init=_INIT, rngs=rngs)


def _norm(n, eps, rngs):
    # LayerNorm statistics in float32 with the exact (two-pass) variance, as PyTorch computes it.
    return nnx.LayerNorm(n, epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


class BertEmbeddings(nnx.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, config: BertConfig, *, dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        kw = dict(param_dtype=jnp.float32, embedding_init=_INIT, rngs=rngs)
        self.word = nnx.Embed(config.vocab_size, h, **kw)
        self.position = nnx.Embed(config.max_position_embeddings, h, **kw)
        self.token_type = nnx.Embed(config.type_vocab_size, h, **kw)
        self.norm = _norm(h, config.layer_norm_eps, rngs)
        self.rate = config.hidden_dropout_prob
        self.dtype = dtype

    def __call__(self, input_ids, token_type_ids, rngs=None):
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return dropout(self.norm(x).astype(self.dtype), self.rate, rngs)


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer layer: self-attention, then a GELU feed-forward block."""

    def __init__(self, config: BertConfig, *, dtype, rngs: nnx.Rngs):
        h, i = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.query = _linear(h, h, dtype, rngs)
        self.key = _linear(h, h, dtype, rngs)
        self.value = _linear(h, h, dtype, rngs)
        self.attention_out = _linear(h, h, dtype, rngs)
        self.attention_norm = _norm(h, config.layer_norm_eps, rngs)
        self.intermediate = _linear(h, i, dtype, rngs)
        self.output = _linear(i, h, dtype, rngs)
        self.output_norm = _norm(h, config.layer_norm_eps, rngs)
        self.hidden_rate = config.hidden_dropout_prob
        self.attention_rate = config.attention_probs_dropout_prob
        self.dtype = dtype

    def _attention(self, x, mask_bias, rngs):
        b, n, _ = x.shape
        # [B, heads, L, d]: XLA's CPU batched dot is ~3x faster on this layout than on [B, L, heads, d]
        heads = lambda t: t.reshape(b, n, self.num_heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        q = q * (1.0 / math.sqrt(q.shape[-1]))
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) + mask_bias
        # softmax with the normalisation deferred past the second matmul (same numbers, one pass less
        # over [B, heads, L, L]); dropout of the probabilities = dropout of the unnormalised weights
        weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
        total = weights.sum(axis=-1, keepdims=True)
        weights = dropout(weights, self.attention_rate, rngs).astype(self.dtype)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", weights, v, preferred_element_type=jnp.float32) / total
        return ctx.astype(self.dtype).transpose(0, 2, 1, 3).reshape(b, n, -1)

    def __call__(self, x, mask_bias, rngs=None):
        attn = dropout(self.attention_out(self._attention(x, mask_bias, rngs)), self.hidden_rate, rngs)
        x = self.attention_norm(x + attn).astype(self.dtype)
        ff = self.output(jax.nn.gelu(self.intermediate(x), approximate=False))
        ff = dropout(ff, self.hidden_rate, rngs)
        return self.output_norm(x + ff).astype(self.dtype)


class BertModel(nnx.Module):
    """The BERT encoder: returns the last layer's token states ``[B, L, H]`` in float32."""

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)])

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs: nnx.Rngs | None = None):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        # Padding keys get a large negative bias (finite, so fully padded rows stay NaN-free).
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, -1e30).astype(jnp.float32)
        x = self.embeddings(input_ids, token_type_ids, rngs)
        for layer in self.layers:
            x = layer(x, mask_bias, rngs)
        return x.astype(jnp.float32)
