"""Training batches: a pure function of (seed, step), per-process slices, negatives and their fallbacks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dpr_jax.data.batches import BatchSpec, TrainBatches, passage_hash, passage_key
from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError
from dpr_jax.models.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return TextTokenizer.from_dir(minilm_dir)


def _records(n=10):
    P = lambda i: Passage(f"p{i}", f"text number {i}", f"title {i}")  # noqa: E731
    recs = []
    for i in range(n):
        if i % 3 == 0:
            recs.append(TrainRecord(f"question {i}", ("a",), (P(i), P(100 + i)), hard_negatives=(P(200 + i), P(300 + i))))
        elif i % 3 == 1:
            recs.append(TrainRecord(f"question {i}", ("a",), (P(i),), negatives=(P(400 + i),)))
        else:
            recs.append(TrainRecord(f"question {i}", ("a",), (P(i),)))
    return recs


def _spec(**kw):
    base = dict(global_batch_size=4, question_max_length=8, passage_max_length=16, hard_negatives=2, seed=3)
    base.update(kw)
    return BatchSpec(**base)


def test_batches_are_a_pure_function_of_seed_and_step(tokenizer):
    a, b = TrainBatches(_records(), tokenizer, _spec()), TrainBatches(_records(), tokenizer, _spec())
    for step in (5, 0, 3, 5):  # any order, fresh or reused instance
        x, y = a.batch(step), b.batch(step)
        assert all(np.array_equal(x[k][f], y[k][f]) for k in ("questions", "passages") for f in x[k])
        assert np.array_equal(x["passage_ids"], y["passage_ids"])
    other = TrainBatches(_records(), tokenizer, _spec(seed=4))
    assert [e.question for e in other.examples(0)] != [e.question for e in a.examples(0)] or \
        [e.question for e in other.examples(1)] != [e.question for e in a.examples(1)]


def test_each_epoch_visits_every_full_batch_of_records_once(tokenizer):
    batches = TrainBatches(_records(10), tokenizer, _spec())
    assert batches.steps_per_epoch == 2  # 10 // 4; the last partial batch is dropped
    for epoch in range(3):
        idx = np.concatenate([batches.record_indices(epoch * 2 + k) for k in range(2)])
        assert len(set(idx.tolist())) == 8
    assert not np.array_equal(batches.record_indices(0), batches.record_indices(2))  # reshuffled per epoch
    ordered = TrainBatches(_records(10), tokenizer, _spec(shuffle=False))
    assert ordered.record_indices(1).tolist() == [4, 5, 6, 7]


def test_process_slices_concatenate_to_the_global_batch(tokenizer):
    batches = TrainBatches(_records(), tokenizer, _spec())
    whole = batches.batch(1)
    parts = [batches.batch(1, slice(0, 2)), batches.batch(1, slice(2, 4))]
    for k in ("questions", "passages"):
        for f in whole[k]:
            assert np.array_equal(whole[k][f], np.concatenate([p[k][f] for p in parts]))
    assert np.array_equal(whole["passage_ids"], np.concatenate([p["passage_ids"] for p in parts]))


def test_negatives_come_from_hard_then_negatives_then_random_records(tokenizer):
    # Random passages are the first positive of a uniformly drawn record (before host-local reading
    # they were drawn from a pool of every distinct passage, which needed the whole file on every host).
    records = _records()
    batches = TrainBatches(records, tokenizer, _spec(shuffle=False, hard_negatives=2, random_negatives=1))
    assert batches.group_size == 4
    first_positives = {r.positives[0].id for r in records}
    drawn = []
    for row, ex in enumerate(batches.examples(0)):  # records 0..3 in order
        i = row
        ids = [p.id for p in ex.passages]
        assert ids[0] == f"p{i}"  # first positive (shuffle_positives off)
        if i % 3 == 0:
            assert ids[1:3] == [f"p{200 + i}", f"p{300 + i}"]
            drawn += ids[3:]
        elif i % 3 == 1:
            assert ids[1] == f"p{400 + i}"
            drawn += ids[2:]
        else:
            drawn += ids[1:]
    assert set(drawn) <= first_positives  # the fallbacks and the random negative
    all_drawn = {p.id for s in range(20) for e in batches.examples(s) for p in e.passages[3:]}
    assert all_drawn == first_positives  # every record can be drawn


def test_shuffle_positives_picks_among_the_positives(tokenizer):
    batches = TrainBatches(_records(12), tokenizer, _spec(global_batch_size=12, shuffle_positives=True))
    chosen = set()
    for step in range(6):
        for row, ex in enumerate(batches.examples(step)):
            rec = batches.records[batches.record_indices(step)[row]]
            assert ex.passages[0] in rec.positives
            if len(rec.positives) > 1:
                chosen.add(rec.positives.index(ex.passages[0]))
    assert chosen == {0, 1}  # the first and the second positive were both used


def test_shapes_and_passage_id_hashes(tokenizer):
    batches = TrainBatches(_records(), tokenizer, _spec())
    b = batches.batch(0)
    assert b["questions"]["input_ids"].shape == (4, 8)
    assert b["passages"]["input_ids"].shape == (4, 3, 16)
    assert all(v.dtype == np.int32 for v in (*b["questions"].values(), *b["passages"].values(), b["passage_ids"]))
    ex = batches.examples(0)
    assert b["passage_ids"].tolist() == [[passage_hash(p) for p in e.passages] for e in ex]
    # the tokenised passage is [CLS] title [SEP] text [SEP]
    first = tokenizer.passages([ex[0].passages[0].title], [ex[0].passages[0].text], 16, pad_to=16)
    assert np.array_equal(b["passages"]["input_ids"][0, 0], first["input_ids"][0])


def test_passage_hash_uses_id_else_content():
    assert passage_hash(Passage("x", "one")) == passage_hash(Passage("x", "two"))
    assert passage_hash(Passage("x", "one")) != passage_hash(Passage("y", "one"))
    assert passage_hash(Passage("", "one", "t")) == passage_hash(Passage("", "one", "t"))
    assert passage_key(Passage("", "one", "t")) != passage_key(Passage("", "two", "t"))
    assert isinstance(passage_hash(Passage("x", "one")), int)


def test_too_few_records_for_one_batch(tokenizer):
    with pytest.raises(DprJaxError, match="fewer than one global batch"):
        TrainBatches(_records(3), tokenizer, _spec())


def test_synthetic_records_are_valid_dpr_training_data(tmp_path):
    from dpr_jax.data.training_data import read_training_records
    from train_support import write_synthetic_training

    path = write_synthetic_training(tmp_path / "train.jsonl", n=12, n_passages=5)
    records, problems = read_training_records(path)
    assert not problems and len(records) == 12
    assert records[0].positives[0].id == records[5].positives[0].id == "p0"  # shared positives
    assert [len(r.hard_negatives) for r in records[:3]] == [2, 0, 0]
    assert [len(r.negatives) for r in records[:3]] == [0, 1, 0]


def _scored(n=6):
    """Records with teacher scores: positive 10+i, hard negatives 5+i and 4+i (None on record 1's second)."""
    P = lambda i: Passage(f"p{i}", f"text number {i}", f"title {i}")  # noqa: E731
    recs = []
    for i in range(n):
        hard = (P(200 + i), P(300 + i))
        hard_scores = (5.0 + i, None if i == 1 else 4.0 + i)
        recs.append(TrainRecord(f"question {i}", ("a",), (P(i), P(100 + i)) if i == 0 else (P(i),),
                                hard_negatives=hard, positive_scores=(10.0 + i,) + ((9.0,) if i == 0 else ()),
                                hard_negative_scores=hard_scores))
    return recs


def test_teacher_scores_and_gold_ids_travel_with_the_group(tokenizer):
    records = _scored()
    batches = TrainBatches(records, tokenizer, _spec(shuffle=False, hard_negatives=2, random_negatives=1))
    b = batches.batch(0)
    assert b["teacher_scores"].dtype == np.float32 and b["teacher_scores"].shape == (4, 4)
    expected = [[10, 5, 4], [11, 6, np.nan], [12, 7, 6], [13, 8, 7]]
    np.testing.assert_array_equal(b["teacher_scores"][:, :3], np.array(expected, np.float32))
    assert np.all(np.isnan(b["teacher_scores"][:, 3]))  # a random pool negative has no score for this question
    assert b["gold_ids"].dtype == np.int32 and b["gold_ids"].shape == (4, 2)  # record 0 has two positives
    assert b["gold_ids"][0].tolist() == [passage_hash(p) for p in records[0].positives]
    assert b["gold_ids"][1].tolist() == [passage_hash(records[1].positives[0])] * 2  # padded with its positive
    # shuffled negatives keep their own scores
    shuffled = TrainBatches(records, tokenizer, _spec(hard_negatives=2))
    for step in range(3):
        for e in shuffled.examples(step):
            rec = next(r for r in records if r.question == e.question)
            by_id = {p.id: s for p, s in zip(rec.hard_negatives, rec.scores("hard_negatives"))}
            assert [by_id[p.id] for p in e.passages[1:]] == [None if np.isnan(s) else s for s in e.scores[1:]]


def test_teacher_score_gaps_follow_the_sampler(tokenizer):
    records = _scored()
    stats = lambda **kw: TrainBatches(records, tokenizer, _spec(**kw)).stats  # noqa: E731
    assert (stats(hard_negatives=2).no_positive_score, stats(hard_negatives=2).partly_scored) == (0, 1)  # record 1
    assert stats(hard_negatives=1, shuffle=False).partly_scored == 0
    assert stats(hard_negatives=3).partly_scored == 6  # random fallback
    assert stats(hard_negatives=1, random_negatives=1).partly_scored == 6
    assert not stats().placeholder_scores_only and stats().max_positives == 2
    unscored = _records()
    s = TrainBatches(unscored, tokenizer, _spec()).stats
    assert (s.no_positive_score, s.first_no_positive_score) == (len(unscored), unscored[0].source)


def test_record_stats_merged_from_shares_equal_the_whole(tokenizer):
    """What a multi-host run does: statistics per contiguous share, merged in order."""
    from dpr_jax.data.batches import RecordStats

    records = [*_records(5), *_scored(6), *_records(4)]
    records = [dataclasses.replace(r, source=f"f:{i}") for i, r in enumerate(records)]
    for spec in (_spec(), _spec(hard_negatives=1, shuffle=False), _spec(shuffle_positives=True)):
        whole = RecordStats.of(records, spec)
        for cut in ((0, 3, 15), (0, 7, 9, 15), (0, 0, 15)):
            parts = [RecordStats.of(records[a:b], spec) for a, b in zip(cut, cut[1:])]
            assert RecordStats.merge(parts) == whole
    placeholder = [dataclasses.replace(r, positive_scores=(1000.0,) * len(r.positives)) for r in _records(6)]
    assert RecordStats.of(placeholder, _spec()).placeholder_scores_only
    assert RecordStats.merge([RecordStats.of(placeholder[:3], _spec()), RecordStats.of(placeholder[3:], _spec())]
                             ).placeholder_scores_only
