"""Multi-process start-up: join the processes of a multi-host run into one JAX runtime.

A dpr-jax run on several hosts (a TPU pod slice, a SLURM GPU job, plain GPU nodes, or N processes
on one machine) runs the same program in every process. Before JAX touches a device, each process
calls :func:`maybe_initialize`, which calls ``jax.distributed.initialize`` once when the
environment describes a multi-process run and does nothing for a plain single-process run:

* explicit settings: ``--coordinator/--num-processes/--process-id`` (or the environment variables
  ``DPR_JAX_COORDINATOR``, ``DPR_JAX_NUM_PROCESSES``, ``DPR_JAX_PROCESS_ID`` that
  ``launch/local.sh`` and ``launch/multinode_gpu.sh`` export);
* a SLURM job step with more than one task (``srun``): JAX reads ``SLURM_*`` itself and gives each
  task the GPU ``SLURM_LOCALID``;
* an Open MPI job (``mpirun``) with more than one rank;
* a Cloud TPU VM (pod slice or GKE): JAX reads the workers from the TPU metadata / environment.

Afterwards the mesh of :mod:`dpr_jax.mesh` spans every device of every process. Only process 0
writes logs and summaries (:func:`is_main_process`); sharded encoding and data loading give each
process a contiguous share of a global list (:func:`process_slice`); :func:`sync` is a barrier;
:func:`allgather_json` shows every process what each found (statistics of its share, its first error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from dpr_jax.errors import DprJaxError

ENV_COORDINATOR = "DPR_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "DPR_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DPR_JAX_PROCESS_ID"

# SLURM variables that JAX's own SLURM detection needs (all are set inside an ``srun`` step).
_SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")

# Set once this module has called jax.distributed.initialize (makes maybe_initialize idempotent).
_initialized_here = False


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--coordinator``, ``--num-processes`` and ``--process-id`` (defaults from the environment)."""
    group = parser.add_argument_group(
        "multi-process",
        "Only needed for multi-host runs that SLURM, Open MPI or Cloud TPU do not describe already.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", default=os.environ.get(ENV_COORDINATOR),
                       help=f"address of process 0's coordinator service (env {ENV_COORDINATOR})")
    group.add_argument("--num-processes", metavar="N", type=int, default=os.environ.get(ENV_NUM_PROCESSES),
                       help=f"total number of processes (env {ENV_NUM_PROCESSES}); 1 disables auto-detection")
    group.add_argument("--process-id", metavar="I", type=int, default=os.environ.get(ENV_PROCESS_ID),
                       help=f"this process's index, 0..N-1 (env {ENV_PROCESS_ID})")


def initialize_from_args(args: argparse.Namespace) -> bool:
    """:func:`maybe_initialize` with the values parsed by :func:`add_distributed_arguments`."""
    return maybe_initialize(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                            getattr(args, "process_id", None))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DprJaxError(f"environment variable {name}={value!r} is not an integer") from None


