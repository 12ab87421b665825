"""The training objective against a brute-force NumPy reference: in-batch softmax, gold-passage masking,
KL and MarginMSE distillation, Matryoshka dimensions, and per-device rows equal to the whole batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpr_jax.train.loss import LossOptions, false_negative_mask, kl_losses, mean_losses, question_losses


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max()
    return x - (m + np.log(np.sum(np.exp(x - m))))


def numpy_reference(q, p, ids, group, *, gold=None, teacher=None, temperature=1.0, mask=True, kind="contrastive",
                    contrastive_weight=0.0, teacher_temperature=1.0, dims=(), dim_weights=(), normalized=False):
    """Per-question ``{"loss", "accuracy", "contrastive_loss", "distill_loss"}`` by loops in float64.

    Question ``i`` is scored against every passage except the copies of its gold passages (``gold[i]``: ids;
    default its positive's id) other than its positive column; distillation runs over its own group's
    passages that have a finite teacher score; Matryoshka sums the whole objective over leading dims.
    """
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    full = q.shape[1]
    dims = dims or (full,)
    weights = dim_weights or (1.0,) * len(dims)
    out = {k: np.zeros(len(q)) for k in ("loss", "accuracy", "contrastive_loss", "distill_loss")}
    for dim, w in zip(dims, weights):
        qd, pd = q[:, :dim], p[:, :dim]
        if normalized and dim < full:
            qd = qd / np.linalg.norm(qd, axis=1, keepdims=True)
            pd = pd / np.linalg.norm(pd, axis=1, keepdims=True)
        for i in range(len(q)):
            pos = i * group
            gold_i = set(gold[i]) if gold is not None else {ids[pos]}
            allowed = [j for j in range(len(p)) if not (mask and ids[j] in gold_i and j != pos)]
            s = np.array([qd[i] @ pd[j] / temperature for j in allowed])
            ce = -_log_softmax(s)[allowed.index(pos)]
            if dim == full:
                out["accuracy"][i] = allowed[int(np.argmax(s))] == pos
            distill = 0.0
            if kind != "contrastive":
                cand = [k for k in range(group) if np.isfinite(teacher[i][k])]
                st = np.array([qd[i] @ pd[pos + k] / temperature for k in cand])
                tt = np.array([teacher[i][k] / teacher_temperature for k in cand])
                if kind == "kl":
                    lt, ls = _log_softmax(tt), _log_softmax(st)
                    distill = float(np.sum(np.exp(lt) * (lt - ls)))
                elif 0 in cand and len(cand) > 1:  # margin_mse: the positive and each scored negative
                    margins = [((st[0] - st[c]) - (tt[0] - tt[c])) ** 2 for c in range(1, len(cand))]
                    distill = float(np.mean(margins))
                out["loss"][i] += w * (distill + contrastive_weight * ce)
            else:
                out["loss"][i] += w * ce
            out["contrastive_loss"][i] += w * ce
            out["distill_loss"][i] += w * distill
    if full not in dims:
        for i in range(len(q)):
            pos = i * group
            gold_i = set(gold[i]) if gold is not None else {ids[pos]}
            allowed = [j for j in range(len(p)) if not (mask and ids[j] in gold_i and j != pos)]
            out["accuracy"][i] = allowed[int(np.argmax([q[i] @ p[j] for j in allowed]))] == pos
    return out


B, G, D = 6, 3, 16


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    q = 0.5 * rng.standard_normal((B, D)).astype(np.float32)
    p = 0.5 * rng.standard_normal((B * G, D)).astype(np.float32)
    p[0::G] += 0.5 * q  # positives resemble their questions (losses stay O(1): float32-friendly)
    ids = np.arange(B * G, dtype=np.int32) * 7 + 1
    gold = np.repeat(ids[0::G, None], 2, axis=1)  # [B, 2]: each question's positive, twice (padding)
    teacher = rng.uniform(0, 10, (B, G)).astype(np.float32)
    return q, p, ids, gold, teacher


def _jax(q, p, ids, gold, teacher, **opts):
    targets = {"passage_ids": jnp.asarray(ids), "gold_ids": jnp.asarray(gold), "teacher_scores": jnp.asarray(teacher)}
    out = question_losses(jnp.asarray(q), jnp.asarray(p), targets, LossOptions(group_size=G, **opts))
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_matches(got, ref, rtol=1e-5):
    for k, v in got.items():
        if k == "accuracy":
            assert v.tolist() == ref[k].tolist()
        else:
            np.testing.assert_allclose(v, ref[k], rtol=rtol, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_contrastive_loss_and_accuracy_equal_numpy_reference(vectors, temperature):
    q, p, ids, gold, teacher = vectors
    got = _jax(q, p, ids, gold, teacher, temperature=temperature)
    assert set(got) == {"loss", "accuracy"}
    _assert_matches(got, numpy_reference(q, p, ids, G, temperature=temperature))
    means = mean_losses(jnp.asarray(q), jnp.asarray(p), {"passage_ids": jnp.asarray(ids)},
                        LossOptions(group_size=G, temperature=temperature))
    assert float(means["loss"]) == pytest.approx(got["loss"].mean(), rel=1e-6)


def test_duplicate_passage_changes_loss_exactly_as_masked_reference(vectors):
    q, p, ids, gold, teacher = vectors
    # Put a copy of question 0's positive as question 2's hard negative, and let question 4's positive be
    # the same passage as question 1's (two questions about one paragraph, as in SQuAD).
    p, ids, gold = p.copy(), ids.copy(), gold.copy()
    p[2 * G + 1], ids[2 * G + 1] = p[0], ids[0]
    p[4 * G], ids[4 * G] = p[1 * G], ids[1 * G]
    gold[4] = ids[4 * G]
    masked = _jax(q, p, ids, gold, teacher)["loss"]
    unmasked = _jax(q, p, ids, gold, teacher, mask_false_negatives=False)["loss"]
    np.testing.assert_allclose(masked, numpy_reference(q, p, ids, G)["loss"], rtol=1e-5)
    np.testing.assert_allclose(unmasked, numpy_reference(q, p, ids, G, mask=False)["loss"], rtol=1e-5)
    changed = np.flatnonzero(~np.isclose(masked, unmasked, rtol=1e-6))
    assert changed.tolist() == [0, 1, 4]  # exactly the questions whose positive has a copy elsewhere
    assert np.all(masked[changed] < unmasked[changed])  # a copy is a removed negative


def test_every_gold_passage_of_a_question_is_masked_not_only_its_sampled_positive(vectors):
    """Question 0 has two gold passages; the second is question 3's positive and question 5's hard negative."""
    q, p, ids, gold, teacher = vectors
    gold = gold.copy()
    gold[0, 1] = ids[3 * G]  # question 0's other positive is in the batch as question 3's positive
    p, ids = p.copy(), ids.copy()
    p[5 * G + 2], ids[5 * G + 2] = p[3 * G], ids[3 * G]  # ... and again as question 5's hard negative
    got = _jax(q, p, ids, gold, teacher)
    ref = numpy_reference(q, p, ids, G, gold=gold)
    _assert_matches(got, ref)
    sampled_only = numpy_reference(q, p, ids, G)  # the old rule: copies of the sampled positive only
    assert got["loss"][0] < sampled_only["loss"][0] - 1e-3  # two more columns removed from its softmax
    np.testing.assert_allclose(got["loss"][1:], sampled_only["loss"][1:], rtol=1e-5)


def test_false_negative_mask_marks_gold_copies_except_the_positive_column():
    ids = jnp.asarray([5, 9, 5, 7, 9, 5], jnp.int32)
    mask = np.asarray(false_negative_mask(ids, jnp.asarray([[5, 5], [7, 9]]), jnp.asarray([0, 3])))
    assert mask[0].tolist() == [False, False, True, False, False, True]  # its own column stays
    assert mask[1].tolist() == [False, True, False, False, True, False]  # 9 is its other gold passage


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
@pytest.mark.parametrize("temperature,teacher_temperature,weight", [(1.0, 1.0, 0.0), (0.05, 2.5, 0.3)])
def test_distillation_equals_numpy_reference(vectors, kind, temperature, teacher_temperature, weight):
    q, p, ids, gold, teacher = vectors
    teacher = teacher.copy()
    teacher[1, 2] = np.nan  # a pool negative: no teacher score, not a candidate
    teacher[2, 1:] = np.nan  # a question with no scored negative: KL and MarginMSE are 0 for it
    opts = dict(kind=kind, temperature=temperature, teacher_temperature=teacher_temperature, contrastive_weight=weight)
    got = _jax(q, p, ids, gold, teacher, **opts)
    ref = numpy_reference(q, p, ids, G, teacher=teacher, **opts)
    assert set(got) == {"loss", "accuracy", "contrastive_loss", "distill_loss"}
    _assert_matches(got, ref, rtol=2e-5)
    assert got["distill_loss"][2] == 0 and np.all(got["distill_loss"][[0, 1, 3]] > 0)


def test_kl_gradient_is_student_minus_teacher_probabilities_on_candidates_only():
    student = jnp.asarray([[2.0, 0.5, -1.0, 3.0], [0.1, 0.2, 0.3, 0.4]])
    teacher = jnp.asarray([[4.0, 1.0, np.nan, 0.0], [np.nan] * 4])
    grad = np.asarray(jax.grad(lambda s: kl_losses(s, teacher).sum())(student))
    valid = [0, 1, 3]
    ps = np.exp(_log_softmax(np.asarray(student[0])[valid]))
    pt = np.exp(_log_softmax(np.asarray(teacher[0])[valid]))
    np.testing.assert_allclose(grad[0, valid], ps - pt, rtol=1e-5, atol=1e-7)
    assert grad[0, 2] == 0 and np.all(grad[1] == 0)  # no candidate, no gradient, and no NaN
    assert np.all(np.isfinite(np.asarray(kl_losses(student, teacher))))


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("dims,weights", [((16, 8, 4), (1.0, 0.5, 0.25)), ((8, 2), ())])
def test_matryoshka_equals_numpy_reference(vectors, normalized, dims, weights):
    q, p, ids, gold, teacher = vectors
    if normalized:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
    opts = dict(dims=dims, dim_weights=weights, normalized=normalized, temperature=0.1 if normalized else 1.0)
    for extra in ({}, {"kind": "kl", "contrastive_weight": 0.5}):
        got = _jax(q, p, ids, gold, teacher, **opts, **extra)
        _assert_matches(got, numpy_reference(q, p, ids, G, teacher=teacher, **opts, **extra), rtol=2e-5)
    with pytest.raises(ValueError, match="within 1..16"):
        _jax(q, p, ids, gold, teacher, dims=(32,))


def test_sharded_rows_equal_the_whole_batch(vectors):
    """Terms of questions 3..5 computed with first_question=3 (and their own targets) equal those rows of the whole."""
    q, p, ids, gold, teacher = vectors
    opts = LossOptions(group_size=G, kind="kl", contrastive_weight=0.5, dims=(16, 4), normalized=True)
    args = lambda rows: {"passage_ids": jnp.asarray(ids), "gold_ids": jnp.asarray(gold[rows]),  # noqa: E731
                         "teacher_scores": jnp.asarray(teacher[rows])}
    whole = question_losses(jnp.asarray(q), jnp.asarray(p), args(slice(None)), opts)
    part = question_losses(jnp.asarray(q[3:]), jnp.asarray(p), args(slice(3, None)), opts, first_question=3)
    for k in whole:
        np.testing.assert_allclose(np.asarray(part[k]), np.asarray(whole[k])[3:], rtol=1e-6)
