"""bench/accelerator_suite.sh: refuses to "measure" a CPU, and its --dry-run runs every stage.

The real run needs a GPU or TPU (none in CI); the dry run goes through the same stages and code
paths (TextEncoder, the jitted encoder, the train step plain and with GradCache, exact search over
chunks generated on the device, the report) at toy size on CPU, so a broken stage shows here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from distributed_worker import REPO
from test_launch import assert_strict_and_shellcheck_clean

SCRIPT = Path(REPO) / "bench" / "accelerator_suite.sh"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPR_JAX_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1", **extra)
    return env


def test_script_is_shellcheck_clean():
    assert_strict_and_shellcheck_clean(SCRIPT)


def test_refuses_to_run_on_cpu(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--work", str(tmp_path / "w")], env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "no GPU or TPU" in result.stderr and "--dry-run" in result.stderr
    assert not (tmp_path / "w").exists()  # nothing started


@pytest.mark.long  # `bench/accelerator_suite.sh --dry-run` is this run; 4 min on 2 loaded cores
def test_dry_run_runs_every_stage(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--work", str(work), "--out-dir", str(out)],
                            env=_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads((out / "accelerator_suite_gpu.json").read_text())
    assert data["summary"]["stages_finished"] == ["encode", "train", "search"] and data["summary"]["dry_run"]
    assert [c["sequences"] > 0 and c["per_s"] > 0 for c in data["encode"]["cells"]] == [True] * 3
    train = data["train"]["cells"]
    assert [(c["batch"], c["gradcache_chunk"]) for c in train] == [(8, 0), (16, 4)]  # plain and GradCache
    assert all(c["finite"] and c["step_s"] > 0 for c in train)
    run = data["search"]["runs"][0]
    assert run["identical_ids"] == run["checked_queries"] == 4
    md = (out / "accelerator_suite_gpu.md").read_text()
    assert "Dry run" in md and "## Train step" in md
    assert not (Path(REPO) / "BENCHMARKS.md").read_text().count("Dry run")  # the dry run never collects
