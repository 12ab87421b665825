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


# ------------------------------------------------------------- outputs checked before the work

# command -> (argv with OUT where the output goes, output kind, the work that must not start)
WRITERS = {
    "bm25": (["bm25", "--passages", "{passages}", "--questions", "{questions}", "--out", "OUT"], "file",
             "dpr_jax.index.bm25.open_or_build"),
    "search": (["search", "--model", "m", "--index", "i", "--questions", "{questions}", "--out", "OUT"], "file",
               "dpr_jax.commands.common.load_model_from_args"),
    "hybrid": (["hybrid", "--dense", "{dense}", "--sparse", "{sparse}", "--out", "OUT"], "file",
               "dpr_jax.index.runs.read_run"),
    "evaluate": (["evaluate", "--run", "{dense}", "--out", "OUT"], "file", "dpr_jax.index.runs.read_run"),
    "mine": (["mine", "--passages", "{passages}", "--train", "t.jsonl", "--out", "OUT"], "file",
             "dpr_jax.data.training_data.read_training_records"),
    "plot training": (["plot", "training", "--workdir", "w", "--out", "OUT"], "file",
                      "dpr_jax.plots.plot_training"),
    "plot embeddings": (["plot", "embeddings", "--model", "m", "--questions", "{questions}", "--passages",
                         "{passages}", "--out", "OUT"], "file", "dpr_jax.commands.common.load_model_from_args"),
    "encode": (["encode", "--model", "m", "--passages", "{passages}", "--out", "OUT"], "dir",
               "dpr_jax.commands.common.load_model_from_args"),
    "export": (["export", "--model", "m", "--out", "OUT"], "dir", "dpr_jax.models.loading.load_model"),
    "train": (["train", "--config", "configs/tiny.py", "--workdir", "OUT"], "dir", "dpr_jax.train.loop.train"),
    "data squad": (["data", "squad", "--squad", "{passages}", "--out", "OUT"], "dir",
                   "dpr_jax.data.squad.prepare_squad"),
    "quickstart": (["quickstart", "--workdir", "OUT"], "dir", "dpr_jax.quickstart.run_quickstart"),
}


def _unwritable_dir(tmp_path) -> Path:
    """A directory this process cannot create files in (a read-only mount when running as root)."""
    import os
    import tempfile

    if os.geteuid() != 0:
        d = tmp_path / "read-only"
        d.mkdir()
        d.chmod(0o555)
        return d
    for d in (Path("/sys"), Path("/proc")):
        try:
            tempfile.TemporaryFile(dir=d).close()
        except OSError:
            return d
    pytest.skip("running as root with no read-only directory to test against")


def _bad_outputs(tmp_path, kind):
    a_file = write(tmp_path / "a_file", "x")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir(exist_ok=True)
    bad = {"under a file": a_file / "sub" / "out", "unwritable": _unwritable_dir(tmp_path) / "dpr-jax-test" / "out"}
    bad["an existing directory" if kind == "file" else "an existing file"] = a_dir if kind == "file" else a_file
    return bad


@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writer_checks_its_output_before_the_work(command, small, tmp_path, monkeypatch, capsys):
    import importlib

    argv, kind, work = WRITERS[command]
    module, _, name = work.rpartition(".")

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{command}: the work started before the output was checked")

    monkeypatch.setattr(importlib.import_module(module), name, must_not_run)
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    for why, out in _bad_outputs(tmp_path, kind).items():
        args = [a.format(**small) if "{" in a else (str(out) if a == "OUT" else a) for a in argv]
        assert main(args) == 2, (command, why)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and str(out) in err, (command, why, err)


def test_os_errors_while_writing_are_one_line_errors(tmp_path):
    from dpr_jax.storage import write_json

    with pytest.raises(DprJaxError, match="cannot write"):
        write_json(write(tmp_path / "f", "x") / "out.json", {})


# ------------------------------------------------------------- inputs that used to crash


