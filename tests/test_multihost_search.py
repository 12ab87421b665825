"""Multi-host exact search: each process scores its part of the index rows, the top-k lists merge.

Checked three ways, always against one process searching everything:

* in one process, by simulating P processes (``process_rows`` for each, a ``row_range`` search per
  part, :func:`merge_topk`) for many (rows, P, k), uneven splits, parts smaller than k and empty
  parts included;
* with 2 real processes x 2 CPU devices joined over gloo (``tests/search_worker.py``), on indexes
  whose scores are exactly representable (see test_store_search.py), so scores must be bitwise
  equal, and with exact ties across the part boundary;
* the ``dpr-jax search`` command itself, launched by ``launch/local.sh`` as 2 processes, against
  the same command run as 1 process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distributed_worker import REPO, free_port, parse_result, wait_all
from dpr_jax.cli import main
from dpr_jax.errors import DprJaxError
from dpr_jax.index.multihost import merge_topk, process_rows
from dpr_jax.index.search import exact_search
from dpr_jax.index.store import open_index
from test_store_search import brute_force, tie_free_data, write_index

SEARCH_WORKER = str(Path(__file__).resolve().parent / "search_worker.py")
TIMEOUT_S = 180


def _simulated(queries, corpus, k, n_processes, **kwargs):
    """What ``multihost_search`` computes, with the processes simulated in a loop."""
    n = corpus.shape[0]
    kept = min(k, n)
    all_s = np.full((n_processes, len(queries), kept), -np.inf, np.float32)
    all_r = np.full((n_processes, len(queries), kept), -1, np.int64)
    parts = []
    for p in range(n_processes):
        start, stop = process_rows(n, p, n_processes)
        parts.append((start, stop))
        if stop > start:
            s, r = exact_search(queries, corpus, kept, row_range=(start, stop), **kwargs)
            assert r.min() >= start and r.max() < stop
            all_s[p, :, : s.shape[1]], all_r[p, :, : r.shape[1]] = s, r
    return (*merge_topk(all_s, all_r, kept), parts)


@pytest.mark.parametrize("n,n_processes,k", [(1001, 2, 10), (1001, 3, 400), (7, 2, 5), (7, 2, 50), (7, 8, 3),
                                             (130, 4, 40)])
def test_parts_merged_equal_one_search(n, n_processes, k):
    queries, corpus = tie_free_data(n, 9, seed=n + k)
    scores, rows, parts = _simulated(queries, corpus, k, n_processes, chunk_rows=64, query_batch=4)
    one_s, one_r = exact_search(queries, corpus, k, chunk_rows=64, query_batch=4)
    np.testing.assert_array_equal(rows, one_r)
    np.testing.assert_array_equal(scores, one_s)
    np.testing.assert_array_equal(rows, brute_force(queries, corpus, min(k, n))[1])
    covered = [r for a, b in parts for r in range(a, b)]
    assert covered == list(range(n))  # disjoint, in order, complete


def test_ties_across_parts_keep_the_lower_row():
    queries, corpus = tie_free_data(100, 5, seed=11)
    corpus = np.concatenate([corpus, corpus, corpus])  # rows r, r+100, r+200 tie; parts split at 150
    scores, rows, _ = _simulated(queries, corpus, 9, 2, chunk_rows=32)
    _, ref = brute_force(queries, corpus[:100], 3)
    np.testing.assert_array_equal(rows, np.stack([ref, ref + 100, ref + 200], axis=2).reshape(5, 9))
    np.testing.assert_array_equal(rows, exact_search(queries, corpus, 9, chunk_rows=32)[1])


def test_merge_follows_top_k_total_order_for_signed_zeros():
    """XLA's top_k puts +0.0 before -0.0 (IEEE total order); the merge must agree."""
    import jax

    values = np.array([[-0.0, 0.0, 1.0, -0.0, 0.0, -1.0]], np.float32)
    rows = np.array([[0, 1, 2, 3, 4, 5]])
    _, ref = jax.lax.top_k(values, 6)
    merged_s, merged_r = merge_topk(values, rows, 6)
    np.testing.assert_array_equal(merged_r, np.asarray(ref))
    # as two parts' candidate lists with fillers
    parts_s = np.array([[[0.0, -0.0, -np.inf]], [[1.0, 0.0, -0.0]]], np.float32)
    parts_r = np.array([[[1, 0, -1]], [[2, 4, 3]]])
    assert merge_topk(parts_s, parts_r, 5)[1].tolist() == [[2, 1, 4, 0, 3]]
    with pytest.raises(DprJaxError, match="fewer candidates"):
        merge_topk(parts_s, parts_r, 6)


