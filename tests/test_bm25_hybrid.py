"""BM25Index against bm25s used directly on real SQuAD paragraphs, its on-disk cache, and hybrid
fusion against a NumPy implementation of pyserini's formula."""

import json
import os

import numpy as np
import pytest

from dpr_jax.data.records import Question
from dpr_jax.errors import DprJaxError
from dpr_jax.index.bm25 import BM25Index, open_or_build
from dpr_jax.index.hybrid import fuse, fuse_hits
from dpr_jax.index.runs import Hit, RunEntry


@pytest.fixture(scope="module")
def squad_sample(squad_dev_file, tmp_path_factory):
    """48 real SQuAD dev paragraphs (8 from each of 6 articles) as passages.jsonl, one question each."""
    data = json.loads(squad_dev_file.read_text())["data"]
    rows, questions = [], []
    for article in data[:6]:
        for j, para in enumerate(article["paragraphs"][:8]):
            pid = f"{article['title']}-{j}"
            rows.append({"id": pid, "title": article["title"].replace("_", " "), "text": para["context"]})
            questions.append(para["qas"][0]["question"])
    path = tmp_path_factory.mktemp("bm25") / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows, questions


def bm25s_reference(rows, queries, k, k1=0.9):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=k1, b=0.4, method="lucene")
    ref.index(bm25s.tokenize([f"{r['title']} {r['text']}" for r in rows], stopwords="en", stemmer=stemmer,
                             show_progress=False), show_progress=False)
    docs, scores = ref.retrieve(bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
                                k=k, show_progress=False)
    return [[rows[j]["id"] for j in row] for row in docs], scores


def test_bm25_matches_bm25s_directly(squad_sample):
    path, rows, questions = squad_sample
    index = BM25Index.build(path, show_progress=False)
    ids, scores = index.search(questions, 10, show_progress=False)
    ref_ids, ref_scores = bm25s_reference(rows, questions, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    assert ids == ref_ids
    # sanity: for most questions the paragraph it was asked about is BM25's first hit
    own = sum(ids[i][0] == rows[i]["id"] for i in range(len(rows))) / len(rows)
    assert own > 0.6


def test_k_larger_than_corpus_and_save_load(squad_sample, tmp_path):
    path, rows, questions = squad_sample
    index = BM25Index.build(path, show_progress=False)
    ids, scores = index.search(questions[:3], 1000, show_progress=False)
    assert scores.shape == (3, len(rows))
    assert all(sorted(r) == sorted(x["id"] for x in rows) for r in ids)
    assert np.all(np.diff(scores, axis=1) <= 0)
    index.save(tmp_path / "idx")
    loaded = BM25Index.load(tmp_path / "idx")
    ids2, scores2 = loaded.search(questions, 5, show_progress=False)
    ids1, scores1 = index.search(questions, 5, show_progress=False)
    assert ids2 == ids1
    np.testing.assert_array_equal(scores2, scores1)
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary directories left behind


def test_cache_reused_and_invalidated(squad_sample, tmp_path):
    _, rows, questions = squad_sample
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    cache = tmp_path / "passages.jsonl.bm25"
    open_or_build(path, show_progress=False)  # default cache location
    assert (cache / "meta.json").is_file()
    sentinel = cache / "sentinel"
    sentinel.write_text("x")

    index = open_or_build(path, show_progress=False)
    assert sentinel.exists(), "an up-to-date cache must be loaded, not rebuilt"
    assert len(index) == 20

    open_or_build(path, k1=1.2, show_progress=False)  # other settings: rebuilt
    assert not sentinel.exists()
    assert json.loads((cache / "meta.json").read_text())["settings"]["k1"] == 1.2

    sentinel.write_text("x")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))  # corpus changed: rebuilt
    index = open_or_build(path, k1=1.2, show_progress=False)
    assert not sentinel.exists()
    assert len(index) == 30
    ids, scores = index.search(questions[:30], 5, show_progress=False)
    ref_ids, ref_scores = bm25s_reference(rows[:30], questions[:30], 5, k1=1.2)
    assert ids == ref_ids
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    _, default_scores = bm25s_reference(rows[:30], questions[:30], 5)
    assert not np.allclose(scores, default_scores)  # k1 really changed the index


