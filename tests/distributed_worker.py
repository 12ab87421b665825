"""One process of a real multi-process JAX run, started by test_distributed.py and test_launch.py.

Usage: ``python tests/distributed_worker.py DATA.npy``. The process joins the run through
:func:`dpr_jax.distributed.maybe_initialize` (configured only by environment variables: the
``DPR_JAX_*`` ones or SLURM's), loads *only its own rows* of the global matrix in DATA.npy
(:func:`process_slice`), assembles the global batch on the mesh and computes things that need
every process's rows: column sums, the in-batch score matrix ``X @ X.T`` (what DPR's global
in-batch softmax computes) and an ``all_gather`` under ``shard_map``. It prints one line
``RESULT {json}`` which the tests compare with NumPy on the full matrix.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(data_path: str) -> int:
    from dpr_jax.distributed import is_main_process, maybe_initialize, process_slice, sync

    initialised = maybe_initialize()
    again = maybe_initialize()  # idempotent: must not initialise twice

    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from dpr_jax.mesh import DATA_AXIS, global_batch, make_mesh, replicated

    full = np.load(data_path)
    mine = process_slice(len(full))
    mesh = make_mesh()
    x = global_batch(full[mine], mesh)  # this process only ever reads its own rows

    col_sums = jax.jit(lambda a: a.sum(axis=0), out_shardings=replicated(mesh))(x)
    scores = jax.jit(lambda a: a @ a.T, out_shardings=replicated(mesh))(x)
    gather = jax.jit(jax.shard_map(lambda b: jax.lax.all_gather(b, DATA_AXIS, tiled=True), mesh=mesh,
                                   in_specs=P(DATA_AXIS), out_specs=P(), check_vma=False))
    gathered = gather(x)
    total = jax.jit(lambda a: jnp.sum(a), out_shardings=replicated(mesh))(x)
    sync("distributed_worker_done")

    result = {
        "initialised": initialised,
        "again": again,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "is_main": is_main_process(),
        "slice": [mine.start, mine.stop],
        "col_sums": np.asarray(col_sums).tolist(),
        "scores": np.asarray(scores).tolist(),
        "gathered": np.asarray(gathered).tolist(),
        "total": float(total),
    }
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")  # one write: less interleaving
    sys.stdout.flush()
    return 0


# ---- helpers shared by the tests that start this script ------------------------------------------

WORKER = __file__
REPO = str(__import__("pathlib").Path(__file__).resolve().parents[1])


def free_port() -> int:
    """A TCP port that was free a moment ago on localhost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_all(procs, timeout: float) -> list[str]:
    """The combined output of each started worker, in order; any still running after a failure is killed."""
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outputs


def parse_result(output: str) -> dict:
    """The ``RESULT {json}`` line a worker printed (AssertionError with the output if none)."""
    # stdout and stderr share one pipe: C++ logging (gloo) may land on the same line, so look for
    # the marker anywhere and decode just the JSON object after it
    starts = [i for i in range(len(output)) if output.startswith("RESULT {", i)]
    assert len(starts) == 1, f"worker printed {len(starts)} RESULT lines:\n{output}"
    result, _ = json.JSONDecoder().raw_decode(output, starts[0] + len("RESULT "))
    return result


def check_results(results: list[dict], full: np.ndarray, n_processes: int, devices_per_process: int) -> None:
    """Every process joined one runtime and computed, from its own rows only, what NumPy gets from all."""
    assert sorted(r["process_index"] for r in results) == list(range(n_processes))
    for r in results:
        assert r["initialised"] and r["again"]
        assert r["process_count"] == n_processes
        assert r["device_count"] == n_processes * devices_per_process
        assert r["local_device_count"] == devices_per_process
        assert r["is_main"] == (r["process_index"] == 0)
        np.testing.assert_allclose(r["col_sums"], full.sum(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r["scores"], full @ full.T, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(r["gathered"], dtype=full.dtype), full)
        np.testing.assert_allclose(r["total"], full.sum(dtype=np.float64), rtol=1e-5, atol=1e-4)
    # the per-process row slices tile the global batch exactly
    spans = sorted(tuple(r["slice"]) for r in results)
    assert spans[0][0] == 0 and spans[-1][1] == len(full)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
