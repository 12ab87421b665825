"""`dpr-jax data pseudo-queries`: spans from their passage, sentence removal, BM25 labels, trainer-readable.

The corpus is real text (SQuAD dev paragraphs of a few articles); BM25 labels are checked against a
direct search of the same corpus with :class:`dpr_jax.index.bm25.BM25Index`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpr_jax.cli import main
from dpr_jax.data.passages import read_passages
from dpr_jax.data.pseudo_queries import (PseudoQuerySpec, queries_of, ranked_records, sample_pseudo_queries,
                                         source_records, split_sentences)
from dpr_jax.data.records import Passage
from dpr_jax.errors import DprJaxError


@pytest.fixture(scope="module")
def corpus(squad_dev_file, tmp_path_factory):
    """passages.jsonl of 4 SQuAD articles (~150 paragraphs) and held-out passages of one more."""
    from dpr_jax.data.squad import load_squad, passage_id

    articles = load_squad(squad_dev_file)[:5]
    rows = [{"id": passage_id(a["title"], i), "title": a["title"].replace("_", " "), "text": p["context"]}
            for a in articles for i, p in enumerate(a["paragraphs"])]
    d = tmp_path_factory.mktemp("pq")
    path = d / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    excluded = d / "excluded.jsonl"
    excluded.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"].startswith(articles[4]["title"] + "#")),
                        encoding="utf-8")
    return path, excluded


def _words_within(needle: str, haystack: str) -> bool:
    """``needle``'s words form a contiguous run of ``haystack``'s words."""
    n, h = needle.split(), haystack.split()
    return any(h[i:i + len(n)] == n for i in range(len(h) - len(n) + 1))


def test_sentences_split_after_end_punctuation():
    assert split_sentences('It rained. "Why?" he asked! Then (at 5 p.m.) it stopped.') == \
        ['It rained.', '"Why?"', 'he asked!', 'Then (at 5 p.m.)', 'it stopped.']


def test_spans_are_word_runs_of_one_sentence_of_their_passage(corpus):
    passages = list(read_passages(corpus[0]))
    spec = PseudoQuerySpec(unit="span", min_words=6, max_words=14, seed=3)
    queries = sample_pseudo_queries(passages, spec)
    assert len(queries) > len(passages)  # one per eligible sentence
    for q in queries:
        n = len(q.query.split())
        assert 6 <= n <= max(14, n if any(q.query == s for s in split_sentences(q.source.text)) else 14)
        assert n <= 14 or q.query in split_sentences(q.source.text)  # a shorter-than-n sentence is kept whole
        assert any(_words_within(q.query, s) for s in split_sentences(q.source.text))
        assert q.context == q.source and not q.removed


def test_sentence_removal_cuts_exactly_the_query_sentence(corpus):
    passages = [p for p in read_passages(corpus[0]) if len(split_sentences(p.text)) > 1][:40]
    queries = sample_pseudo_queries(passages, PseudoQuerySpec(unit="sentence", remove_sentence=1.0))
    assert queries and all(q.removed for q in queries)
    for q in queries:
        sentences = split_sentences(q.source.text)
        assert q.query in sentences
        assert q.context.text == " ".join(s for s in sentences if s != q.query) or sentences.count(q.query) > 1
        assert q.context.id == q.source.id and q.context.title == q.source.title
    kept = sample_pseudo_queries(passages, PseudoQuerySpec(unit="sentence", remove_sentence=0.0))
    assert all(q.context == q.source for q in kept)
    # ICT's 0.9: some sentences stay (deterministically)
    mixed = sample_pseudo_queries(passages, PseudoQuerySpec(unit="sentence", remove_sentence=0.5, seed=1))
    assert 0 < sum(q.removed for q in mixed) < len(mixed)
    record = source_records(queries[:1])[0]
    assert record.positives == (queries[0].context,) and not record.hard_negatives


def test_crops_are_two_word_runs_of_the_passage(corpus):
    passages = list(read_passages(corpus[0]))[:30]
    queries = sample_pseudo_queries(passages, PseudoQuerySpec(unit="crop", crop_ratio=(0.1, 0.5), min_words=5))
    assert len(queries) == 2 * len(passages)
    for q in queries:
        assert _words_within(q.query, q.source.text) and _words_within(q.context.text, q.source.text)
        assert q.context.id == q.source.id
        assert 5 <= len(q.query.split()) <= 0.5 * len(q.source.text.split()) + 1


def test_sampling_is_seeded_and_per_passage(corpus):
    passages = list(read_passages(corpus[0]))
    spec = PseudoQuerySpec(unit="span", per_passage=2, seed=7)
    a = sample_pseudo_queries(passages, spec)
    assert a == sample_pseudo_queries(passages, spec)
    # a passage's queries do not depend on the order or the company it is read in
    reversed_queries = sample_pseudo_queries(passages[::-1], spec)
    assert sorted((q.source.id, q.query) for q in a) == sorted((q.source.id, q.query) for q in reversed_queries)
    assert queries_of(passages[5], spec) == [q for q in a if q.source.id == passages[5].id]
    other = sample_pseudo_queries(passages, PseudoQuerySpec(unit="span", per_passage=2, seed=8))
    assert [q.query for q in other] != [q.query for q in a]


def test_bad_specs_are_clear_errors():
    with pytest.raises(DprJaxError, match="unit"):
        PseudoQuerySpec(unit="paragraph")
    with pytest.raises(DprJaxError, match="removal"):
        PseudoQuerySpec(unit="crop", remove_sentence=0.5)
    with pytest.raises(DprJaxError, match="positives < negatives-from"):
        ranked_records([], [], [], {}, positives=3, negatives_from=2, depth=10)


def test_cli_bm25_labels_equal_a_direct_bm25_search(corpus, tmp_path):
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.index.bm25 import BM25Index

    passages_path, excluded_path = corpus
    out = tmp_path / "pseudo.jsonl"
    args = ["data", "pseudo-queries", "--passages", str(passages_path), "--out", str(out), "--unit", "span",
            "--label", "bm25", "--positives", "2", "--negatives-from", "4", "--depth", "12", "--per-passage", "1",
            "--exclude", str(excluded_path), "--seed", "5", "--index-dir", str(tmp_path / "bm25")]
    assert main(args) == 0
    records, problems = read_training_records(out)
    assert not problems and len(records) > 100
    excluded = {p.id for p in read_passages(excluded_path)}
    index = BM25Index.build(passages_path, show_progress=False)
    ids, scores = index.search([r.question for r in records], len(index), show_progress=False)
    for r, row_ids, row_scores in zip(records, ids, scores):
        ranked = [(pid, s) for pid, s in zip(row_ids, row_scores) if s > 0 and pid not in excluded][:12]
        assert [p.id for p in r.positives] == [pid for pid, _ in ranked[:2]]
        assert [p.id for p in r.hard_negatives] == [pid for pid, _ in ranked[3:]]
        np.testing.assert_allclose(r.positive_scores + r.hard_negative_scores, [s for _, s in ranked[:2] + ranked[3:]],
                                   rtol=1e-5)
        assert not excluded & {p.id for p in r.positives + r.hard_negatives}
    # no query was drawn from an excluded passage: every query's words are in some kept passage
    kept_texts = [p.text for p in read_passages(passages_path) if p.id not in excluded]
    assert all(any(_words_within(r.question, t) for t in kept_texts) for r in records[:50])
    # deterministic: the same command writes the same file
    again = tmp_path / "again.jsonl"
    assert main(args[:5] + [str(again)] + args[6:]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_cli_records_feed_the_trainer_with_teacher_scores(corpus, tmp_path, minilm_dir):
    from dpr_jax.data.batches import BatchSpec, TrainBatches
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.models.tokenizer import TextTokenizer

    out = tmp_path / "pseudo.jsonl"
    assert main(["data", "pseudo-queries", "--passages", str(corpus[0]), "--out", str(out), "--per-passage", "1",
                 "--max-queries", "40", "--depth", "10", "--index-dir", str(tmp_path / "bm25")]) == 0
    records, _ = read_training_records(out)
    assert len(records) == 40
    batches = TrainBatches(records, TextTokenizer.from_dir(minilm_dir),
                           BatchSpec(global_batch_size=8, question_max_length=16, passage_max_length=64,
                                     hard_negatives=3))
    batch = batches.batch(0)
    assert batch["passages"]["input_ids"].shape == (8, 4, 64)
    assert np.isfinite(batch["teacher_scores"]).all()  # BM25 scored every positive and negative
    assert (batch["teacher_scores"][:, 0] >= batch["teacher_scores"][:, 1:].max(axis=1)).all()
    assert batches.stats.no_positive_score == 0 and batches.stats.partly_scored == 0


def test_cli_refuses_removal_with_bm25_labels(corpus, tmp_path, capsys):
    code = main(["data", "pseudo-queries", "--passages", str(corpus[0]), "--out", str(tmp_path / "x.jsonl"),
                 "--remove-sentence", "0.9"])
    assert code == 2
    assert "--label source" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_labels_given_questions_with_bm25(corpus, tmp_path):
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.index.bm25 import BM25Index

    questions = tmp_path / "q.jsonl"
    texts = ["Who won Super Bowl 50?", "Which team did the Broncos defeat?", "zzzz qqqq"]
    questions.write_text("".join(json.dumps({"question": t, "answers": ["x"]}) + "\n" for t in texts))
    out = tmp_path / "labelled.jsonl"
    assert main(["data", "pseudo-queries", "--passages", str(corpus[0]), "--questions", str(questions),
                 "--out", str(out), "--depth", "8", "--index-dir", str(tmp_path / "bm25")]) == 0
    records, _ = read_training_records(out)
    assert [r.question for r in records] == texts[:2]  # no BM25 match for the third: dropped
    ids, scores = BM25Index.build(corpus[0], show_progress=False).search(texts[:2], 8, show_progress=False)
    for r, row, row_scores in zip(records, ids, scores):
        assert [p.id for p in r.positives + r.hard_negatives] == [row[0], *row[3:8]]
        np.testing.assert_allclose(r.positive_scores + r.hard_negative_scores, [row_scores[0], *row_scores[3:8]],
                                   rtol=1e-5)
