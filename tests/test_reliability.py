"""Nothing silently wrong: what the README's "Reliability" section promises, checked through the CLI.

Empty inputs and results, impossible ``--k`` values, output locations checked before any work, and
OS errors turned into one-line errors (exit 2). The commands run on a tiny random model
(``tiny_model_dir``) so each check takes a moment; what they produce is checked elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpr_jax.cli import build_parser, main
from dpr_jax.data.records import Question
from dpr_jax.errors import DprJaxError, InputError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def small(tmp_path):
    """A passages file, a question file and two tiny runs over them."""
    passages = jsonl(tmp_path / "passages.jsonl", [{"id": f"p{i}", "title": f"T{i}", "text": f"text number {i}"}
                                                  for i in range(5)])
    questions = jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "number one?", "answers": ["one"]},
                                             {"id": "q2", "question": "text two?", "answers": ["two"]}])
    runs = {}
    for name, order in (("dense", [0, 1, 2]), ("sparse", [2, 3, 4])):
        runs[name] = write(tmp_path / f"{name}.json", json.dumps([
            {"id": q, "question": text, "answers": [], "ctxs": [{"id": f"p{i}", "score": 3.0 - r}
                                                                for r, i in enumerate(order)]}
            for q, text in (("q1", "number one?"), ("q2", "text two?"))]))
    return {"passages": passages, "questions": questions, **runs}


# ------------------------------------------------------------------------------- empty results


def test_empty_passages_file_is_an_error_not_an_empty_index(tmp_path, tiny_model_dir, capsys):
    empty = write(tmp_path / "empty.jsonl", "")
    out = tmp_path / "index"
    assert main(["encode", "--model", str(tiny_model_dir), "--passages", str(empty), "--out", str(out)]) == 2
    assert "no passages" in capsys.readouterr().err
    assert not (out / "meta.json").exists()


def test_qrels_matching_no_question_is_an_error(tmp_path, small):
    qrels = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nother\tp1\t1\n")
    from dpr_jax.data.questions import read_questions

    with pytest.raises(InputError, match="none of the 2 questions"):
        read_questions(small["questions"], qrels=qrels)


def test_an_empty_json_run_is_an_error(tmp_path):
    from dpr_jax.index.runs import read_run

    with pytest.raises(InputError, match="no questions"):
        read_run(write(tmp_path / "run.json", "[]\n"))


@pytest.mark.parametrize("k", ["0", "-1", "x"])
def test_k_below_one_is_refused_when_parsing_every_command(k, capsys):
    commands = {
        "bm25": ["--passages", "p", "--questions", "q", "--out", "o"],
        "search": ["--model", "m", "--index", "i", "--questions", "q", "--out", "o"],
        "hybrid": ["--dense", "d", "--sparse", "s", "--out", "o"],
        "evaluate": ["--run", "r"],
    }
    for command, rest in commands.items():
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([command, *rest, "--k", k])
        assert e.value.code == 2
        assert "--k" in capsys.readouterr().err
    for option in ("--num", "--depth"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["mine", "--passages", "p", "--train", "t", "--out", "o", option, k])


def test_hybrid_k_is_checked_by_the_library_too(small):
    from dpr_jax.index.hybrid import fuse
    from dpr_jax.index.runs import read_run

    dense, sparse = read_run(small["dense"]), read_run(small["sparse"])
    for k in (0, -1):
        with pytest.raises(DprJaxError, match="k must be"):
            fuse(dense, sparse, k=k)
    assert [len(e.hits) for e in fuse(dense, sparse, k=2)] == [2, 2]
