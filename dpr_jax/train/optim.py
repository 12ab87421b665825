"""The optimizer DPR trains with: AdamW, linear warm-up then linear decay to 0, global-norm clipping.

The learning-rate schedule is DPR's ``get_schedule_linear`` (and Hugging Face's
``get_linear_schedule_with_warmup``): the multiplier at update ``s`` (0-based) is ``s / warmup`` during
warm-up and ``(total - s) / (total - warmup)`` afterwards, floored at 0. As in DPR, gradients are
clipped to a global norm before the Adam update, and weight decay skips biases and LayerNorm scales
(BERT's ``no_decay = ["bias", "LayerNorm.weight"]``): every parameter with fewer than two dimensions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dpr_jax.errors import DprJaxError


def linear_warmup_decay(learning_rate: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """DPR's schedule: ``lr * s/warmup`` for ``s < warmup``, then linearly down to 0 at ``total_steps``."""
    if total_steps < 1:
        raise DprJaxError(f"the number of training steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise DprJaxError(f"warmup_steps must be >= 0, got {warmup_steps}")
    warmup = float(warmup_steps)
    decay = float(max(1, total_steps - warmup_steps))

    def schedule(count):
        s = jnp.asarray(count, jnp.float32)
        up = s / warmup if warmup_steps > 0 else jnp.ones_like(s)
        down = jnp.maximum(0.0, (total_steps - s) / decay)
        return learning_rate * jnp.where(s < warmup, up, down)

    return schedule


def decay_mask(params):
    """True for parameters that get weight decay: matrices and embeddings, not biases or norm scales."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def make_optimizer(learning_rate: float, *, warmup_steps: int, total_steps: int, weight_decay: float = 0.0,
                   max_grad_norm: float = 2.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with DPR's schedule and clipping; returns ``(optimizer, schedule)``.

    ``max_grad_norm <= 0`` disables clipping.
    """
    schedule = linear_warmup_decay(learning_rate, warmup_steps, total_steps)
    parts = []
    if max_grad_norm and max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
    return optax.chain(*parts), schedule
