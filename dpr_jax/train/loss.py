"""DPR's in-batch negative loss: softmax cross-entropy of each question over every passage of the batch.

A global batch holds ``B`` questions and ``B * G`` passages laid out in groups: question ``i`` owns
passages ``i*G .. i*G+G-1``, its positive first (column ``i*G``) then its ``G-1`` negatives. Every
question is scored against *all* ``B * G`` passages (``q · p / temperature``), so the other
questions' positives and negatives are extra negatives (Karpukhin et al. 2020, sec. 3.2).

False-negative masking: the same passage can appear more than once in a batch (two SQuAD questions
about one paragraph, a hard negative that is another question's positive). Such a copy of a
question's own positive is not a negative for it, so every column whose passage id equals the
question's positive id - other than the positive's own column - is removed from its softmax.
Passage ids travel as int32 hashes (:func:`dpr_jax.data.batches.passage_hash`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def score_matrix(q: jax.Array, p: jax.Array, temperature: float) -> jax.Array:
    """``[b, D] x [P, D] -> [b, P]`` float32 scores ``q · p / temperature`` (full-precision matmul)."""
    scores = jnp.einsum("qd,pd->qp", q.astype(jnp.float32), p.astype(jnp.float32),
                        precision=jax.lax.Precision.HIGHEST)
    return scores / temperature


def false_negative_mask(passage_ids: jax.Array, positive_columns: jax.Array) -> jax.Array:
    """``[b, P]`` bool: True where a column holds another copy of the row's positive passage."""
    positive_ids = passage_ids[positive_columns]
    columns = jnp.arange(passage_ids.shape[0])
    same_passage = passage_ids[None, :] == positive_ids[:, None]
    return same_passage & (columns[None, :] != positive_columns[:, None])


def in_batch_losses(q: jax.Array, p: jax.Array, passage_ids: jax.Array, *, group_size: int,
                    temperature: float = 1.0, mask_false_negatives: bool = True,
                    first_question: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
    """Per-question cross-entropy and top-1 correctness of ``b`` questions against all ``P`` passages.

    ``q`` holds the global questions ``first_question .. first_question+b-1`` (one device's shard, or
    the whole batch with ``first_question=0``); ``p`` and ``passage_ids`` hold *all* passages of the
    global batch. Returns ``(loss [b], correct [b])``, float32.
    """
    scores = score_matrix(q, p, temperature)
    positive_columns = (first_question + jnp.arange(q.shape[0])) * group_size
    if mask_false_negatives:
        scores = jnp.where(false_negative_mask(passage_ids, positive_columns), -jnp.inf, scores)
    log_probs = jax.nn.log_softmax(scores, axis=-1)
    loss = -jnp.take_along_axis(log_probs, positive_columns[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(scores, axis=-1) == positive_columns).astype(jnp.float32)
    return loss, correct


def in_batch_loss(q: jax.Array, p: jax.Array, passage_ids: jax.Array, *, group_size: int,
                  temperature: float = 1.0, mask_false_negatives: bool = True) -> tuple[jax.Array, jax.Array]:
    """Mean loss and in-batch top-1 accuracy of a whole global batch (``q``: all ``B`` questions)."""
    loss, correct = in_batch_losses(q, p, passage_ids, group_size=group_size, temperature=temperature,
                                    mask_false_negatives=mask_false_negatives)
    return loss.mean(), correct.mean()