def test_row_range_reads_only_its_rows(tmp_path):
    queries, corpus = tie_free_data(1000, 6, seed=12)
    write_index(tmp_path, corpus, [300, 300, 400])
    index = open_index(tmp_path)
    got = [(first, len(c)) for first, c in index.iter_chunks(128, 450, 820)]
    assert got[0] == (450, 128) and sum(n for _, n in got) == 370 and got[-1][0] + got[-1][1] == 820
    reads = []
    real = index.read_rows
    index.read_rows = lambda i, start, stop: reads.append(i) or real(i, start, stop)
    s, r = exact_search(queries, index, 20, row_range=(450, 820), chunk_rows=100)
    assert set(reads) == {1, 2}  # shard 0 (rows 0-299) never opened
    sub_s, sub_r = brute_force(queries, corpus[450:820], 20)
    np.testing.assert_array_equal(r, sub_r + 450)
    np.testing.assert_array_equal(s, sub_s.astype(np.float32))
    for bad in ((-1, 5), (5, 1001), (10, 9)):
        with pytest.raises(DprJaxError, match="row range"):
            exact_search(queries, index, 3, row_range=bad)


# ---- real processes -------------------------------------------------------------------------------


def _env(process_id: int, port: int, devices: int = 2) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPR_JAX_", "SLURM_", "OMPI_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""), DPR_JAX_COORDINATOR=f"127.0.0.1:{port}",
               DPR_JAX_NUM_PROCESSES="2", DPR_JAX_PROCESS_ID=str(process_id))
    return env