def detect_cluster() -> str | None:
    """Name the multi-process environment JAX can configure itself from, or ``None``.

    ``"slurm"``: inside an ``srun`` step with more than one task. ``"ompi"``: an ``mpirun`` job with
    more than one rank. ``"tpu"``: a Cloud TPU VM (JAX reads the pod's workers from the metadata
    server or, on GKE, ``TPU_WORKER_HOSTNAMES``; a single-host TPU VM joins as 1 of 1 processes).
    """
    env = os.environ
    if all(v in env for v in _SLURM_STEP_VARS) and _env_int("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    if _running_on_cloud_tpu_vm():
        return "tpu"
    return None


def _running_on_cloud_tpu_vm() -> bool:
    """True on a Cloud TPU VM with libtpu (JAX sets this flag when it is imported)."""
    try:
        from jax._src import cloud_tpu_init  # private, but the flag JAX's own detection uses
    except ImportError:  # pragma: no cover - layout of a future JAX
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def _check_coordinator(coordinator: str) -> None:
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DprJaxError(f"--coordinator must be HOST:PORT, got {coordinator!r}")


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, local_device_ids=None,
                     initialization_timeout: int = 300) -> bool:
    """Call ``jax.distributed.initialize`` once if this is a multi-process run; True if it was.

    Arguments left ``None`` come from ``DPR_JAX_COORDINATOR`` / ``DPR_JAX_NUM_PROCESSES`` /
    ``DPR_JAX_PROCESS_ID``; if none is set either, a SLURM step, Open MPI job or Cloud TPU VM is
    detected (:func:`detect_cluster`) and JAX fills in the values itself. ``num_processes=1`` (or
    no cluster) means a single process: nothing is initialised and False is returned (on a Cloud
    TPU VM JAX is always initialised, as 1 of 1 processes on a single host). Calling it again after
    a successful initialisation returns True without initialising twice. Must run before any JAX
    computation (or ``jax.devices()``) in the process.
    """
    global _initialized_here
    import jax

    if _initialized_here or jax.distributed.is_initialized():
        return True

    coordinator = coordinator if coordinator is not None else (os.environ.get(ENV_COORDINATOR) or None)
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)

    explicit = any(v is not None for v in (coordinator, num_processes, process_id))
    if num_processes is not None:
        if num_processes < 1:
            raise DprJaxError(f"--num-processes must be >= 1, got {num_processes}")
        if num_processes == 1:
            return False
    if explicit:
        source = "flags/environment"
        if detect_cluster() is None:  # nothing else can fill in what is missing
            missing = [flag for flag, value in (("--coordinator", coordinator), ("--num-processes", num_processes),
                                                ("--process-id", process_id)) if value is None]
            if missing:
                raise DprJaxError(f"a multi-process run needs {', '.join(missing)} too (or env "
                                  f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})")
        if coordinator is not None:
            _check_coordinator(coordinator)
        if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
            raise DprJaxError(f"--process-id must be in 0..{num_processes - 1}, got {process_id}")
    else:
        source = detect_cluster()
        if source is None:
            return False

    if _backends_started():
        raise DprJaxError("multi-process initialisation must happen before any JAX computation; "
                          "call dpr_jax.distributed.maybe_initialize() first")
    # Cross-process collectives on CPU go through gloo over TCP (a no-op for GPU/TPU backends).
    with contextlib.suppress(AttributeError):  # a JAX without the option has no other choice
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except ValueError as e:  # JAX: a value is missing and no cluster could supply it
        raise DprJaxError(f"cannot start a multi-process run from {source}: {e} "
                          f"(set --coordinator, --num-processes and --process-id)") from None
    _initialized_here = True
    _log_topology(source)
    return True


def _backends_started() -> bool:
    """Whether JAX has created its device clients already (then initialising is too late)."""
    try:
        from jax._src import xla_bridge  # private; jax.distributed.initialize uses the same test
    except ImportError:  # pragma: no cover - layout of a future JAX; initialize() raises itself
        return False
    return bool(xla_bridge.backends_are_initialized())


def _log_topology(source: str) -> None:
    import jax

    local, total = jax.local_devices(), jax.devices()
    kinds = sorted({d.device_kind for d in total})
    print(f"[dpr-jax] process {jax.process_index()}/{jax.process_count()} ({source}): "
          f"{len(local)} local / {len(total)} global devices ({', '.join(kinds)}); "
          f"local ids {[d.id for d in local]}", file=sys.stderr, flush=True)


def is_main_process() -> bool:
    """True in process 0, the one that writes logs, summaries and final outputs."""
    import jax

    return jax.process_index() == 0


def process_slice(n_items: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """This process's contiguous share of ``n_items`` (sizes differ by at most one item).

    Over processes ``0..count-1`` the slices are disjoint, in order, and cover ``range(n_items)``
    exactly once; the first ``n_items % count`` processes get one extra item. Defaults to the
    running JAX process and count.
    """
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process {process_index} of {process_count} is not a valid process")
    base, extra = divmod(n_items, process_count)
    start = process_index * base + min(process_index, extra)
    return slice(start, start + base + (process_index < extra))


def sync(name: str) -> None:
    """Barrier: return once every process has reached ``sync(name)`` (no-op for one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_json(value) -> list:
    """Every process's JSON-serialisable ``value``, in process order (``[value]`` for one process).

    Also a barrier. For small things that each process finds on its own and all must agree on: the
    statistics of its share of the training file, the first bad record it met. Two collectives:
    the encoded sizes, then the encodings padded to the largest.
    """
    import jax

    encoded = json.dumps(value, ensure_ascii=False).encode("utf-8")
    if jax.process_count() == 1:
        return [json.loads(encoded)]  # the same round trip as with many processes (tuples become lists)
    import numpy as np
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(encoded)], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(gathered[i, :int(n)].tobytes()) for i, n in enumerate(sizes)]
