"""trec_eval's measures over graded qrels: a hand-checked example, pytrec_eval on a random run, the CLI.

The hand-checked values use trec_eval's definitions (trec_eval 9.0 ``m_*.c``):

* ``ndcg_cut_10``: DCG@10 = sum over ranks i <= 10 of gain(doc_i) / log2(i + 1), gain = the qrels
  grade (0 for unjudged or grade <= 0); divided by the DCG@10 of the ideal ordering of all judged
  grades of the query.
* ``map`` (AP): sum over relevant (grade >= 1) retrieved docs of precision at their rank, divided by
  the number of relevant docs in the qrels (retrieved or not).
* ``recall_100``: relevant docs in the top 100 / relevant docs in the qrels.
* ``recip_rank`` with ``-M 10`` (RR@10): 1 / rank of the first relevant doc in the top 10, else 0.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from dpr_jax.data.questions import read_qrels, read_qrels_grades
from dpr_jax.data.records import Question
from dpr_jax.errors import DprJaxError
from dpr_jax.eval.ir_metrics import evaluate_ir, parse_measures
from dpr_jax.index.runs import Hit, RunEntry, write_trec_run

MEASURES = ["nDCG@10", "MAP", "R@100", "RR@10"]


def entry(qid, ids, scores=None):
    scores = scores or [float(len(ids) - i) for i in range(len(ids))]
    return RunEntry(Question(qid, f"question {qid}"), [Hit(d, s) for d, s in zip(ids, scores)])


def test_hand_checked_graded_example():
    qrels = {
        "a": {"d1": 2, "d2": 1, "d3": 0, "d4": 3},  # d4 (grade 3) is never retrieved
        "b": {"x": 1},
        "c": {"y": 0},  # judged, but nothing relevant: not averaged over (BEIR keeps positives only)
        "e": {"z": 1},  # judged, but the run has no hits for it: counts 0
    }
    # all scores tie: the run's order (d3, d1, d2) is what is measured, not trec_eval's docid tie-break
    entries = [entry("a", ["d3", "d1", "d2", "u9"], [1.0] * 4), entry("b", ["q", "r", "x"]),
               entry("c", ["y"]), entry("e", []), entry("unjudged", ["x"])]
    got = evaluate_ir(entries, qrels, MEASURES)
    assert got["num_judged_questions"] == 3 and got["relevance"] == "graded qrels"

    l2 = math.log2
    ndcg_a = (0 / l2(2) + 2 / l2(3) + 1 / l2(4)) / (3 / l2(2) + 2 / l2(3) + 1 / l2(4))
    ndcg_b = (1 / l2(4)) / (1 / l2(2))
    ap_a = (1 / 2 + 2 / 3) / 3  # d1 at rank 2, d2 at rank 3; 3 relevant (d1, d2, d4)
    ap_b = (1 / 3) / 1
    expected = {"nDCG@10": (ndcg_a + ndcg_b + 0) / 3, "MAP": (ap_a + ap_b + 0) / 3,
                "R@100": (2 / 3 + 1 + 0) / 3, "RR@10": (1 / 2 + 1 / 3 + 0) / 3}
    for name, value in expected.items():
        assert got["measures"][name] == pytest.approx(value, abs=1e-4), name  # trec_eval prints 4 decimals


def test_rr_at_10_stops_at_rank_10_and_other_cutoffs():
    ids = [f"d{i}" for i in range(1, 21)]
    qrels = {"q": {"d11": 1, "d12": 2}}
    got = evaluate_ir([entry("q", ids)], qrels, ["RR@10", "RR", "R@10", "R@20", "P@20", "nDCG@20"])["measures"]
    assert got["RR@10"] == 0.0 and got["RR"] == pytest.approx(1 / 11)
    assert got["R@10"] == 0.0 and got["R@20"] == 1.0 and got["P@20"] == pytest.approx(2 / 20)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["nDCG@20"] == pytest.approx((1 / math.log2(12) + 2 / math.log2(13)) / ideal)


def test_random_run_matches_pytrec_eval():
    """100 queries, graded qrels (0-3), 150-deep runs with tied scores: the same numbers as pytrec_eval
    run directly (trec_eval -c: judged queries without hits count 0; recip_rank on the top 10)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(0)
    docs = [f"p{i}" for i in range(400)]
    qrels, entries = {}, []
    for q in range(100):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 12))}
        ranked = rng.sample(docs, 150) if q % 17 else []  # some judged queries without hits
        entries.append(entry(qid, ranked, [float(round(150 - i, -1)) for i in range(len(ranked))]))
    got = evaluate_ir(entries, qrels, MEASURES)

    judged = [q for q, j in qrels.items() if any(g > 0 for g in j.values())]
    run = {e.question.id: {h.id: float(len(e.hits) - i) for i, h in enumerate(e.hits)} for e in entries if e.hits}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "map", "recall_100"}).evaluate(run)
    top10 = {q: dict(list(d.items())[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

    def mean(values, key):
        return sum(values.get(q, {}).get(key, 0.0) for q in judged) / len(judged)

    assert got["num_judged_questions"] == len(judged) < 100
    assert got["measures"]["nDCG@10"] == pytest.approx(mean(full, "ndcg_cut_10"), rel=1e-12)
    assert got["measures"]["MAP"] == pytest.approx(mean(full, "map"), rel=1e-12)
    assert got["measures"]["R@100"] == pytest.approx(mean(full, "recall_100"), rel=1e-12)
    assert got["measures"]["RR@10"] == pytest.approx(mean(rr, "recip_rank"), rel=1e-12)
    assert 0 < got["measures"]["nDCG@10"] < 1


def test_binary_relevance_from_positive_ids_and_bad_input():
    q = Question("q", "?", positive_ids=("b",))
    got = evaluate_ir([RunEntry(q, [Hit("a", 2.0), Hit("b", 1.0)])], None, ["RR@10", "nDCG@10"])
    assert got["relevance"] == "binary (positive_ids)"
    assert got["measures"]["RR@10"] == 0.5 and got["measures"]["nDCG@10"] == pytest.approx(1 / math.log2(3))
    with pytest.raises(DprJaxError, match="not an integer"):
        evaluate_ir([RunEntry(q, [])], {"q": {"b": 0.5}}, ["MAP"], source="qrels.tsv")
    with pytest.raises(DprJaxError, match="appears twice"):
        evaluate_ir([RunEntry(q, []), RunEntry(q, [])], None, ["MAP"])
    with pytest.raises(DprJaxError, match="unknown IR measure 'nDGC@10'"):
        parse_measures("nDGC@10")
    with pytest.raises(DprJaxError, match="same"):
        parse_measures("MAP,AP")
    assert parse_measures(" nDCG@10, MAP ,P@5") == ["nDCG@10", "MAP", "P@5"]


def test_qrels_grades_are_read_whole(tmp_path, caplog):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\nq2\td3\t3\nq3\td9\t0\n")
    with caplog.at_level("WARNING"):
        grades = read_qrels_grades(path)
    assert grades == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 3}, "q3": {"d9": 0}}
    assert "1 judgement(s) repeated with another grade" in caplog.text
    assert read_qrels(path) == {"q1": ("d1",), "q2": ("d3",)}  # q3 has no positive


def test_evaluate_cli_with_graded_qrels(tmp_path, capsys):
    from dpr_jax.cli import main

    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("a", "b", "c", "u")))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\na\td1\t2\na\td2\t1\na\td3\t0\na\td4\t3\nb\tx\t1\nc\ty\t0\n")
    entries = [entry("a", ["d3", "d1", "d2", "u9"]), entry("b", ["q", "r", "x"]), entry("c", ["y"]),
               entry("u", ["x"])]
    run = tmp_path / "run.trec"
    write_trec_run(run, entries)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(run), "--questions", str(queries), "--qrels", str(qrels),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| nDCG@10 | MAP | R@100 | RR@10 |" in text and "2 judged questions" in text
    saved = json.loads(out.read_text())
    grades = {"a": {"d1": 2, "d2": 1, "d3": 0, "d4": 3}, "b": {"x": 1}}
    expected = evaluate_ir(entries[:2], grades, MEASURES)["measures"]
    assert saved["ir_measures"]["measures"] == pytest.approx(expected)
    assert saved["top_k_accuracy"] is None  # BEIR queries have no answers: no accuracy, not 0
    assert saved["num_questions"] == 2 and saved["recall"]["100"] == pytest.approx((2 / 3 + 1) / 2)
    row = next(line for line in text.splitlines() if line.startswith("| run.trec"))
    assert f"{expected['nDCG@10']:.4f}" in row and row.count(" - ") == 4  # no top-k accuracy columns

    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels)]) == 2
    assert "--qrels needs --questions" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--questions", str(queries), "--qrels", str(qrels),
                 "--measures", "nDCG@10,bogus"]) == 2
    assert "unknown IR measure 'bogus'" in capsys.readouterr().err
