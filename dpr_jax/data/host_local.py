"""Reading a training file on N hosts: each parses only its share, all agree on the result.

:func:`read_training_data` is how a training run reads its records, with one process or many
(one code path). In order:

1. **Index** (:mod:`dpr_jax.data.record_index`): process 0 builds the file's line index in the
   cache directory (the run's ``WORKDIR/data-index``; a JSON array or ``.gz`` is converted once to
   JSON lines there), or finds it cached; the others wait, then load it. On several hosts the
   workdir must therefore be storage they all see (a bucket or a shared file system), as it already
   must be for the checkpoints.
2. **Check** its share: process ``p`` parses records :func:`~dpr_jax.distributed.process_slice` of
   the index, validates each exactly as :func:`~dpr_jax.data.training_data.read_training_records`
   does, computes the :class:`~dpr_jax.data.batches.RecordStats` of the good ones and throws the
   records away. With ``on_error="fail"`` it stops at its first bad record.
3. **Agree** (:func:`~dpr_jax.distributed.allgather_json`): every process gets every share's
   statistics and problems. A bad record anywhere stops *every* process with the same message (the
   first bad record of the file, ``file:line``); skipped records are skipped identically
   everywhere; the merged statistics are the whole file's.

What comes back is a :class:`~dpr_jax.data.lazy_records.LazyRecords` of the valid records in file
order: during training each process parses only the records of its rows of each batch
(:class:`~dpr_jax.data.batches.TrainBatches`), so per-host parsing work and memory fall with N,
and the batches are the same whatever N is.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dpr_jax import distributed
from dpr_jax.data.batches import BatchSpec, RecordStats
from dpr_jax.data.lazy_records import LazyRecords
from dpr_jax.data.record_index import RecordIndex, build_index, load_index
from dpr_jax.data.textfiles import Problem
from dpr_jax.errors import DprJaxError, InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingData:
    """The valid records (lazy), their statistics, and the records skipped with ``on_error="skip"``."""

    records: LazyRecords
    stats: RecordStats
    problems: list[Problem]
    index_built: bool  # this process built the index (False: it was cached, or another process built it)
    checked: int  # records this process parsed to check them (its share of the file)


def _error_dict(e: InputError) -> dict:
    return {"path": e.path, "message": e.reason, "line": e.line, "field": e.field}


def _shared_index(path, cache_dir, progress: bool) -> RecordIndex:
    """Process 0 builds (or finds) the index; every process then has it, or every process raises the same error."""
    index, error = None, None
    if distributed.is_main_process():
        try:
            index = build_index(path, cache_dir, progress=progress)
        except InputError as e:
            error = _error_dict(e)
    errors = distributed.allgather_json(error)  # also the barrier after which the index is there
    if errors[0] is not None:
        raise InputError(**errors[0])
    if index is None:
        index = load_index(path, cache_dir)
        if index is None:
            raise DprJaxError(f"the training data index that process 0 built in {cache_dir} is not visible here: "
                              f"on several hosts the workdir must be storage every host sees (a gs:// bucket or a "
                              f"shared file system), as the checkpoints need too")
    return index


def read_training_data(path, cache_dir, spec: BatchSpec, *, on_error: str = "fail", progress: bool = False,
                       parse_log: list | None = None) -> TrainingData:
    """The training records of ``path`` for a run of any number of processes (see the module docstring).

    ``parse_log``: a list that receives the index position of every record this process parses
    (to check which records a process read). Raises :class:`InputError` (the same in every
    process) for a bad record with ``on_error="fail"`` or a file without records.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    index = _shared_index(path, cache_dir, progress)
    if len(index) == 0:
        raise InputError(path, "no training records in file")
    reader = LazyRecords(index, log=parse_log, cache_size=256)
    share = distributed.process_slice(len(index))
    stats, problems, error = RecordStats(), [], None
    from tqdm.auto import tqdm

    for pos in tqdm(range(share.start, share.stop), desc="Checking training records", unit=" records",
                    disable=not progress, leave=False):
        try:
            stats.add(reader.parse(pos, cache=False), spec)
        except InputError as e:
            if on_error == "fail":
                error = _error_dict(e)
                break
            problem = Problem.from_error(e)
            problems.append([pos, problem.source, problem.reason])
    checked = reader.parses
    shares = distributed.allgather_json({"error": error, "problems": problems, "stats": dataclasses.asdict(stats)})
    first_error = next((s["error"] for s in shares if s["error"] is not None), None)
    if first_error is not None:
        raise InputError(**first_error)
    all_problems = [p for s in shares for p in s["problems"]]
    stats = RecordStats.merge([RecordStats(**s["stats"]) for s in shares])
    bad = np.array([p[0] for p in all_problems], np.int64)
    valid = np.setdiff1d(np.arange(len(index), dtype=np.int64), bad, assume_unique=True)
    problems = [Problem(source, reason) for _, source, reason in all_problems]
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        log.warning("skipped %d bad training record(s) of %d in %s (kept %d): %s%s", len(problems), len(index),
                    path, len(valid), shown, " ..." if len(problems) > 3 else "")
    return TrainingData(reader.subset(valid), stats, problems, index.built, checked)


__all__ = ["TrainingData", "read_training_data"]
