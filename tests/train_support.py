"""Shared pieces of the trainer tests: synthetic DPR training data, a tiny config, CLI runs.

A helper module, not a test module: the ``test_train_*`` modules import from here (pytest puts ``tests/`` on ``sys.path``). The data
is small but real DPR retriever JSON lines: questions made of words of their positive passage,
several questions sharing one positive (so false negatives occur in batches), and records with
hard negatives, with only plain negatives, and with none (the three fallback paths).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = str(Path(__file__).resolve().parent.parent)
WORDS = ("river mountain castle engine violin harbor garden planet winter market bridge forest desert "
         "island temple museum signal copper silver glacier canyon orchard theater library college "
         "factory railway battery crystal dolphin eagle falcon giraffe jaguar koala lemon mango "
         "nectar olive pepper quartz rocket saddle tunnel umbrella valley walnut yellow zebra anchor "
         "basket candle dragon emerald feather galaxy hammer iceberg jungle kettle lantern magnet").split()


def synthetic_records(n: int = 48, n_passages: int = 30, seed: int = 0) -> list[dict]:
    """``n`` DPR retriever records over ``n_passages`` passages (so positives repeat)."""
    rng = np.random.default_rng(seed)
    passages = [{"passage_id": f"p{i}", "title": f"Topic {i}",
                 "text": " ".join(rng.choice(WORDS, size=24))} for i in range(n_passages)]
    records = []
    for i in range(n):
        pos = passages[i % n_passages]
        words = pos["text"].split()
        question = "what " + " ".join(rng.choice(words, size=4, replace=False)) + "?"
        others = [p for p in passages if p is not pos]
        picks = [others[j] for j in rng.choice(len(others), size=3, replace=False)]
        rec = {"question": question, "answers": [words[0]], "positive_ctxs": [pos],
               "negative_ctxs": [], "hard_negative_ctxs": []}
        if i % 3 == 0:
            rec["hard_negative_ctxs"] = picks[:2]
        elif i % 3 == 1:
            rec["negative_ctxs"] = picks[2:]
        records.append(rec)
    return records


def write_jsonl(path, rows) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_synthetic_training(path, **kwargs) -> Path:
    return write_jsonl(path, synthetic_records(**kwargs))


def tiny_overrides(minilm_dir, train_path, **extra) -> list[str]:
    """``--config.key=value`` arguments for a very small, fast run on the synthetic data."""
    values = {
        "model.init": "random", "model.tokenizer": str(minilm_dir), "model.name": str(minilm_dir),
        "model.pooling": "mean", "model.shared": "false", "model.dropout": "false",
        "model.bert.hidden_size": 32, "model.bert.num_hidden_layers": 1, "model.bert.num_attention_heads": 2,
        "model.bert.intermediate_size": 64, "model.bert.max_position_embeddings": 64,
        "data.train": str(train_path), "data.prepare_squad": "false", "data.question_max_length": 16,
        "data.passage_max_length": 32, "data.hard_negatives": 1,
        "train.batch_size": 8, "train.num_steps": 6, "train.learning_rate": 1e-3, "train.warmup_steps": 2,
        "train.log_every": 1, "train.checkpoint_every": 3, "train.keep_checkpoints": 10,
        "eval.every": 0,
    }
    values.update(extra)
    return [f"--config.{k}={v}" for k, v in values.items()]


def tiny_config(minilm_dir, train_path, **extra):
    """The tiny config (configs/tiny.py) with :func:`tiny_overrides` applied."""
    from dpr_jax.train.config import load_config

    return load_config(Path(REPO) / "configs" / "tiny.py", tiny_overrides(minilm_dir, train_path, **extra))


# JAX's persistent compilation cache, shared by the `dpr-jax train` subprocesses of one test session:
# a rerun (resume after a kill) reuses the first run's compiled step instead of compiling it again.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="dpr_jax_test_jit_cache_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)


def cli_env(devices: int = 1) -> dict:
    drop = ("DPR_JAX_COORDINATOR", "DPR_JAX_NUM_PROCESSES", "DPR_JAX_PROCESS_ID", "SLURM_JOB_ID", "SLURM_NTASKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               JAX_COMPILATION_CACHE_DIR=_COMPILATION_CACHE,
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def train_command(workdir, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "dpr_jax", "train", "--config", str(Path(REPO) / "configs" / "tiny.py"),
            "--workdir", str(workdir), "--no-progress", *overrides]


def run_train_cli(workdir, overrides: list[str], devices: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(workdir, overrides), env=cli_env(devices), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def read_metrics(workdir) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def final_params(workdir, step: int | None = None) -> dict:
    """``{path: np.ndarray}`` of a run's checkpointed parameters (latest step by default)."""
    import jax
    from flax import nnx

    from dpr_jax.models.loading import load_run_model

    loaded = load_run_model(workdir, step=step)
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param)))[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
