"""The whole tiny pipeline with every path on ``gs://``, as a user runs it: one CLI process per stage.

Against the session's real GCS API server (gcp-storage-emulator, tests/gcs_emulator.py): the SQuAD
file, the config file, the tokenizer, the data split, the run directory (orbax checkpoints through
tensorstore), the index, the run files, the metrics and the export all live in the emulator's
bucket. ``data squad`` -> ``train`` -> SIGKILL -> rerun resumes -> ``encode`` -> ``search`` ->
``evaluate`` -> ``export``. The resumed run must end bitwise equal to an uninterrupted run of the
same command with a local workdir (storage must not change a single bit, so one reference serves
both claims: resuming is exact, and gs:// trains exactly like local). The reference is a process
too, run while the gs:// run is killed and resumed: an in-process run (this process forces 8 CPU
devices) differs from a 1-device process in the last bits of some losses. Every process runs in an
empty working directory that must stay free of ``gs:`` folders (pathlib's ``Path("gs://b/x")`` is
the local ``gs:/b/x``: the bug this layer exists to prevent).

Sizes are tiny (3 SQuAD articles, a 32-wide 1-layer model, 8 steps, checkpoints every 2): the
emulator is single-threaded and orbax makes about 200 requests per save.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dpr_jax import storage
from train_support import REPO, cli_env, final_params

TRAIN_ARTICLES = ("Sky_(United_Kingdom)", "Construction")
EVAL_ARTICLES = ("Jacksonville,_Florida",)  # a title with a comma, as the benchmark has
TOKENIZER_FILES = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
NUM_STEPS = 8


def _overrides(gs: str, **extra) -> list[str]:
    values = {
        "model.name": f"{gs}/tokenizer", "model.tokenizer": f"{gs}/tokenizer",
        "model.bert.hidden_size": 32, "model.bert.num_hidden_layers": 1, "model.bert.num_attention_heads": 2,
        "model.bert.intermediate_size": 64, "model.bert.max_position_embeddings": 64, "model.dropout": "true",
        "data.dir": f"{gs}/data", "data.prepare_squad": "false", "data.question_max_length": 16,
        "data.passage_max_length": 32, "data.shuffle_positives": "true",
        "train.batch_size": 16, "train.num_steps": NUM_STEPS, "train.warmup_steps": 2, "train.log_every": 1,
        "train.checkpoint_every": 2, "train.keep_checkpoints": 2,
        "eval.every": NUM_STEPS, "eval.max_questions": 20, "eval.batch_size": 32,
    }
    values.update(extra)
    return [f"--config.{k}={v}" for k, v in values.items()]


def _run(args: list[str], cwd, env, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dpr_jax", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"dpr-jax {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def _no_local_gs_folders(root) -> None:
    """No file or folder named like a mangled URL (``gs:``...) anywhere under ``root``."""
    bad = [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files
           if n.lower().startswith(("gs:", "gcs:"))]
    assert not bad, f"local folders named like URLs: {bad}"


def _squad_subset(squad_dev_file, articles) -> bytes:
    root = json.loads(squad_dev_file.read_text(encoding="utf-8"))
    keep = [a for a in root["data"] if a["title"] in articles]
    assert len(keep) == len(articles)
    return json.dumps({"version": root.get("version", "1.1"), "data": keep}).encode()


@pytest.mark.slow
def test_every_path_on_gs_data_train_kill_resume_encode_search_evaluate_export(
        gcs_dir, tmp_path, squad_dev_file, minilm_dir, monkeypatch, request):
    from dpr_jax.models import run_dir

    gs = gcs_dir
    cwd = tmp_path / "cwd"  # every process runs here: nothing may appear in it
    cwd.mkdir()
    env = cli_env(1)
    env["DPR_JAX_CACHE"] = str(tmp_path / "cache")  # local copies of gs:// files (tokenizer, config)
    monkeypatch.setenv("DPR_JAX_CACHE", env["DPR_JAX_CACHE"])  # and for this process's own reads

    # inputs on the bucket: a SQuAD subset, the config file, the tokenizer's files
    storage.write_bytes(f"{gs}/in/squad-subset.json", _squad_subset(squad_dev_file, TRAIN_ARTICLES + EVAL_ARTICLES))
    storage.upload(os.path.join(REPO, "configs", "tiny.py"), f"{gs}/in/tiny.py")
    for name in TOKENIZER_FILES:
        storage.upload(minilm_dir / name, f"{gs}/tokenizer/{name}")

    # 1. data squad
    _run(["data", "squad", "--squad", f"{gs}/in/squad-subset.json", "--out", f"{gs}/data",
          "--eval-articles", ",".join(EVAL_ARTICLES)], cwd, env)
    split = json.loads(storage.as_path(f"{gs}/data/split.json").read_text())
    assert split["counts"]["articles"] == 3 and split["eval_articles"] == list(EVAL_ARTICLES)
    n_passages = split["counts"]["passages"]

    # 2. train, SIGKILLed once its first checkpoint is committed on the bucket; meanwhile the reference:
    # the same command, uninterrupted, with a local workdir
    workdir, local_ref = f"{gs}/run", tmp_path / "ref"
    train = ["train", "--config", f"{gs}/in/tiny.py", "--workdir", workdir, "--no-progress", *_overrides(gs)]
    reference = subprocess.Popen([sys.executable, "-m", "dpr_jax", *train[:3], "--workdir", str(local_ref),
                                  *train[5:]], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
    request.addfinalizer(lambda: reference.poll() is None and reference.kill())
    proc = subprocess.Popen([sys.executable, "-m", "dpr_jax", *train], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not run_dir.checkpoint_steps(workdir):
            assert proc.poll() is None, f"train exited before its first checkpoint:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = run_dir.checkpoint_steps(workdir)[-1]
    assert killed_at < NUM_STEPS, "the run finished before it was killed"
    _no_local_gs_folders(cwd)

    # 3. the same command again resumes from the bucket and finishes
    resumed = _run(train, cwd, env)
    assert f"resuming from the checkpoint of step {killed_at}" in resumed.stderr
    assert f"finished at step {NUM_STEPS}/{NUM_STEPS}" in resumed.stderr
    assert run_dir.checkpoint_steps(workdir) == [NUM_STEPS - 2, NUM_STEPS]  # keep_checkpoints=2 deleted older ones

    # ... bitwise equal to the uninterrupted run with a local workdir (same config, same gs:// data)
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    a, b = final_params(local_ref), final_params(workdir)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ref_rows, gs_rows = run_dir.read_metrics(local_ref), run_dir.read_metrics(workdir)
    assert [r["step"] for r in gs_rows] == [r["step"] for r in ref_rows] == list(range(1, NUM_STEPS + 1)) + [NUM_STEPS]
    assert [r.get("loss") for r in gs_rows] == [r.get("loss") for r in ref_rows]
    assert "eval_top20" in gs_rows[-1]  # the eval set was read from the bucket
    assert storage.as_path(f"{workdir}/tokenizer/tokenizer_config.json").is_file()

    # 4. encode into shards on the bucket (3 blocks of 32 passages)
    _run(["encode", "--model", workdir, "--passages", f"{gs}/data/passages.jsonl", "--out", f"{gs}/index",
          "--block-size", "32", "--batch-size", "16", "--max-length", "32"], cwd, env)
    from dpr_jax.index.store import open_index

    index = open_index(f"{gs}/index")
    assert index.count == n_passages and len(index.shards) == -(-n_passages // 32)
    assert index.meta["passages"] == f"{gs}/data/passages.jsonl"

    # 5. search: questions, index and output on the bucket; passages found through meta.json
    _run(["search", "--model", workdir, "--index", f"{gs}/index", "--questions", f"{gs}/data/eval.jsonl",
          "--k", "5", "--max-length", "16", "--out", f"{gs}/runs/dense.json"], cwd, env)
    from dpr_jax.index.runs import read_run

    entries = read_run(f"{gs}/runs/dense.json")
    assert len(entries) == split["counts"]["eval_questions"]
    assert all(len(e.hits) == 5 and all(h.text and h.has_answer is not None for h in e.hits) for e in entries)
    # the hits are the exact top 5 of the index's own vectors for the model's question vectors
    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.models.loading import load_model

    loaded = load_model(workdir)
    q = TextEncoder(loaded, batch_size=16, max_length=16).encode_questions([e.question.question for e in entries])
    vectors = np.concatenate([c for _, c in index.iter_chunks(1000)]).astype(np.float32)
    scores = q @ vectors.T
    ids = index.ids()
    for e, row in zip(entries, scores):
        assert [h.id for h in e.hits][:1] == [ids[int(np.argmax(row))]]
        np.testing.assert_allclose([h.score for h in e.hits], np.sort(row)[::-1][:5], rtol=1e-4, atol=1e-5)

    # 6. evaluate, metrics written to the bucket
    shown = _run(["evaluate", "--run", f"{gs}/runs/dense.json", "--k", "1,5", "--out", f"{gs}/runs/dense-metrics.json"],
                 cwd, env)
    assert "dense.json" in shown.stdout
    from dpr_jax.eval.metrics import evaluate_run

    written = json.loads(storage.as_path(f"{gs}/runs/dense-metrics.json").read_text())
    expected = evaluate_run(entries, ks=[1, 5])
    assert {k: written[k] for k in expected} == json.loads(json.dumps(expected))

    # 7. export the run to the bucket; loading the export encodes exactly like the run
    _run(["export", "--workdir", workdir, "--out", f"{gs}/export"], cwd, env)
    exported = load_model(f"{gs}/export")
    q2 = TextEncoder(exported, batch_size=16, max_length=16).encode_questions([e.question.question for e in entries])
    np.testing.assert_allclose(q2, q, rtol=1e-5, atol=1e-6)
    assert storage.as_path(f"{gs}/export/model.safetensors").is_file()  # one shared tower: OUT/ itself

    _no_local_gs_folders(cwd)
    assert not any(cwd.iterdir()), f"files appeared in the working directory: {list(cwd.iterdir())}"