def test_squad_path_that_is_a_directory(tmp_path, capsys):
    assert main(["data", "squad", "--squad", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_run_file_with_bad_utf8_is_located(tmp_path):
    from dpr_jax.index.runs import read_run

    trec = tmp_path / "run.trec"
    trec.write_bytes(b"q1 Q0 p1 1 1.0 x\nq1 Q0 p\xff2 2 0.5 x\n")
    with pytest.raises(InputError, match=r"run\.trec:2: not UTF-8"):
        read_run(trec)
    js = tmp_path / "run.json"
    js.write_bytes(b'[{"question": "q",\n "ctxs": [{"id": "\xff", "score": 1}]}]')
    with pytest.raises(InputError, match=r"run\.json:2: not UTF-8"):
        read_run(js)


def test_deeply_nested_answer_list_is_an_input_error(tmp_path):
    from dpr_jax.data.questions import read_questions

    f = write(tmp_path / "qa.tsv", "fine?\t['a']\nwhat?\t" + "[" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"qa\.tsv:2: field 'answers'"):
        read_questions(f)
    # the same in any JSON the readers parse: a JSON-lines corpus, a JSON array, a whole-file JSON run
    from dpr_jax.data.passages import read_passages
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.index.runs import read_run

    deep = '{"id": "x", "text": ' + "[" * 100_000 + "}"
    with pytest.raises(InputError, match=r"c\.jsonl:2: malformed JSON: nested too deeply"):
        list(read_passages(write(tmp_path / "c.jsonl", '{"id": "a", "text": "t"}\n' + deep + "\n")))
    with pytest.raises(InputError, match=r"t\.json:2: .*nested too deeply"):
        read_training_records(write(tmp_path / "t.json", "[\n" + deep + "]"))
    with pytest.raises(InputError, match=r"run\.json: malformed JSON: nested too deeply"):
        read_run(write(tmp_path / "run.json", "[" * 100_000))


def test_trec_run_with_a_nan_score_is_rejected(tmp_path):
    from dpr_jax.index.runs import read_run

    f = write(tmp_path / "run.trec", "q1 Q0 p1 1 1.0 x\nq1 Q0 p2 2 nan x\n")
    with pytest.raises(InputError, match=r"run\.trec:2: .*NaN"):
        read_run(f)


# ------------------------------------------------------------- encode: settings and stale shards


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from dpr_jax.models.loading import load_model

    return load_model(str(tiny_model_dir))


def _encode(loaded, passages, out, **kw):
    from dpr_jax.index.encode import encode_corpus

    return encode_corpus(loaded, passages, out, **({"block_size": 2, "batch_size": 4, "max_length": 16,
                                                    "progress": False} | kw))


def test_a_mistyped_or_unreadable_passages_file_leaves_the_index_untouched(tiny, small, tmp_path):
    """encode-settings.json is written only once the input has been opened, recognised and read."""
    out = tmp_path / "index"
    bad = write(tmp_path / "bad.jsonl", '{"id": "p0", "text": "fine"}\n{"text": "no id"}\n')
    for passages in (tmp_path / "pasages.jsonl", bad, write(tmp_path / "what.txt", "no format here\n")):
        with pytest.raises(InputError):
            _encode(tiny, passages, out)
        assert not (out / "encode-settings.json").exists()
    assert _encode(tiny, small["passages"], out)["meta"]["count"] == 5  # the corrected rerun is not refused


def test_encode_refuses_to_resume_after_the_corpus_changed(tiny, small, tmp_path):
    import os

    from dpr_jax.index.store import open_index

    out = tmp_path / "index"
    passages = small["passages"]
    first = _encode(tiny, passages, out, shard=(1, 2))  # job 1 of 2: shard 1 done, meta not yet
    assert first["written"] == [1] and first["meta"] is None
    text = passages.read_text().replace("text number 0", "something else entirely")
    passages.write_text(text)  # same path, other content
    with pytest.raises(DprJaxError, match=r"passages.jsonl has changed since .*index was started.*new --out"):
        _encode(tiny, passages, out, shard=(0, 2))
    # the same size and a new mtime is a change too (an edit in place)
    out2 = tmp_path / "index2"
    meta = _encode(tiny, passages, out2)["meta"]
    st = passages.stat()
    assert meta["passages_fingerprint"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert open_index(out2).meta["passages_fingerprint"] == meta["passages_fingerprint"]
    os.utime(passages, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DprJaxError, match="has changed"):
        _encode(tiny, passages, out2)


def test_search_refuses_texts_from_a_corpus_changed_since_encoding(tiny_model_dir, small, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["encode", "--model", str(tiny_model_dir), "--passages", str(small["passages"]), "--out",
                 str(index), "--max-length", "16"]) == 0
    write(small["passages"], small["passages"].read_text() + '{"id": "p9", "text": "new"}\n')
    argv = ["search", "--model", str(tiny_model_dir), "--index", str(index), "--questions",
            str(small["questions"]), "--k", "3", "--out", str(tmp_path / "run.json")]
    capsys.readouterr()
    assert main(argv) == 2
    assert "changed since" in capsys.readouterr().err and not (tmp_path / "run.json").exists()
    assert main(argv + ["--passages", str(small["passages"])]) == 0  # said explicitly: used as it is


# ------------------------------------------------------------- export never overwrites its source


def test_export_refuses_an_out_that_is_inside_or_around_its_source(tiny_model_dir, tmp_path, capsys):
    import shutil

    parent = tmp_path / "runs"
    source = parent / "run"
    shutil.copytree(tiny_model_dir, source)
    write(source / "only-here.txt", "checkpoints, metrics, anything export would not write back")
    (source / "sub").mkdir()
    for out in (source, parent, source / "sub", Path(str(source) + "/../run")):
        assert main(["export", "--model", str(source), "--out", str(out), "--overwrite"]) == 2, out
        assert "source" in capsys.readouterr().err
        assert (source / "only-here.txt").is_file() and (source / "sub").is_dir()
    link = tmp_path / "link"
    link.symlink_to(source)
    assert main(["export", "--model", str(link), "--out", str(source), "--overwrite"]) == 2
    assert (source / "only-here.txt").is_file()
    assert main(["export", "--model", str(source), "--out", str(source / "export")]) == 0  # a new folder inside is fine
    assert main(["export", "--model", str(source), "--out", str(tmp_path / "elsewhere")]) == 0


# ------------------------------------------------------------- no NaN model, no NaN vectors


def _model_with(tiny_model_dir, tmp_path, name, change):
    """A copy of the tiny model whose weights ``change`` edits in place (a dict of NumPy arrays)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    out = tmp_path / name
    shutil.copytree(tiny_model_dir, out)
    tensors = load_file(str(out / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(out / "model.safetensors"))
    return out


def test_a_model_with_nonfinite_weights_is_refused_at_load(tiny_model_dir, small, tmp_path, capsys):
    import numpy as np

    def poison(t):
        t["encoder.layer.0.intermediate.dense.weight"][3, 5] = np.nan

    model = _model_with(tiny_model_dir, tmp_path, "nan-model", poison)
    out = tmp_path / "index"
    assert main(["encode", "--model", str(model), "--passages", str(small["passages"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "intermediate" in err and not out.exists()
    from dpr_jax.models.loading import load_model

    with pytest.raises(DprJaxError, match="NaN or infinite"):  # every command loads through it (search too)
        load_model(str(model))


def test_nonfinite_vectors_are_never_written_to_a_shard(tiny_model_dir, small, tmp_path, capsys):
    """Finite weights whose vectors overflow float16: refused with the reason, fine in float32."""
    def huge(t):
        t["encoder.layer.0.output.LayerNorm.weight"][:] = 1e6
        t["encoder.layer.0.output.LayerNorm.bias"][:] = 1e6

    model = _model_with(tiny_model_dir, tmp_path, "huge-model", huge)
    argv = ["encode", "--model", str(model), "--passages", str(small["passages"]), "--max-length", "16"]
    assert main(argv + ["--out", str(tmp_path / "f16")]) == 2
    assert "float32" in capsys.readouterr().err
    assert not list((tmp_path / "f16").glob("shard-*"))
    assert main(argv + ["--out", str(tmp_path / "f32"), "--dtype", "float32"]) == 0

    import numpy as np

    from dpr_jax.data.records import Passage
    from dpr_jax.index.encode import _finite

    two = [Passage("a", "x"), Passage("b", "y")]
    with pytest.raises(DprJaxError, match=r"shard 3: .*'b'.*NaN"):
        _finite(3, np.array([[1.0, 2.0], [np.nan, 0.0]], np.float32), two, "float32")
    with pytest.raises(DprJaxError, match=r"shard 3: .*'a'.*float32"):
        _finite(3, np.array([[1e5, 2.0], [1.0, 0.0]], np.float32), two, "float16")
    _finite(3, np.array([[1e5, 2.0], [1.0, 0.0]], np.float32), two, "int8")  # scaled per dimension: fine


# ------------------------------------------------------------- run directory and index hygiene


def test_metrics_rows_are_strict_json_with_null_for_nonfinite_numbers(tmp_path):
    from dpr_jax.models import run_dir

    def strict(text):
        def refuse(name):
            raise ValueError(f"{name} is not JSON")
        return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]

    run_dir.append_metrics(tmp_path, [{"step": 1, "loss": float("nan"), "lr": float("inf"), "grad_norm": 2.5},
                                      {"step": 2, "loss": 0.5, "lr": 1e-3, "grad_norm": float("-inf")}])
    rows = strict((tmp_path / "metrics.jsonl").read_text())
    assert rows[0] == {"step": 1, "loss": None, "lr": None, "grad_norm": 2.5}
    assert rows[1]["grad_norm"] is None
    run_dir.truncate_metrics(tmp_path, 1)  # rewriting keeps it strict
    assert strict((tmp_path / "metrics.jsonl").read_text()) == rows[:1]


def test_encode_removes_its_own_stale_temporaries_only(tiny, small, tmp_path):
    out = tmp_path / "index"
    out.mkdir()
    # what storage.atomic_path leaves when killed: a private .NAME.XXXXXXXX.tmp directory holding the file
    mine = [out / ".shard-00000.npy.k2j4h_0a.tmp", out / ".shard-00002.ids.x_9z1qq3.tmp"]  # job 0 of 2: blocks 0, 2
    others = [out / ".shard-00001.npy.a8b7c9d0.tmp",  # job 1's block: it may be writing it right now
              out / ".meta.json.abcd1234.tmp", out / ".notes.tmp", out / "shard-00000.npy.tmp"]
    for f in mine + others:
        f.mkdir()
        write(f / f.name.split(".tmp")[0].lstrip(".").rsplit(".", 1)[0], "left behind by a killed run")
    _encode(tiny, small["passages"], out, shard=(0, 2))
    assert not any(f.exists() for f in mine)
    assert all(f.exists() for f in others)


# ------------------------------------------------------------- no network nobody asked for


@pytest.fixture
def hub_calls(monkeypatch, tiny_model_dir, capsys):
    """Replace the Hugging Face download with a recorder: (name asked for, stderr printed before the call)."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, capsys.readouterr().err))
        return str(tiny_model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_path_like_model_specs_never_reach_the_hub(hub_calls, tmp_path, monkeypatch):
    from dpr_jax.models.loading import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("runs/tr_typo", "./model", "../model", str(tmp_path / "nope"), "~/nope-dpr-jax", "model/",
                 "a/b/c"):
        with pytest.raises(DprJaxError, match="does not exist") as e:
            resolve_model_dir(spec)
        assert spec in str(e.value)
    assert hub_calls == []


def test_a_hub_name_is_announced_then_fetched_and_offline_is_respected(hub_calls, tmp_path, monkeypatch,
                                                                       tiny_model_dir, capsys):
    from dpr_jax.models.loading import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("some-org/some-model") == tiny_model_dir
    [(name, said_before)] = hub_calls
    assert name == "some-org/some-model"
    assert "some-org/some-model not found locally; trying the Hugging Face Hub as some-org/some-model" in said_before
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DprJaxError, match="HF_HUB_OFFLINE"):
        resolve_model_dir("some-org/other")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    passages = jsonl(tmp_path / "p.jsonl", [{"id": "1", "text": "x"}])
    assert main(["encode", "--offline", "--model", "some-org/other", "--passages", str(passages),
                 "--out", str(tmp_path / "i")]) == 2
    assert "offline" in capsys.readouterr().err.lower()
    assert len(hub_calls) == 1
