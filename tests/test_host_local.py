"""Host-local training data: the line index, lazy records, and N processes each parsing only their share.

* In one process: the lazily read records (and the problems of ``on_error="skip"``) equal
  :func:`read_training_records`'s for JSON lines, a JSON array and gzip; a file rewritten at the
  same path gets a new index (never a stale one); a ``gs://`` file and cache work.
* With 2 real processes x 2 CPU devices (``tests/host_data_worker.py``, jax.distributed over
  gloo) against 1 process: the index is built once; each process checks a disjoint half of the
  file; over an epoch the records each parses for its rows are disjoint and together exactly the
  epoch's records; its rows of every global batch, concatenated, equal the 1-process batch array
  for array; a bad record in process 1's share stops both processes with its ``file:line``
  (``fail``) or is skipped identically (``skip``).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distributed_worker import REPO, free_port, parse_result, wait_all
from dpr_jax.data.batches import BatchSpec
from dpr_jax.data.host_local import read_training_data
from dpr_jax.data.lazy_records import LazyRecords
from dpr_jax.data.record_index import build_index
from dpr_jax.data.training_data import read_training_records
from dpr_jax.errors import InputError

WORKER = str(Path(__file__).resolve().parent / "host_data_worker.py")
TIMEOUT_S = 120
N_RECORDS = 22


def _record(i: int, question: str | None = None) -> dict:
    ctx = lambda k, t: {"title": f"título {k}", "text": t, "passage_id": f"p{k}", "score": float(k % 7)}  # noqa: E731
    return {"question": question if question is not None else f"question {i}: ¿qué es {i}? 東京",
            "answers": [f"a{i}"],
            "positive_ctxs": [ctx(i, f"positive text {i} ü")] + ([ctx(500 + i, f"second positive {i}")] if i % 5 == 0
                                                                  else []),
            "hard_negative_ctxs": [ctx(100 + i, f"hard negative {i}"), ctx(200 + i, f"другой {i}")],
            "negative_ctxs": [ctx(300 + i, f"negative {i}")] if i % 2 else []}


def _write(path: Path, bad: dict[int, str] | None = None, n: int = N_RECORDS) -> Path:
    """JSON lines with a blank line after record 1 (line numbers and record positions differ)."""
    bad = bad or {}
    lines = []
    for i in range(n):
        lines.append(json.dumps(_record(i, bad.get(i)), ensure_ascii=False))
        if i == 1:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SPEC = BatchSpec(global_batch_size=4, question_max_length=16, passage_max_length=24, hard_negatives=1, seed=5)


# ---- one process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["jsonl", "array", "gz"])
def test_lazy_records_equal_the_eager_reader(tmp_path, form):
    src = _write(tmp_path / "t.jsonl", bad={4: "", 9: "   "})
    if form == "array":
        path = tmp_path / "t.json"
        path.write_text("[\n" + ",\n".join(json.dumps(json.loads(x), indent=2, ensure_ascii=False)
                                           for x in src.read_text(encoding="utf-8").splitlines() if x.strip()) + "\n]")
    elif form == "gz":
        path = tmp_path / "t.jsonl.gz"
        path.write_bytes(gzip.compress(src.read_bytes()))
    else:
        path = src
    eager, eager_problems = read_training_records(path, on_error="skip")
    data = read_training_data(path, tmp_path / "cache", SPEC, on_error="skip")
    assert list(data.records) == eager  # same records, same file:line sources
    assert data.problems == eager_problems and len(eager_problems) == 2
    with pytest.raises(InputError) as got:
        read_training_data(path, tmp_path / "cache", SPEC, on_error="fail")
    with pytest.raises(InputError) as want:
        read_training_records(path, on_error="fail")
    assert str(got.value) == str(want.value)
    copies = list((tmp_path / "cache").glob("*.jsonl"))
    assert len(copies) == (0 if form == "jsonl" else 1)  # only arrays and .gz are converted


def test_a_file_rewritten_at_the_same_path_is_indexed_again(tmp_path):
    path = _write(tmp_path / "t.jsonl", n=8)
    first = build_index(path, tmp_path / "cache")
    assert first.built and not build_index(path, tmp_path / "cache").built  # cached
    # the same path, different content (and length): a stale index would point into the wrong bytes
    path.write_text("\n\n" + "\n".join(json.dumps(_record(100 + i)) for i in range(5)) + "\n", encoding="utf-8")
    again = build_index(path, tmp_path / "cache")
    assert again.built and again.lines.tolist() == [3, 4, 5, 6, 7]
    assert list(LazyRecords(again)) == read_training_records(path)[0]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # the old version's index is gone


def test_index_and_records_on_gcs(gcs_dir, tmp_path):
    from dpr_jax import storage

    local = _write(tmp_path / "t.jsonl", n=6)
    remote = f"{gcs_dir}/train.jsonl"
    storage.upload(local, remote)
    data = read_training_data(remote, f"{gcs_dir}/run/data-index", SPEC)
    assert data.index_built and [r.question for r in data.records] == [_record(i)["question"] for i in range(6)]
    assert data.records[3].source == f"{remote}:5"  # the blank line after record 1
    assert not read_training_data(remote, f"{gcs_dir}/run/data-index", SPEC).index_built


# ---- two real processes against one --------------------------------------------------------------


def _env(devices: int) -> dict:
    drop = ("DPR_JAX_COORDINATOR", "DPR_JAX_NUM_PROCESSES", "DPR_JAX_PROCESS_ID", "SLURM_JOB_ID", "SLURM_NTASKS",
            "OMPI_MCA_orte_hnp_uri")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run(cases_path: Path, n_processes: int) -> list[dict]:
    envs = [_env(2) for _ in range(n_processes)]
    if n_processes > 1:
        port = free_port()
        for i, env in enumerate(envs):
            env.update(DPR_JAX_COORDINATOR=f"127.0.0.1:{port}", DPR_JAX_NUM_PROCESSES=str(n_processes),
                       DPR_JAX_PROCESS_ID=str(i))
    procs = [subprocess.Popen([sys.executable, WORKER, str(cases_path)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for env in envs]
    outputs = wait_all(procs, TIMEOUT_S)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, f"worker exited with {p.returncode}:\n{out}"
    results = sorted((parse_result(out) for out in outputs), key=lambda r: r["process_index"])
    assert [r["process_index"] for r in results] == list(range(n_processes))
    return [r["cases"] for r in results]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, minilm_dir):
    """The same cases read by 1 process and by 2 processes (each with its own index cache)."""
    tmp = tmp_path_factory.mktemp("host_local")
    good = _write(tmp / "train.jsonl")
    bad_late = _write(tmp / "bad_late.jsonl", bad={17: ""})  # in process 1's half (records 11..21)
    bad_both = _write(tmp / "bad_both.jsonl", bad={3: "   ", 17: ""})
    steps = list(range(8))  # 5 steps per epoch: epochs 0 and 1
    spec = dict(global_batch_size=4, question_max_length=16, passage_max_length=24, hard_negatives=1, seed=5)
    spec_random = dict(spec, hard_negatives=3, random_negatives=1, shuffle_positives=True)  # random fallbacks too
    out = {}
    for n in (1, 2):
        cache = str(tmp / f"cache{n}")
        cases = [{"train": str(good), "cache": cache, "spec": spec, "steps": steps, "on_error": "fail"},
                 {"train": str(good), "cache": cache, "spec": spec_random, "steps": steps, "on_error": "fail"},
                 {"train": str(bad_late), "cache": cache, "spec": spec, "steps": steps, "on_error": "fail"},
                 {"train": str(bad_both), "cache": cache, "spec": spec, "steps": steps, "on_error": "fail"},
                 {"train": str(bad_both), "cache": cache, "spec": spec, "steps": steps, "on_error": "skip"}]
        path = tmp / f"cases{n}.json"
        path.write_text(json.dumps({"tokenizer": str(minilm_dir), "cases": cases}))
        out[n] = _run(path, n)
        out[f"cache{n}"] = Path(cache)
    out["paths"] = {"bad_late": bad_late, "bad_both": bad_both}
    return out


def _assert_same_batches(one: dict, parts: list[dict]) -> None:
    for k, whole in enumerate(one["steps"]):
        assert all(p["steps"][k]["positions"] == whole["positions"] for p in parts)
        for name, array in whole["arrays"].items():
            joined = np.concatenate([np.asarray(p["steps"][k]["arrays"][name]) for p in parts])
            assert np.array_equal(joined, np.asarray(array), equal_nan=True), (whole["step"], name)


def test_two_processes_build_the_same_batches_as_one(runs):
    (one,), two = runs[1], runs[2]
    for case in (0, 1):  # hard negatives only; random negatives and random fallbacks
        _assert_same_batches(one[case], [p[case] for p in two])
    assert two[0][0]["stats"] == two[1][0]["stats"] == one[0]["stats"]


def test_each_process_parses_only_its_share(runs):
    (one,), two = runs[1], runs[2]
    p0, p1 = two[0][0], two[1][0]
    # checking the file: two disjoint halves that cover it, instead of every record on every host
    assert sorted(p0["checked"]) == list(range(11)) and sorted(p1["checked"]) == list(range(11, N_RECORDS))
    assert sorted(one[0]["checked"]) == list(range(N_RECORDS))
    # building batches: a process parses only records of its own rows; over epoch 0 the two sets are
    # disjoint and together exactly the records the epoch's steps use (later epochs may hit the cache)
    for p in (p0, p1):
        for s in p["steps"]:
            assert set(s["parsed"]) <= set(s["my_positions"])
    epoch0 = [k for k, s in enumerate(p0["steps"]) if s["epoch"] == 0]
    assert len(epoch0) == 5 and p0["steps"][-1]["epoch"] == 1
    parsed = [{x for k in epoch0 for x in p["steps"][k]["parsed"]} for p in (p0, p1)]
    used = {x for k in epoch0 for x in p0["steps"][k]["positions"]}
    assert not parsed[0] & parsed[1] and parsed[0] | parsed[1] == used and len(used) == 20


def test_the_index_is_built_once(runs):
    two = runs[2]
    assert [p[0]["index_built"] for p in two] == [True, False]  # process 0 built it, process 1 loaded it
    assert [p[1]["index_built"] for p in two] == [False, False]  # the second case found it cached
    assert len(list(runs["cache2"].glob("train.jsonl-*.npy"))) == 1


def test_a_bad_record_on_one_process_stops_both_with_its_location(runs):
    (one,), two = runs[1], runs[2]
    late, both = runs["paths"]["bad_late"], runs["paths"]["bad_both"]
    # record 17 is on line 19 (blank line after record 1), in process 1's half
    assert [p[2]["error"] for p in two] == [one[2]["error"]] * 2
    assert one[2]["error"] == f"{late}:19: field 'question': empty question"
    # two bad records: every process names the first one of the file
    assert [p[3]["error"] for p in two] == [one[3]["error"]] * 2 == [f"{both}:5: field 'question': empty question"] * 2


def test_skipped_records_are_skipped_identically(runs):
    (one,), two = runs[1], runs[2]
    expected = [f"{runs['paths']['bad_both']}:{line}: field 'question': empty question" for line in (5, 19)]
    for p in (*two, one):
        assert p[4]["problems"] == expected
        assert p[4]["n_records"] == N_RECORDS - 2 and 3 not in p[4]["valid_positions"]
    _assert_same_batches(one[4], [p[4] for p in two])
