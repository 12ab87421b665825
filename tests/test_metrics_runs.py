"""Metrics on runs whose answers and positives sit at known ranks; run file round trips and errors."""

import json
import random

import pytest

from dpr_jax.data.records import Question
from dpr_jax.errors import InputError
from dpr_jax.eval.metrics import evaluate_run, format_table
from dpr_jax.index.runs import (Hit, RunEntry, attach_passages, read_run, write_dpr_run, write_trec_run)

FILLER = "nothing relevant is said in this passage"


def constructed_run(answer_ranks, positive_ranks, depth=100):
    """Question i has its answer only in the hit at 1-based rank answer_ranks[i] (None: nowhere) and
    its positive ids at positive_ranks[i] (a tuple of ranks, possibly beyond the run's depth)."""
    entries = []
    for i, (ar, pranks) in enumerate(zip(answer_ranks, positive_ranks)):
        hits = [Hit(id=f"q{i}-p{r}", score=float(depth - r),
                    text=f"the answer is zanzibar{i} indeed" if r == ar else FILLER)
                for r in range(1, depth + 1)]
        q = Question(id=f"q{i}", question=f"question {i}?", answers=(f"Zanzibar{i}",),
                     positive_ids=tuple(f"q{i}-p{r}" for r in pranks))
        entries.append(RunEntry(q, hits))
    return entries


def test_metrics_against_known_ranks():
    rng = random.Random(0)
    n = 40
    answer_ranks = [rng.choice([None, 1, 2, 3, 5, 6, 19, 20, 21, 50, 100]) for _ in range(n)]
    positive_ranks = [tuple(rng.sample(range(1, 131), rng.randint(1, 3))) for _ in range(n)]
    positive_ranks[0] = ()  # a question without positive ids: counts for accuracy, not recall/MRR
    m = evaluate_run(constructed_run(answer_ranks, positive_ranks))

    assert m["num_questions"] == n
    assert m["num_with_positive_ids"] == n - 1
    for k in (1, 5, 20, 100):
        expected = sum(1 for r in answer_ranks if r is not None and r <= k) / n
        assert m["top_k_accuracy"][str(k)] == pytest.approx(expected)
        with_pos = [p for p in positive_ranks if p]
        expected_recall = sum(sum(1 for r in p if r <= k) / len(p) for p in with_pos) / len(with_pos)
        assert m["recall"][str(k)] == pytest.approx(expected_recall)
    rr = [1 / min(p) if min(p) <= 10 else 0.0 for p in positive_ranks if p]
    assert m["mrr@10"] == pytest.approx(sum(rr) / len(rr))


def test_mrr_is_reciprocal_rank_of_first_positive():
    for r in (1, 2, 7, 10):
        m = evaluate_run(constructed_run([None], [(r, r + 3)]))
        assert m["mrr@10"] == pytest.approx(1 / r)
    assert evaluate_run(constructed_run([None], [(11,)]))["mrr@10"] == 0.0


def test_stored_has_answer_flag_wins_over_text_and_empty_runs_count_as_misses():
    q = Question("q", "?", answers=("zanzibar",), positive_ids=())
    hits = [Hit("a", 2.0, text="zanzibar", has_answer=False), Hit("b", 1.0, text=FILLER, has_answer=True)]
    m = evaluate_run([RunEntry(q, hits), RunEntry(q, [])], ks=(1, 2))
    assert m["top_k_accuracy"] == {"1": 0.0, "2": 0.5}
    assert m["recall"] is None and m["mrr@10"] is None


def test_regex_match_in_metrics():
    q = Question("q", "?", answers=(r"19[0-9]{2}",))
    entry = RunEntry(q, [Hit("a", 1.0, text="in 1945")])
    assert evaluate_run([entry], ks=(1,), match="regex")["top_k_accuracy"]["1"] == 1.0
    assert evaluate_run([entry], ks=(1,), match="string")["top_k_accuracy"]["1"] == 0.0


def test_format_table():
    m = evaluate_run(constructed_run([1, 6, None, 30], [(2,), (1,), (), (40,)]))
    table = format_table({"BM25": m, "partial": {"top_k_accuracy": {"1": 0.5}, "mrr@10": None}})
    lines = table.splitlines()
    assert lines[0] == "| Method | Top-1 | Top-5 | Top-20 | Top-100 | MRR@10 |"
    assert lines[2] == f"| BM25 | 25.0 | 25.0 | 50.0 | 75.0 | {(0.5 + 1 + 0) / 3:.3f} |"
    assert lines[3] == "| partial | 50.0 | - | - | - | - |"


