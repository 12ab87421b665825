"""dpr_jax.distributed with real processes: two CPU processes join one JAX runtime and compute on
a global batch that no single process holds, checked against NumPy on the whole batch.

Each run starts 2 Python processes with 2 forced CPU devices each (4 global devices), a free
localhost port and either the DPR_JAX_* variables (what launch/local.sh exports) or SLURM's step
variables (what ``srun`` sets), so both start-up paths of ``maybe_initialize`` are exercised for
real. Timeouts turn a hang into a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from distributed_worker import REPO, WORKER, check_results, free_port, parse_result
from dpr_jax import distributed
from dpr_jax.distributed import add_distributed_arguments, maybe_initialize, process_slice
from dpr_jax.errors import DprJaxError

TIMEOUT_S = 60
CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "OMPI_MCA_orte_hnp_uri", "DPR_JAX_COORDINATOR", "DPR_JAX_NUM_PROCESSES", "DPR_JAX_PROCESS_ID",
                "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT")


def _base_env(devices_per_process: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run_workers(envs: list[dict], data_path) -> list[dict]:
    """Start one worker per env at once, wait (bounded), return their parsed results."""
    procs = [subprocess.Popen([sys.executable, WORKER, str(data_path)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"worker exited with {p.returncode}:\n{out}\n{err}"
    return [parse_result(out) for out, _ in outputs]


@pytest.fixture
def global_rows(tmp_path):
    """12 x 5 random rows (3 per device over 4 devices) saved where the workers can read them."""
    full = np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32)
    path = tmp_path / "rows.npy"
    np.save(path, full)
    return full, path


def test_two_processes_from_dpr_jax_env_compute_global_results(global_rows):
    full, path = global_rows
    port = free_port()
    envs = []
    for i in range(2):
        env = _base_env(devices_per_process=2)
        env.update(DPR_JAX_COORDINATOR=f"127.0.0.1:{port}", DPR_JAX_NUM_PROCESSES="2", DPR_JAX_PROCESS_ID=str(i))
        envs.append(env)
    check_results(_run_workers(envs, path), full, n_processes=2, devices_per_process=2)


def test_two_processes_from_slurm_step_variables(global_rows):
    """What ``srun --ntasks=2`` sets on one node: maybe_initialize detects SLURM, JAX reads the rest."""
    full, path = global_rows
    port = free_port()
    envs = []
    for i in range(2):
        env = _base_env(devices_per_process=2)
        env.update(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_PROCID=str(i),
                   SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))
        envs.append(env)
    check_results(_run_workers(envs, path), full, n_processes=2, devices_per_process=2)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_process_slice_covers_every_item_exactly_once(count):
    for n in range(0, 30):
        slices = [process_slice(n, i, count) for i in range(count)]
        items = [x for s in slices for x in range(n)[s]]
        assert items == list(range(n))  # disjoint, in order, complete
        sizes = [s.stop - s.start for s in slices]
        assert max(sizes) - min(sizes) <= 1


def test_process_slice_defaults_to_the_running_process():
    assert process_slice(7) == slice(0, 7)  # the test process is process 0 of 1
    with pytest.raises(ValueError):
        process_slice(5, 2, 2)


@pytest.fixture
def no_cluster(monkeypatch):
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    if distributed.detect_cluster() is not None:
        pytest.skip(f"running inside a {distributed.detect_cluster()} environment")


def test_single_process_is_not_initialised(no_cluster, monkeypatch):
    import jax

    assert maybe_initialize() is False
    monkeypatch.setenv("DPR_JAX_NUM_PROCESSES", "1")  # 1 process: no init even with a coordinator
    monkeypatch.setenv("DPR_JAX_COORDINATOR", "127.0.0.1:1234")
    assert maybe_initialize() is False
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DPR_JAX_NUM_PROCESSES": "2", "DPR_JAX_PROCESS_ID": "0"}, "--coordinator"),
        ({"DPR_JAX_COORDINATOR": "127.0.0.1:1234", "DPR_JAX_NUM_PROCESSES": "2"}, "--process-id"),
        ({"DPR_JAX_COORDINATOR": "localhost", "DPR_JAX_NUM_PROCESSES": "2", "DPR_JAX_PROCESS_ID": "0"}, "HOST:PORT"),
        ({"DPR_JAX_COORDINATOR": "h:1", "DPR_JAX_NUM_PROCESSES": "2", "DPR_JAX_PROCESS_ID": "2"}, "0..1"),
        ({"DPR_JAX_NUM_PROCESSES": "two"}, "DPR_JAX_NUM_PROCESSES"),
        ({"DPR_JAX_NUM_PROCESSES": "0"}, ">= 1"),
    ],
)
def test_bad_settings_are_one_clear_error(no_cluster, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DprJaxError, match=message.replace(".", r"\.")):
        maybe_initialize()


def test_initialising_after_jax_started_is_a_clear_error(no_cluster):
    import jax

    jax.devices()  # the backend of this test process is up
    with pytest.raises(DprJaxError, match="before any JAX computation"):
        maybe_initialize("127.0.0.1:1234", num_processes=2, process_id=1)


def test_distributed_arguments_default_from_environment(monkeypatch):
    monkeypatch.setenv("DPR_JAX_COORDINATOR", "10.0.0.1:8476")
    monkeypatch.setenv("DPR_JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("DPR_JAX_PROCESS_ID", "3")
    parser = argparse.ArgumentParser()
    add_distributed_arguments(parser)
    args = parser.parse_args([])
    assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.1:8476", 4, 3)
    args = parser.parse_args(["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0"])
    assert (args.coordinator, args.num_processes, args.process_id) == ("h:1", 2, 0)
