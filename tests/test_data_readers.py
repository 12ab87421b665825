"""Readers for passages, questions, qrels and DPR training records: formats, located errors, CLI."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dpr_jax.cli import main as cli_main
from dpr_jax.data.passages import detect_passage_format, load_passages, read_passages
from dpr_jax.data.questions import detect_question_format, read_qrels, read_questions
from dpr_jax.data.records import Passage, Question, TrainRecord
from dpr_jax.data.textfiles import count_lines, iter_json_records
from dpr_jax.data.training_data import read_training_records, write_training_records
from dpr_jax.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------- passages

def test_dpr_tsv_with_quoted_fields_matches_dpr_csv_reading(tmp_path):
    # DPR psgs_w100.tsv: header, csv quoting with "" escapes; a quoted field may even contain a newline.
    f = write(tmp_path / "psgs.tsv",
              'id\ttext\ttitle\n'
              '1\t"Aaron is a ""prophet"" in the Bible"\tAaron\n'
              '2\tplain text, with comma\tAaron\n'
              '3\t"two\nlines"\tMoses\n'
              '4\tafter the multi-line record\tMoses\n')
    got = list(read_passages(f))
    assert detect_passage_format(f) == "tsv"
    assert got == [Passage("1", 'Aaron is a "prophet" in the Bible', "Aaron"),
                   Passage("2", "plain text, with comma", "Aaron"),
                   Passage("3", "two\nlines", "Moses"),
                   Passage("4", "after the multi-line record", "Moses")]
    # line numbers account for the multi-line quoted field: record "4" starts on line 6
    bad = write(tmp_path / "bad.tsv", f.read_text() + "5\tonly two columns\n")
    with pytest.raises(InputError) as e:
        list(read_passages(bad))
    assert str(e.value).startswith(f"{bad}:7: expected 3 tab-separated columns")


def test_tsv_header_may_reorder_columns_and_no_header_defaults_to_dpr_order(tmp_path):
    f = write(tmp_path / "c.tsv", "title\tid\ttext\nT\tx1\tsome text\n")
    assert list(read_passages(f)) == [Passage("x1", "some text", "T")]
    g = write(tmp_path / "d.tsv", "x1\tsome text\tT\n")
    assert list(read_passages(g)) == [Passage("x1", "some text", "T")]


def test_jsonl_and_beir_corpus_and_gzip(tmp_path):
    rows = [{"id": "a", "title": "A", "text": "alpha"}, {"id": 7, "text": "no title"}]
    f = jsonl(tmp_path / "c.jsonl", rows)
    assert list(read_passages(f)) == [Passage("a", "alpha", "A"), Passage("7", "no title", "")]
    beir = jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x", "metadata": {}},
                                             {"_id": "d2", "title": "Only a title", "text": ""}])
    assert detect_passage_format(beir) == "beir"
    assert list(read_passages(beir)) == [Passage("d1", "x", "T"), Passage("d2", "", "Only a title")]
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as out:
        out.write(f.read_text())
    assert list(read_passages(gz)) == list(read_passages(f))
    assert count_lines(gz) == 2
    assert load_passages(f)["a"].text == "alpha"


def test_read_passages_streams(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, "not an object"])
    it = read_passages(f)
    assert next(it) == Passage("a", "x")  # first record available before the bad second line is read
    with pytest.raises(InputError, match=r"c\.jsonl:2: expected a JSON object"):
        next(it)


def test_count_lines_counts_last_line_without_newline(tmp_path):
    assert count_lines(write(tmp_path / "a.txt", "1\n2\n3")) == 3
    assert count_lines(write(tmp_path / "b.txt", "1\n2\n3\n")) == 3
    assert count_lines(write(tmp_path / "c.txt", "")) == 0


@pytest.mark.parametrize("line, message", [
    ('{"id": "b", "text": "x"', r":2: malformed JSON"),
    ('{"text": "x"}', r":2: field 'id': missing or empty passage id"),
    ('{"id": "  ", "text": "x"}', r":2: field 'id': missing or empty passage id"),
    ('{"id": "b"}', r":2: field 'text': missing passage text"),
    ('{"id": "b", "text": 3}', r":2: field 'text': must be a string"),
    ('{"id": "b", "text": "", "title": ""}', r":2: field 'text': empty passage"),
    ('{"id": "a", "text": "again"}', r":2: field 'id': duplicate passage id 'a'"),
])
def test_passage_errors_name_file_line_and_field(tmp_path, line, message):
    f = write(tmp_path / "c.jsonl", '{"id": "a", "text": "ok"}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"^{tmp_path}/c\.jsonl{message}"):
        list(read_passages(f, fmt="jsonl"))


def test_beir_corpus_requires_underscore_id(tmp_path):
    f = jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "x"}, {"id": "d2", "text": "y"}])
    with pytest.raises(InputError, match=r":2: field '_id': missing"):
        list(read_passages(f))


def test_passage_problems_collected_instead_of_raised(tmp_path):
    f = write(tmp_path / "c.tsv", "id\ttext\ttitle\n1\tx\tT\n2\ty\n1\tz\tT\n3\tw\tT\n")
    problems = []
    got = list(read_passages(f, problems=problems))
    assert [p.id for p in got] == ["1", "3"]
    assert [p.source for p in problems] == [f"{f}:3", f"{f}:4"]
    assert "duplicate passage id '1'" in problems[1].reason


def test_missing_file_and_bad_utf8(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        list(read_passages(tmp_path / "nope.jsonl"))
    f = tmp_path / "c.jsonl"
    f.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: not UTF-8"):
        list(read_passages(f))


# ---------------------------------------------------------------------------------------- questions

def test_questions_jsonl_default_ids_and_fields(tmp_path):
    f = jsonl(tmp_path / "q.jsonl", [
        {"question": "who?", "answers": ["Ann", "Anne"]},
        {"id": "q9", "question": "where?", "answers": [], "positive_ids": ["p1", 2, "p1"]},
        {"question": "when?", "answers": [1945]},
    ])
    assert detect_question_format(f) == "jsonl"
    assert read_questions(f) == [Question("0", "who?", ("Ann", "Anne"), ()),
                                 Question("q9", "where?", (), ("p1", "2")),
                                 Question("2", "when?", ("1945",), ())]


def test_dpr_qa_tsv_with_tricky_answer_lists(tmp_path):
    # JSON lists, Python-literal lists with mixed quotes (DPR's files use str(list)), a csv-quoted question
    f = write(tmp_path / "nq-test.qa.csv",
              'who wrote "hamlet"?\t["William Shakespeare"]\n'
              "who is o'neil\t[\"Shaquille O'Neal\", 'say \"hi\"', 'tab\\tin it']\n"
              '"a ""quoted"" question"\t[\'1, 2, 3\', "x"]\n')
    qs = read_questions(f)
    assert detect_question_format(f) == "tsv"
    assert [q.id for q in qs] == ["0", "1", "2"]
    assert qs[0] == Question("0", 'who wrote "hamlet"?', ("William Shakespeare",))
    assert qs[1].answers == ("Shaquille O'Neal", 'say "hi"', "tab\tin it")
    assert qs[2].question == 'a "quoted" question' and qs[2].answers == ("1, 2, 3", "x")


@pytest.mark.parametrize("line, message", [
    ("q\t__import__('os').system('echo hi')", r":2: field 'answers': not a JSON or Python list"),
    ("q\t{'a': 1}", r":2: field 'answers': must be a list of strings"),
    ("q\t[['nested']]", r":2: field 'answers\[0\]': must be a string"),
    ("q only", r":2: expected 2 tab-separated columns"),
    ("\t['a']", r":2: field 'question': empty question"),
])
def test_dpr_qa_tsv_errors(tmp_path, line, message):
    f = write(tmp_path / "qa.tsv", "ok\t['a']\n" + line + "\n")
    with pytest.raises(InputError, match=rf"^{tmp_path}/qa\.tsv{message}"):
        read_questions(f)


def test_beir_queries_with_qrels(tmp_path, caplog):
    queries = jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"},
                                                 {"_id": "q3", "text": "not judged"}])
    qrels = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n"
                                         "q2\td1\t1\nq2\td3\t1\nq9\td1\t1\n")
    assert detect_question_format(queries) == "beir"
    assert read_qrels(qrels) == {"q1": ("d1",), "q2": ("d3", "d1"), "q9": ("d1",)}
    with caplog.at_level(logging.INFO):
        qs = read_questions(queries, qrels=qrels)
    # score 0 is not a positive; unjudged q3 is left out as in BEIR; q9 is unknown (warned)
    assert qs == [Question("q1", "first", (), ("d1",)), Question("q2", "second", (), ("d3", "d1"))]
    assert "1 of 3 questions have no positive" in caplog.text
    assert "1 query id(s) in the qrels are not among the questions" in caplog.text
    no_header = write(tmp_path / "nh.tsv", "q1\td5\t1\n")
    assert read_qrels(no_header) == {"q1": ("d5",)}
    bad = write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tone\n")
    with pytest.raises(InputError, match=r"bad\.tsv:2: field 'score': score 'one' is not a number"):
        read_qrels(bad)


def test_questions_from_dpr_retriever_json(tmp_path):
    f = write(tmp_path / "nq-dev.json", json.dumps([
        {"question": "q a", "answers": ["x"], "positive_ctxs": [{"title": "t", "text": "x", "passage_id": "11"},
                                                                {"title": "t", "text": "y", "psg_id": 12}]},
        {"question": "q b", "answers": ["y"], "positive_ctxs": [{"title": "t", "text": "y", "id": "wiki:3"}]},
    ], indent=1))
    assert detect_question_format(f) == "dpr"
    assert read_questions(f) == [Question("0", "q a", ("x",), ("11", "12")),
                                 Question("1", "q b", ("y",), ("wiki:3",))]


@pytest.mark.parametrize("row, message", [
    ({"answers": ["a"]}, r":2: field 'question': missing"),
    ({"question": "  "}, r":2: field 'question': empty"),
    ({"question": "q", "answers": "a"}, r":2: field 'answers': must be a list of strings"),
    ({"question": "q", "positive_ids": "p"}, r":2: field 'positive_ids': must be a list of ids"),
    ({"id": "x", "question": "q"}, r":2: field 'id': duplicate question id 'x' \(first on line 1\)"),
])
def test_question_jsonl_errors(tmp_path, row, message):
    f = jsonl(tmp_path / "q.jsonl", [{"id": "x", "question": "ok"}, row])
    with pytest.raises(InputError, match=rf"^{tmp_path}/q\.jsonl{message}"):
        read_questions(f, fmt="jsonl")


# ---------------------------------------------------------------------------------- training records

def _rec(q="q", pos=True, **kw):
    r = {"question": q, "answers": ["a"],
         "positive_ctxs": [{"title": "T", "text": "gold", "passage_id": "1", "score": 3.2}] if pos else [],
         "negative_ctxs": [{"title": "N", "text": "neg", "id": "2"}],
         "hard_negative_ctxs": [{"title": "H", "text": "hard", "psg_id": 3}]}
    r.update(kw)
    return r


def test_training_json_array_line_numbers_and_fields(tmp_path):
    # a pretty-printed JSON array (like DPR's biencoder-nq-train.json): each record spans many lines
    f = write(tmp_path / "train.json", json.dumps([_rec("q1"), _rec("q2"), _rec("q3")], indent=2))
    starts = [i + 1 for i, line in enumerate(f.read_text().splitlines()) if line == "  {"]
    records, problems = read_training_records(f)
    assert problems == []
    assert [r.source for r in records] == [f"{f}:{n}" for n in starts] and len(starts) == 3
    assert records[0] == TrainRecord("q1", ("a",), (Passage("1", "gold", "T"),), (Passage("2", "neg", "N"),),
                                     (Passage("3", "hard", "H"),), source=f"{f}:{starts[0]}", positive_scores=(3.2,))


def test_json_array_edge_cases(tmp_path):
    assert list(iter_json_records(write(tmp_path / "e.json", " [ ] \n"))) == []
    assert list(iter_json_records(write(tmp_path / "o.json", '[{"a": 1},\n\n {"b": 2}]'))) == [
        (1, {"a": 1}), (3, {"b": 2})]
    with pytest.raises(InputError, match=r"t\.json:2: malformed JSON array: expected ',' or ']'"):
        list(iter_json_records(write(tmp_path / "t.json", '[{"a": 1}\n {"b": 2}]')))
    with pytest.raises(InputError, match=r"u\.json:3: malformed JSON"):
        list(iter_json_records(write(tmp_path / "u.json", '[{"a": 1},\n\n {"b": }]')))


BAD_RECORDS = [
    (_rec(pos=False), "field 'positive_ctxs': no positive passage"),
    ({k: v for k, v in _rec().items() if k != "positive_ctxs"}, "field 'positive_ctxs': missing"),
    (_rec(q=" "), "field 'question': empty question"),
    ({k: v for k, v in _rec().items() if k != "question"}, "field 'question': missing"),
    (_rec(answers="a"), "field 'answers': must be a list of strings"),
    (_rec(negative_ctxs=[{"title": "N", "text": ""}]), "field 'negative_ctxs[0]': empty 'text'"),
    (_rec(hard_negative_ctxs=[{"title": "N"}]), "field 'hard_negative_ctxs[0]': missing 'text'"),
    (_rec(negative_ctxs={"text": "x"}), "field 'negative_ctxs': must be a list"),
    (_rec(hard_negative_ctxs=[{"text": "x", "score": "high"}]), "field 'hard_negative_ctxs[0]': 'score' 'high' is not"),
    (_rec(hard_negative_ctxs=[{"text": "x", "score": True}]), "field 'hard_negative_ctxs[0]': 'score' must be a number"),
    (_rec(negative_ctxs=[{"text": "x", "score": "nan"}]), "field 'negative_ctxs[0]': 'score' must be finite"),
]


@pytest.mark.parametrize("bad, reason", BAD_RECORDS)
def test_training_problems_fail_and_skip(tmp_path, caplog, bad, reason):
    f = jsonl(tmp_path / "train.jsonl", [_rec("good1"), bad, _rec("good2")])
    with pytest.raises(InputError) as e:
        read_training_records(f, on_error="fail")
    assert str(e.value).startswith(f"{f}:2: {reason}")
    with caplog.at_level(logging.WARNING):
        records, problems = read_training_records(f, on_error="skip")
    assert [r.question for r in records] == ["good1", "good2"]
    assert len(problems) == 1 and problems[0].source == f"{f}:2" and problems[0].reason.startswith(reason)
    assert f"skipped 1 bad training record(s) of 3 in {f}" in caplog.text and f"{f}:2" in caplog.text


def test_training_skip_reports_malformed_jsonl_line_and_fail_is_default(tmp_path):
    f = write(tmp_path / "t.jsonl", json.dumps(_rec("a")) + "\n{oops\n\n" + json.dumps(_rec("b")) + "\n")
    with pytest.raises(InputError, match=r"t\.jsonl:2: malformed JSON"):
        read_training_records(f)
    records, problems = read_training_records(f, on_error="skip")
    assert [r.source for r in records] == [f"{f}:1", f"{f}:4"] and problems[0].source == f"{f}:2"
    with pytest.raises(ValueError):
        read_training_records(f, on_error="ignore")


def test_write_training_records_roundtrip(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", [_rec("q1"), _rec("q2", answers=[])])
    records, _ = read_training_records(src)
    out = tmp_path / "sub" / "out.jsonl"
    assert write_training_records(out, records, ids=["i1", "i2"]) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["i1", "i2"]
    assert rows[0]["hard_negative_ctxs"] == [{"title": "H", "text": "hard", "passage_id": "3"}]
    again, _ = read_training_records(out)
    strip = [r.__class__(r.question, r.answers, r.positives, r.negatives, r.hard_negatives) for r in records]
    assert [a.__class__(a.question, a.answers, a.positives, a.negatives, a.hard_negatives) for a in again] == strip
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_teacher_scores_are_read_and_written_per_ctx(tmp_path):
    """A ctx's ``score`` (DPR's files, `dpr-jax mine` output) is the teacher score; absent/null -> None."""
    rec = _rec("q", hard_negative_ctxs=[{"text": "h1", "score": "7.5", "id": "h1"}, {"text": "h2", "id": "h2"},
                                        {"text": "h3", "score": None, "id": "h3"}, {"text": "h4", "score": -2, "id": "h4"}])
    records, _ = read_training_records(jsonl(tmp_path / "in.jsonl", [rec]))
    (r,) = records
    assert r.positive_scores == (3.2,) and r.negative_scores == ()
    assert r.hard_negative_scores == (7.5, None, None, -2.0)
    assert r.scores("negatives") == (None,) and r.scores("hard_negatives") == (7.5, None, None, -2.0)
    write_training_records(tmp_path / "out.jsonl", records)
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert [c.get("score") for c in row["hard_negative_ctxs"]] == [7.5, None, None, -2.0]
    assert "score" not in row["hard_negative_ctxs"][1] and "score" not in row["negative_ctxs"][0]
    assert read_training_records(tmp_path / "out.jsonl")[0][0].hard_negative_scores == r.hard_negative_scores
    with pytest.raises(ValueError, match="2 positive_scores for 1 positives"):
        TrainRecord("q", (), (Passage("1", "t"),), positive_scores=(1.0, 2.0))
    assert TrainRecord("q", (), (Passage("1", "t"),), positive_scores=(None,)) == TrainRecord("q", (), (Passage("1", "t"),))


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_validate_reports_problems_with_exit_1(tmp_path, capsys):
    f = jsonl(tmp_path / "train.jsonl", [_rec("a"), _rec(pos=False), _rec(q="")])
    assert cli_main(["data", "validate", str(f), "--kind", "train"]) == 1
    out = capsys.readouterr().out
    assert "training records: 1" in out and "2 problem(s)" in out
    assert f"{f}:2: field 'positive_ctxs'" in out and f"{f}:3: field 'question'" in out

    p = write(tmp_path / "c.tsv", "id\ttext\ttitle\n1\tx\tT\n2\ty\n")
    assert cli_main(["data", "validate", str(p), "--kind", "passages"]) == 1
    out = capsys.readouterr().out
    assert "passages: 1" in out and f"{p}:3: expected 3 tab-separated columns" in out

    q = jsonl(tmp_path / "q.jsonl", [{"question": "ok", "answers": ["a"]}])
    assert cli_main(["data", "validate", str(q), "--kind", "questions"]) == 0
    assert "questions: 1" in capsys.readouterr().out


def test_cli_input_error_is_one_line_exit_2(tmp_path, capsys):
    bad = write(tmp_path / "t.json", '[{"question": "q"},\n  {"question": }]')
    assert cli_main(["data", "validate", str(bad), "--kind", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:2: malformed JSON") and err.count("\n") == 1


def test_cli_subprocess_no_traceback(tmp_path):
    bad = write(tmp_path / "p.jsonl", '{"id": "a", "text": "x"}\n{"id": "a"\n')
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "dpr_jax", "data", "validate", str(bad), "--kind", "passages",
                        "--format", "beir"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}:1: field '_id': missing or empty passage id" in r.stdout
    assert f"{bad}:2: malformed JSON" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dpr_jax", "data", "validate", str(tmp_path / "missing.jsonl"),
                        "--kind", "questions"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'missing.jsonl'}: file not found\n"


# ------------------------------------------------------------------------------- byte-order mark

BOM = "\ufeff"


def _bom_cases(tmp_path):
    """(file name, content, reader) for every reader kind; each reader returns something comparable."""
    from dpr_jax.data.squad import load_squad
    from dpr_jax.index.runs import read_run

    def first_passage(path):
        return next(read_passages(path))

    def questions(path):
        return read_questions(path)[0]

    def training(path):
        return read_training_records(path)[0][0].question

    def run(path):
        entry = read_run(path, [Question("q1", "what?")])[0]
        return entry.question.id, [(h.id, h.score) for h in entry.hits]

    squad = {"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "q1", "question": "what?", "answers": [{"text": "c"}]}]}]}]}
    return [
        ("psgs.tsv", "id\ttext\ttitle\np1\tsome text\tT\n", first_passage),
        ("psgs_noheader.tsv", "p1\tsome text\tT\n", first_passage),
        ("psgs.jsonl", '{"id": "p1", "text": "some text", "title": "T"}\n', first_passage),
        ("corpus.jsonl", '{"_id": "p1", "text": "some text", "title": "T"}\n', first_passage),
        ("q.jsonl", '{"id": "q1", "question": "what?", "answers": ["a"]}\n', questions),
        ("q.tsv", 'what?\t["a"]\n', questions),
        ("q_dpr.json", '[{"question": "what?", "answers": ["a"], "positive_ctxs": [{"text": "t", "id": "p1"}]}]',
         questions),
        ("train.json", '[{"question": "what?", "positive_ctxs": [{"text": "t"}]}]', training),
        ("train.jsonl", '{"question": "what?", "positive_ctxs": [{"text": "t"}]}\n', training),
        ("run.json", '[{"id": "q1", "question": "what?", "ctxs": [{"id": "p1", "score": 1.5}]}]', run),
        ("run.trec", "q1 Q0 p1 1 1.5 x\n", run),
        ("squad.json", json.dumps(squad), lambda p: load_squad(p)[0]["paragraphs"][0]["qas"][0]),
    ]


def test_a_leading_utf8_bom_is_accepted_by_every_reader(tmp_path):
    """Windows tools often start UTF-8 files with a BOM; it is not part of the first id or JSON value."""
    for name, content, reader in _bom_cases(tmp_path):
        plain = write(tmp_path / name, content)
        expected = reader(plain)
        with_bom = write(tmp_path / f"bom_{name}", BOM + content)
        assert reader(with_bom) == expected, name
        if name.endswith(".tsv") or name.endswith("l"):  # and gzipped
            gz = tmp_path / f"bom_{name}.gz"
            gz.write_bytes(gzip.compress((BOM + content).encode()))
            assert reader(gz) == expected, name
    qrels = write(tmp_path / "qrels.tsv", BOM + "query-id\tcorpus-id\tscore\nq1\tp1\t1\n")
    assert read_qrels(qrels) == {"q1": ("p1",)}
    assert detect_passage_format(write(tmp_path / "x", BOM + '{"_id": "p1", "text": "t"}\n')) == "beir"
    assert detect_question_format(write(tmp_path / "y", BOM + '[{"question": "q"}]')) == "dpr"
    from dpr_jax.models.loading import read_hf_config
    from dpr_jax.train.config import load_config_file

    (tmp_path / "model").mkdir()
    write(tmp_path / "model" / "config.json", BOM + '{"hidden_size": 8}')
    assert read_hf_config(tmp_path / "model") == {"hidden_size": 8}
    config = write(tmp_path / "cfg.py", BOM + "import ml_collections\n\ndef get_config():\n"
                                              "    return ml_collections.ConfigDict({'seed': 3})\n")
    assert load_config_file(config).seed == 3  # Python itself accepts a BOM in source files


def test_utf16_files_are_named_as_such(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes('{"question": "what?"}\n'.encode("utf-16"))
    with pytest.raises(InputError, match=r"q\.jsonl:1: .*UTF-16.*save it as UTF-8"):
        read_questions(f)
