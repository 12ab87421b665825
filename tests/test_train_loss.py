"""The in-batch loss against a NumPy reference: softmax over every passage, false-negative masking."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dpr_jax.train.loss import false_negative_mask, in_batch_loss, in_batch_losses


def numpy_reference(q, p, ids, group, temperature, mask):
    """Cross-entropy of each question over all passages (columns with a copy of its positive removed)."""
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    losses, correct = [], []
    for i in range(len(q)):
        pos = i * group
        allowed = [j for j in range(len(p)) if not (mask and ids[j] == ids[pos] and j != pos)]
        s = np.array([q[i] @ p[j] / temperature for j in allowed])
        log_z = np.log(np.sum(np.exp(s - s.max()))) + s.max()
        losses.append(log_z - q[i] @ p[pos] / temperature)
        correct.append(allowed[int(np.argmax(s))] == pos)
    return np.mean(losses), np.mean(correct), np.array(losses)


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    b, g, d = 6, 3, 16
    q = 0.5 * rng.standard_normal((b, d)).astype(np.float32)
    p = 0.5 * rng.standard_normal((b * g, d)).astype(np.float32)
    p[0::g] += 0.5 * q  # positives resemble their questions (losses stay O(1): float32-friendly)
    ids = np.arange(b * g, dtype=np.int32) * 7 + 1
    return q, p, ids, g


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_loss_and_accuracy_equal_numpy_reference(vectors, temperature):
    q, p, ids, g = vectors
    loss, acc = in_batch_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(ids), group_size=g,
                              temperature=temperature)
    ref_loss, ref_acc, _ = numpy_reference(q, p, ids, g, temperature, mask=True)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    assert float(acc) == pytest.approx(ref_acc)


def test_duplicate_passage_changes_loss_exactly_as_masked_reference(vectors):
    q, p, ids, g = vectors
    # Put a copy of question 0's positive as question 2's hard negative, and let question 4's positive be
    # the same passage as question 1's (two questions about one paragraph, as in SQuAD).
    p, ids = p.copy(), ids.copy()
    p[2 * g + 1], ids[2 * g + 1] = p[0], ids[0]
    p[4 * g], ids[4 * g] = p[1 * g], ids[1 * g]
    args = (jnp.asarray(q), jnp.asarray(p), jnp.asarray(ids))
    masked, _ = in_batch_losses(*args, group_size=g, mask_false_negatives=True)
    unmasked, _ = in_batch_losses(*args, group_size=g, mask_false_negatives=False)
    _, _, ref_masked = numpy_reference(q, p, ids, g, 1.0, mask=True)
    _, _, ref_unmasked = numpy_reference(q, p, ids, g, 1.0, mask=False)
    np.testing.assert_allclose(np.asarray(masked), ref_masked, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(unmasked), ref_unmasked, rtol=1e-5)
    changed = np.flatnonzero(~np.isclose(np.asarray(masked), np.asarray(unmasked), rtol=1e-6))
    assert changed.tolist() == [0, 1, 4]  # exactly the questions whose positive has a copy elsewhere
    assert np.all(np.asarray(masked)[changed] < np.asarray(unmasked)[changed])  # a copy is a removed negative


def test_false_negative_mask_marks_copies_of_the_positive_only():
    ids = jnp.asarray([5, 9, 5, 7, 9, 5], jnp.int32)
    mask = np.asarray(false_negative_mask(ids, jnp.asarray([0, 3])))
    assert mask[0].tolist() == [False, False, True, False, False, True]  # its own column stays
    assert not mask[1].any()  # id 7 appears once


def test_sharded_rows_equal_the_whole_batch(vectors):
    """Loss of questions 3..5 computed with first_question=3 equals those rows of the whole batch."""
    q, p, ids, g = vectors
    whole, _ = in_batch_losses(jnp.asarray(q), jnp.asarray(p), jnp.asarray(ids), group_size=g)
    part, _ = in_batch_losses(jnp.asarray(q[3:]), jnp.asarray(p), jnp.asarray(ids), group_size=g, first_question=3)
    np.testing.assert_allclose(np.asarray(part), np.asarray(whole)[3:], rtol=1e-6)