def _run_two(args: list[str]) -> list[str]:
    """Run ``args`` as 2 processes of one JAX run (2 CPU devices each); their combined outputs."""
    port = free_port()
    procs = [subprocess.Popen(args, env=_env(i, port), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    outputs = wait_all(procs, TIMEOUT_S)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    return outputs


def test_two_processes_equal_one_process(tmp_path):
    cases, refs = [], []
    specs = [  # (rows, shard sizes, queries, k, chunk_rows)
        (1001, [300, 300, 401], 13, 25, 64),  # uneven split 501/500, part boundary inside a shard
        (7, [4, 3], 5, 5, 64),  # k larger than a part (4 and 3 rows)
        (7, [7], 3, 50, 64),  # k larger than the index: clamped to 7
    ]
    for no, (n, sizes, n_q, k, chunk_rows) in enumerate(specs):
        queries, corpus = tie_free_data(n, n_q, seed=20 + no)
        if no == 0:  # exact ties across the part boundary (row 500 | 501): copies of rows 400-449 at 550-599
            corpus[550:600] = corpus[400:450]
        d = tmp_path / f"index{no}"
        write_index(d, corpus, sizes)
        np.save(tmp_path / f"q{no}.npy", queries)
        cases.append({"index": str(d), "queries": str(tmp_path / f"q{no}.npy"), "k": k, "chunk_rows": chunk_rows})
        refs.append(exact_search(queries, open_index(d), k, chunk_rows=chunk_rows))
    (tmp_path / "cases.json").write_text(json.dumps(cases))

    results = [parse_result(out) for out in _run_two([sys.executable, SEARCH_WORKER, str(tmp_path / "cases.json")])]
    assert sorted(r["process_index"] for r in results) == [0, 1]
    assert all(r["process_count"] == 2 and r["local_devices"] == 2 for r in results)
    for no, ((ref_s, ref_r), spec) in enumerate(zip(refs, specs)):
        parts = sorted(tuple(r["cases"][no]["part"]) for r in results)
        assert parts[0][0] == 0 and parts[0][1] == parts[1][0] and parts[1][1] == spec[0]  # disjoint, covering
        for r in results:  # every process holds the merged result, equal to one process's, bit for bit
            got = r["cases"][no]
            assert got["rows"] == ref_r.tolist()
            assert bytes.fromhex(got["scores_hex"]) == ref_s.astype("<f4").tobytes()
    assert refs[0][1].shape == (13, 25) and refs[1][1].shape == (5, 5) and refs[2][1].shape == (3, 7)
    assert np.any(np.isin(refs[0][1], np.arange(550, 600)))  # the tied copies do reach the top-k


def _tiny_model(path: Path, minilm_dir: Path) -> Path:
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.export import export_model
    from dpr_jax.models.loading import init_random_model

    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    loaded = init_random_model(bert, EncoderConfig(pooling="mean", normalize=True), minilm_dir, shared=True, seed=3)
    export_model(loaded, path, "hf")
    return path


def test_search_command_on_two_processes_equals_one(tmp_path, minilm_dir):
    """`dpr-jax search` launched by launch/local.sh as 2 processes x 2 devices vs 1 process x 2 devices.

    Question vectors come from a (tiny, random) model here, so scores are not exactly
    representable: XLA's CPU matmul may round the last bit differently for the different block
    shapes of a part and of the whole index. Ids must be equal and scores equal to 1e-6.
    """
    from train_support import WORDS

    rng = np.random.default_rng(0)
    passages = [{"id": f"doc-{i}", "title": f"T{i}", "text": " ".join(rng.choice(WORDS, 12))} for i in range(45)]
    questions = [{"id": f"q{i}", "question": " ".join(rng.choice(WORDS, 4)), "answers": [str(rng.choice(WORDS))]}
                 for i in range(12)]
    (tmp_path / "passages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    model = _tiny_model(tmp_path / "model", minilm_dir)
    cli = [sys.executable, "-m", "dpr_jax"]
    env1 = {k: v for k, v in _env(0, 0).items() if not k.startswith("DPR_JAX_")}
    assert main(["encode", "--model", str(model), "--passages", str(tmp_path / "passages.jsonl"), "--out",
                 str(tmp_path / "index"), "--block-size", "20", "--max-length", "32", "--dtype", "float32"]) == 0
    search = cli + ["search", "--model", str(model), "--index", str(tmp_path / "index"), "--questions",
                    str(tmp_path / "questions.jsonl"), "--k", "30", "--max-length", "16"]
    one = subprocess.run(search + ["--out", str(tmp_path / "one.json")], env=env1, cwd=REPO, capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    assert one.returncode == 0, one.stderr
    assert "searched rows 0-45 of 45" in one.stderr

    logs = tmp_path / "logs"
    env = {k: v for k, v in env1.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    launched = subprocess.run(["bash", str(Path(REPO) / "launch" / "local.sh"), "2", "--devices-per-process", "2",
                               "--log-dir", str(logs), "--", *search, "--out", str(tmp_path / "two.json")],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    texts = [(logs / f"process-{i}.log").read_text() for i in range(2)]
    assert launched.returncode == 0, launched.stderr + "".join(texts)
    parts = [tuple(int(x) for x in re.findall(r"searched rows (\d+)-(\d+) of 45", t)[0]) for t in texts]
    assert parts == [(0, 23), (23, 45)]  # 45 rows over 2 processes: disjoint, covering; k=30 > each part
    assert "process 0 writes the run file" in texts[1] and "process 0 writes" not in texts[0]

    ref, got = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert [e["id"] for e in got] == [e["id"] for e in ref]
    for a, b in zip(ref, got):
        assert [c["id"] for c in b["ctxs"]] == [c["id"] for c in a["ctxs"]] and len(a["ctxs"]) == 30
        np.testing.assert_allclose([c["score"] for c in b["ctxs"]], [c["score"] for c in a["ctxs"]], rtol=1e-6,
                                   atol=1e-6)
        assert all(c["text"] for c in b["ctxs"])  # process 0 attached the passages
