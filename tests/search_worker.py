"""One process of a real multi-process exact search, started by test_multihost_search.py.

Usage: ``python tests/search_worker.py CASES.json``. The process joins the run through
:func:`dpr_jax.distributed.maybe_initialize` (the ``DPR_JAX_*`` environment of launch/local.sh),
then for each case ``{"index": DIR, "queries": NPY, "k": K}`` runs
:func:`dpr_jax.index.multihost.multihost_search` over its own part of the index on a mesh of its
local devices, and prints one line ``RESULT {json}`` with the merged scores and rows and the
part it scored, which the test compares with one process searching everything.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(cases_path: str) -> int:
    from dpr_jax.distributed import maybe_initialize

    assert maybe_initialize(), "expected a multi-process run"

    import jax

    from dpr_jax.index.multihost import multihost_search
    from dpr_jax.index.store import open_index
    from dpr_jax.mesh import make_local_mesh

    with open(cases_path) as f:
        cases = json.load(f)
    mesh = make_local_mesh()
    out = []
    for case in cases:
        index = open_index(case["index"])
        queries = np.load(case["queries"])
        scores, rows, part = multihost_search(queries, index, case["k"], mesh=mesh, chunk_rows=case.get("chunk_rows", 64),
                                              query_batch=8)
        out.append({"shape": list(scores.shape), "scores_hex": scores.astype("<f4").tobytes().hex(),
                    "rows": rows.tolist(), "part": list(part)})
    result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "local_devices": jax.local_device_count(), "cases": out}
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
