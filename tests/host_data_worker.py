"""One process of a real multi-process read of a training file, started by test_host_local.py.

Usage: ``python tests/host_data_worker.py CASES.json``. The process joins the run through
:func:`dpr_jax.distributed.maybe_initialize` (the ``DPR_JAX_*`` environment of launch/local.sh, or
none: a single process), then for each case ``{"train", "cache", "spec", "steps", "on_error"}``
reads the file with :func:`dpr_jax.data.host_local.read_training_data` - recording, through the
lazy reader's own parse log, every record it parses - builds *its rows* of the global batches of
``steps`` and reports them, or the error every process must stop with. It prints one line
``RESULT {json}``.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _arrays(batch: dict) -> dict:
    flat = {}
    for key, value in batch.items():
        for sub, arr in (value.items() if isinstance(value, dict) else [("", value)]):
            flat[f"{key}.{sub}" if sub else key] = np.asarray(arr).tolist()
    return flat


def run_case(case: dict, tokenizer) -> dict:
    from dpr_jax.data.batches import BatchSpec, TrainBatches
    from dpr_jax.data.host_local import read_training_data
    from dpr_jax.distributed import process_slice
    from dpr_jax.errors import InputError

    spec = BatchSpec(**case["spec"])
    log: list[int] = []
    try:
        data = read_training_data(case["train"], case["cache"], spec, on_error=case["on_error"], parse_log=log)
    except InputError as e:
        return {"error": str(e)}
    checked = list(log)
    log.clear()
    batches = TrainBatches(data.records, tokenizer, spec, stats=data.stats)
    rows = process_slice(spec.global_batch_size)
    steps = []
    for step in case["steps"]:
        global_positions = data.records.positions[batches.record_indices(step)]
        arrays = _arrays(batches.batch(step, rows))
        steps.append({"step": step, "epoch": batches.epoch_of(step), "positions": global_positions.tolist(),
                      "my_positions": global_positions[rows].tolist(), "parsed": list(log), "arrays": arrays})
        log.clear()
    return {"error": None, "checked": checked, "steps": steps,
            "index_built": data.index_built, "n_records": len(data.records),
            "problems": [str(p) for p in data.problems], "stats": data.stats.__dict__,
            "valid_positions": data.records.positions.tolist()}


def main(cases_path: str) -> int:
    from dpr_jax.distributed import maybe_initialize

    maybe_initialize()

    import jax

    from dpr_jax.models.tokenizer import TextTokenizer

    with open(cases_path) as f:
        cases = json.load(f)
    tokenizer = TextTokenizer.from_dir(cases["tokenizer"])
    out = [run_case(case, tokenizer) for case in cases["cases"]]
    result = {"process_index": jax.process_index(), "process_count": jax.process_count(), "cases": out}
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