def test_build_hands_bm25s_compact_token_ids(squad_sample, monkeypatch):
    """Token ids are held as 4 bytes per token (+8 per passage), not a Python list per passage; bm25s
    sees the same ids either way (the scores equal bm25s's own in the test above)."""
    import bm25s

    path, rows, _ = squad_sample
    seen = []
    real_index = bm25s.BM25.index

    def spy(self, corpus, *args, **kwargs):
        seen.append(corpus.ids)
        return real_index(self, corpus, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", spy)
    BM25Index.build(path, show_progress=False)
    [ids] = seen
    lists = list(ids)
    assert len(ids) == len(lists) == len(rows) and ids[5] == lists[5] and ids[-1] == lists[-1]
    assert all(isinstance(doc, list) and all(isinstance(t, int) for t in doc) for doc in lists)
    assert ids.nbytes() == 4 * sum(map(len, lists)) + 8 * len(rows)


def test_a_huge_passage_is_cut_before_tokenising(tmp_path):
    from dpr_jax.index.bm25 import MAX_PASSAGE_CHARS

    filler = "lorem " * (MAX_PASSAGE_CHARS // 6)
    rows = [{"id": "early", "text": "zyzzyva " + filler}, {"id": "late", "text": filler + " xylophonist"},
            {"id": "other", "text": "nothing to see here"}]
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = BM25Index.build(path, show_progress=False)
    ids, scores = index.search(["zyzzyva", "xylophonist"], 1, show_progress=False)
    assert ids[0] == ["early"] and scores[0][0] > 0
    assert scores[1][0] == 0  # the word after the cut was never indexed


# ---- hybrid ------------------------------------------------------------------------------------


def numpy_fusion(dense, sparse, alpha, normalization, weight_on_dense, k):
    """pyserini's HybridSearcher._hybrid_results, written with NumPy arrays over the id union."""
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in sparse]))
    d = dict(dense)
    s = dict(sparse)
    dv = np.array([d.get(i, np.nan) for i in ids])
    sv = np.array([s.get(i, np.nan) for i in ids])
    d_min, d_max = np.nanmin(dv), np.nanmax(dv)
    s_min, s_max = np.nanmin(sv), np.nanmax(sv)
    dv = np.where(np.isnan(dv), d_min, dv)
    sv = np.where(np.isnan(sv), s_min, sv)
    if normalization:
        dv = (dv - (d_min + d_max) / 2) / (d_max - d_min)
        sv = (sv - (s_min + s_max) / 2) / (s_max - s_min)
    fused = sv + alpha * dv if weight_on_dense else alpha * sv + dv
    order = np.argsort(-fused, kind="stable")[:k]
    return [ids[j] for j in order], fused[order]


@pytest.mark.parametrize("normalization", [True, False])
@pytest.mark.parametrize("weight_on_dense", [False, True])
def test_fuse_matches_numpy_formula(normalization, weight_on_dense):
    rng = np.random.default_rng(0)
    for trial in range(20):
        pool = [f"d{j}" for j in range(60)]
        dense_ids = rng.choice(pool, size=25, replace=False)
        sparse_ids = rng.choice(pool, size=25, replace=False)
        dense = sorted(zip(dense_ids, rng.normal(70, 5, 25)), key=lambda x: -x[1])
        sparse = sorted(zip(sparse_ids, rng.gamma(3, 4, 25)), key=lambda x: -x[1])
        alpha = float(rng.uniform(0.05, 2.0))
        exp_ids, exp_scores = numpy_fusion(dense, sparse, alpha, normalization, weight_on_dense, k=30)
        got = fuse_hits([Hit(i, float(x)) for i, x in dense], [Hit(i, float(x)) for i, x in sparse], alpha=alpha,
                        normalization=normalization, weight_on_dense=weight_on_dense, k=30)
        assert [h.id for h in got] == exp_ids
        np.testing.assert_allclose([h.score for h in got], exp_scores, rtol=1e-12, atol=1e-12)


def test_fuse_runs_keeps_texts_and_checks_questions():
    q1, q2 = Question("1", "who?", ("x",)), Question("2", "what?", ("y",))
    dense = [RunEntry(q1, [Hit("a", 0.9, text="ta", has_answer=True), Hit("b", 0.5)]),
             RunEntry(q2, [Hit("c", 0.2), Hit("d", 0.1)])]
    sparse = [RunEntry(Question("1", "who?"), [Hit("b", 12.0, text="tb"), Hit("e", 3.0, text="te")]),
              RunEntry(Question("2", "what?"), [Hit("d", 9.0, text="td")])]
    fused = fuse(dense, sparse, alpha=1.0)
    assert fused[0].question == q1
    hits = {h.id: h for h in fused[0].hits}
    assert set(hits) == {"a", "b", "e"}
    assert (hits["a"].text, hits["a"].has_answer, hits["b"].text, hits["e"].text) == ("ta", True, "tb", "te")
    # second question: a single sparse hit (max == min) normalises to 0 instead of dividing by zero
    assert [h.id for h in fused[1].hits] == ["c", "d"]
    with pytest.raises(DprJaxError, match="question #1 differs"):
        fuse(dense, [sparse[0], RunEntry(Question("3", "other?"), [])])
    with pytest.raises(DprJaxError, match="2 questions"):
        fuse(dense, sparse[:1])
