"""`dpr-jax train` as real processes: SIGKILL + rerun resumes bit for bit, SIGTERM saves and exits 0,
two processes x 2 devices train exactly like one process with 4, the shipped tiny config runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from train_support import (REPO, cli_env, final_params, read_metrics, run_train_cli, synthetic_records,
                                tiny_overrides, train_command, write_jsonl)
from dpr_jax.models.run_dir import checkpoint_steps


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", synthetic_records(n=48, n_passages=30))


def _wait_for(predicate, proc, timeout=180.0, poll=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("timed out")


def _has_checkpoint(workdir) -> bool:
    """A committed checkpoint exists (orbax renames ``N.orbax-checkpoint-tmp-*`` to ``N`` when done)."""
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(name.isdigit() for name in os.listdir(directory))


def test_unknown_override_is_a_one_line_error(tmp_path, minilm_dir, train_file):
    proc = run_train_cli(tmp_path / "w", tiny_overrides(minilm_dir, train_file) + ["--config.train.bogus=1"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'train.bogus'")


@pytest.mark.slow
def test_sigkill_then_rerun_ends_bitwise_identical_to_an_uninterrupted_run(tmp_path, minilm_dir, train_file):
    overrides = tiny_overrides(minilm_dir, train_file, **{"train.num_steps": 60, "train.checkpoint_every": 5,
                                                          "train.keep_checkpoints": 2, "model.dropout": "true",
                                                          "data.shuffle_positives": "true", "data.random_negatives": 1})
    from dpr_jax.train.config import load_config
    from dpr_jax.train.loop import train

    # the uninterrupted reference runs in this process, on 2 of its 8 devices
    train(load_config(os.path.join(REPO, "configs", "tiny.py"), overrides + ["--config.train.num_devices=2"]),
          tmp_path / "ref", progress=False)

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(train_command(workdir, overrides), env=cli_env(2), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _has_checkpoint(workdir), proc), "finished before its first checkpoint"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_steps(workdir)[-1]
    assert killed_at < 60

    resumed = run_train_cli(workdir, overrides, devices=2)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of step {killed_at}" in resumed.stderr
    a, b = final_params(tmp_path / "ref"), final_params(workdir)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_metrics(workdir)] == [r["loss"] for r in read_metrics(tmp_path / "ref")]


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_zero(tmp_path, minilm_dir, train_file):
    workdir = tmp_path / "term"
    overrides = tiny_overrides(minilm_dir, train_file, **{"train.num_steps": 100000, "train.checkpoint_every": 50000})
    proc = subprocess.Popen(train_command(workdir, overrides), env=cli_env(1), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: len(read_metrics(workdir)) >= 3, proc), "exited early"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stop requested (SIGTERM)" in err
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and 3 <= steps[0] < 100000
    assert read_metrics(workdir)[-1]["step"] == steps[0]  # the saved step is the last completed one


@pytest.mark.slow
def test_two_processes_with_two_devices_each_equal_one_process_with_four(tmp_path, minilm_dir, train_file):
    """2 real processes x 2 CPU devices (gloo) vs this process on 4 of its 8 devices, same global batch.

    One shared 16-wide tower: gloo's CPU all-reduce of the gradients is slow (seconds for 8 MB here), so
    the model is kept to about half a million parameters.
    """
    from distributed_worker import free_port

    from dpr_jax.train.loop import train
    from train_support import tiny_config

    extra = {"train.num_steps": 4, "train.checkpoint_every": 100, "model.shared": "true", "model.bert.hidden_size": 16}
    train(tiny_config(minilm_dir, train_file, **extra, **{"train.num_devices": 4}), tmp_path / "one", progress=False)

    port = free_port()
    workdir = tmp_path / "two"
    procs = [subprocess.Popen(train_command(workdir, tiny_overrides(minilm_dir, train_file, **extra))
                              + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=cli_env(2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "process 1/2" in outs[1][1] and "4 global devices" in outs[1][1]
    one, two = read_metrics(tmp_path / "one"), read_metrics(workdir)
    assert [r["step"] for r in two] == [1, 2, 3, 4]  # written once (by process 0)
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in two], [r["grad_norm"] for r in one], rtol=1e-4)
    a, b = final_params(tmp_path / "one"), final_params(workdir)
    assert all(np.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.slow
@pytest.mark.long  # test_packaging trains the shipped tiny config from a wheel; launch/local.sh runs it too
def test_shipped_tiny_config_runs_on_squad_and_saves_checkpoints(tmp_path, squad_dev_file):
    """configs/tiny.py as shipped (fewer steps): prepares SQuAD into the workdir, trains, evaluates, saves."""
    workdir = tmp_path / "tiny"
    env = cli_env(1)
    env["DPR_JAX_DATA"] = str(squad_dev_file.parent.parent)
    proc = subprocess.run([sys.executable, "-m", "dpr_jax", "train", "--config", os.path.join(REPO, "configs", "tiny.py"),
                           "--workdir", str(workdir), "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
                           "--config.eval.every=4", "--config.eval.max_questions=50"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "data" / "train.jsonl").exists()
    assert checkpoint_steps(workdir) == [2, 4]
    rows = read_metrics(workdir)
    assert any("eval_top20" in r for r in rows) and any("loss" in r for r in rows)
    assert "finished at step 4/4" in proc.stderr
