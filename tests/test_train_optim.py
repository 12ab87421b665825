"""The optimizer: DPR's linear warm-up/decay schedule, clipping, and no weight decay on biases/LayerNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dpr_jax.errors import DprJaxError
from dpr_jax.models.config import BertConfig, EncoderConfig
from dpr_jax.models.dual_encoder import DualEncoder
from dpr_jax.train.optim import decay_mask, linear_warmup_decay, make_optimizer


def dpr_lr_lambda(step, warmup, total):
    """facebookresearch/DPR dpr/utils/model_utils.py get_schedule_linear, written out."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


@pytest.mark.parametrize("warmup,total", [(4, 10), (0, 7), (1237, 5000)])
def test_schedule_is_dprs_linear_warmup_then_decay(warmup, total):
    schedule = linear_warmup_decay(2e-5, warmup, total)
    for s in sorted({0, 1, warmup // 2, max(warmup - 1, 0), warmup, warmup + 1, (warmup + total) // 2, total - 1,
                     total, total + 3}):
        assert float(schedule(s)) == pytest.approx(2e-5 * dpr_lr_lambda(s, warmup, total), rel=1e-5, abs=1e-12)


def test_schedule_rejects_zero_steps():
    with pytest.raises(DprJaxError):
        linear_warmup_decay(1e-3, 0, 0)


def _params():
    bert = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                      max_position_embeddings=16)
    model = DualEncoder(bert, EncoderConfig(), shared=True, rngs=nnx.Rngs(0))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_decay_mask_excludes_biases_and_layernorm_scales():
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(decay_mask(_params()))[0]}
    leaf = lambda k: k.rsplit("[", 1)[-1].strip("]'")  # noqa: E731  the parameter's own name
    assert flat and all(not v for k, v in flat.items() if leaf(k) in ("bias", "scale"))
    assert all(v for k, v in flat.items() if leaf(k) in ("kernel", "embedding"))
    assert {leaf(k) for k in flat} == {"bias", "scale", "kernel", "embedding"}


def test_weight_decay_only_moves_decayed_params_and_clipping_bounds_the_update():
    params = _params()
    opt, _ = make_optimizer(1e-2, warmup_steps=0, total_steps=10, weight_decay=0.5, max_grad_norm=1.0)
    state = opt.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, state, params)
    mask = decay_mask(params)
    for u, p, m in zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(mask)):
        expected = -1e-2 * 0.5 * np.asarray(p) if m else np.zeros_like(p)  # AdamW decoupled decay
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-5, atol=1e-12)

    # clipping: gradients scaled by 1000 give the same update as the gradients clipped to norm 1
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    norm = float(optax.tree.norm(grads))
    opt_nd, _ = make_optimizer(1e-2, warmup_steps=0, total_steps=10, max_grad_norm=1.0)
    big, _ = opt_nd.update(jax.tree.map(lambda g: g * 1000.0, grads), opt_nd.init(params), params)
    unit, _ = opt_nd.update(jax.tree.map(lambda g: g / norm, grads), opt_nd.init(params), params)
    for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(unit)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-9)