# ---- run files ---------------------------------------------------------------------------------


def test_dpr_json_round_trip(tmp_path):
    entries = constructed_run([2, None], [(1, 5), ()], depth=5)
    entries[0].hits[0].has_answer = True
    entries[0].hits[0].title = "Zan\u00efbar \"quoted\""
    path = tmp_path / "run.json"
    write_dpr_run(path, entries)
    assert read_run(path) == entries
    data = json.loads(path.read_text())
    assert set(data[0]) == {"id", "question", "answers", "positive_ids", "ctxs"}
    assert set(data[0]["ctxs"][0]) == {"id", "title", "text", "score", "has_answer"}


def test_plain_dpr_output_without_ids_reads(tmp_path):
    path = tmp_path / "dpr.json"
    path.write_text(json.dumps([{"question": "who?", "answers": ["x"],
                                 "ctxs": [{"id": "wiki:1", "title": "t", "text": "x y", "score": "81.5",
                                           "has_answer": True}]}]))
    (entry,) = read_run(path)
    assert entry.question == Question("0", "who?", ("x",), ())
    assert entry.hits == [Hit("wiki:1", 81.5, "t", "x y", True)]


def test_trec_round_trip_and_order_by_score(tmp_path):
    entries = constructed_run([1, 3, None], [(2,), (), (1,)], depth=6)
    path = tmp_path / "run.trec"
    write_trec_run(path, entries, tag="mine")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q0", "Q0", "q0-p1", "1", f"{entries[0].hits[0].score:.6f}", "mine"]
    random.Random(1).shuffle(lines)  # trec_eval does not rely on line order
    path.write_text("\n".join(lines) + "\n")
    questions = [e.question for e in entries] + [Question("q-extra", "no hits?", ("y",))]
    back = read_run(path, questions)
    assert [e.question for e in back] == questions
    for e, b in zip(entries, back):
        assert [h.id for h in b.hits] == [h.id for h in e.hits]
        assert [h.score for h in b.hits] == pytest.approx([h.score for h in e.hits])
    assert back[-1].hits == []
    no_questions = read_run(path)
    assert sorted(e.question.id for e in no_questions) == ["q0", "q1", "q2"]
    assert all(e.question.answers == () for e in no_questions)


@pytest.mark.parametrize("content, where", [
    ("q1 Q0 d1 1 3.0 tag\nq1 Q0 d2 2 x tag\n", ":2:"),
    ("q1 Q0 d1 1 3.0\n", ":1:"),
    ('[{"question": "q", "ctxs": [{"id": "a", "score": "high"}]}]', "'score'"),
    ('[{"question": "q", "ctxs": "none"}]', "'ctxs'"),
    ('[{"ctxs": []}]', "'question'"),
    ('{"question": "q"}', "DPR result"),
    ('[{"question": "q", "ctxs": [}', ":1:"),
    ("", "empty"),
])
def test_malformed_runs_raise_input_error(tmp_path, content, where):
    path = tmp_path / "bad.run"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        read_run(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_trec_run_with_unknown_query_id(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("qX Q0 d1 1 3.0 t\n")
    with pytest.raises(InputError, match="not in the question file"):
        read_run(path, [Question("q1", "?")])


def test_attach_passages_fills_text_and_has_answer(tmp_path):
    passages = tmp_path / "passages.jsonl"
    rows = [{"id": f"p{i}", "title": f"T{i}", "text": f"text {i}" + (" the Denver Broncos" if i == 7 else "")}
            for i in range(50)]
    passages.write_text("".join(json.dumps(r) + "\n" for r in rows))
    q = Question("q", "who won?", answers=("Denver Broncos",))
    entries = [RunEntry(q, [Hit("p3", 2.0), Hit("p7", 1.0, has_answer=False)])]
    (out,) = attach_passages(entries, passages)
    assert [(h.title, h.text, h.has_answer) for h in out.hits] == [
        ("T3", "text 3", False), ("T7", "text 7 the Denver Broncos", True)]
    assert entries[0].hits[0].text == ""  # input not modified
    with pytest.raises(InputError, match="not in this passages file"):
        attach_passages([RunEntry(q, [Hit("p999", 1.0)])], passages)
