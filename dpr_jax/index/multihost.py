"""Exact search split over the processes of a multi-host run, with the same result as one process.

On a pod slice or a GPU cluster ``dpr-jax search`` runs as N processes (the launchers of
``launch/``). Each process takes a contiguous part of the index's rows
(:func:`dpr_jax.distributed.process_slice`: sizes differ by at most one row, parts in process
order), scores only those rows on its own devices with :func:`~dpr_jax.index.search.exact_search`
(streamed from the shards in row ranges; nothing outside its part is read), and keeps its top-k.
The per-process lists, ``[Q, k]`` scores and global rows, are all-gathered across processes and
merged (:func:`merge_topk`) on every process.

Why the merge is exact: the global top-k consists of rows that are each in the top-k of their own
part (a row beaten by k rows of its own part is beaten globally too), so the union of the parts'
lists holds it. The merge orders candidates the way ``lax.top_k`` does inside ``exact_search``:
by score descending in IEEE total order (so ``+0.0`` before ``-0.0``, as XLA's sort compares),
equal scores lower row first. Scores are those of the part's own search, so the result equals
one process searching everything whenever the float32 scores themselves are computed the same;
exact on exactly representable data, and otherwise different at most in the last bits that
XLA's matmul kernels give for different block shapes (see the tests).

Only the ``[Q, k]`` lists cross the network; question vectors are computed by every process
(see :func:`dpr_jax.index.retrieve.dense_search`).
"""

from __future__ import annotations

import numpy as np

from dpr_jax.distributed import process_slice
from dpr_jax.errors import DprJaxError
from dpr_jax.index.search import check_queries, exact_search
from dpr_jax.index.store import Index

_MAX_ROWS = 2**31 - 1  # rows cross processes as int32 (JAX without x64)


def process_rows(count: int, process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
    """``(start, stop)``: the contiguous rows of a ``count``-row index this process searches."""
    part = process_slice(count, process_index, process_count)
    return part.start, part.stop


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """int64 keys whose ascending order is float32 ``scores`` in descending IEEE total order."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32).astype(np.int64)
    total = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float's total order
    return -total


def merge_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of candidate lists ``scores, rows`` [P, Q, m] (or [Q, m]), by the search's tie rule.

    Candidates with row ``-1`` are fillers (a part with fewer than ``k`` rows) and sort last.
    Returns ``(scores float32 [Q, k], rows int64 [Q, k])``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if scores.ndim == 3:  # [P, Q, m] -> [Q, P*m]
        scores = np.concatenate(list(scores), axis=1)
        rows = np.concatenate(list(rows), axis=1)
    if scores.shape != rows.shape or scores.ndim != 2:
        raise DprJaxError(f"candidate scores {scores.shape} and rows {rows.shape} must be [Q, m] alike")
    if k > scores.shape[1]:
        raise DprJaxError(f"cannot keep {k} of {scores.shape[1]} candidates")
    filler = rows < 0
    order = np.lexsort((np.where(filler, np.iinfo(np.int64).max, rows), _descending_key(scores), filler), axis=1)
    order = order[:, :k]
    best_rows = np.take_along_axis(rows, order, axis=1)
    if np.any(best_rows < 0):
        raise DprJaxError("fewer candidates than k: some part returned fewer rows than it holds")
    return np.take_along_axis(scores, order, axis=1), best_rows


def _pad(scores: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    q, m = scores.shape
    s = np.full((q, width), -np.inf, np.float32)
    r = np.full((q, width), -1, np.int32)
    s[:, :m], r[:, :m] = scores, rows
    return s, r


def multihost_search(queries: np.ndarray, index: Index, k: int, *, mesh=None,
                     **kwargs) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """:func:`exact_search` of ``queries`` over ``index``, its rows split over the running processes.

    Every process must call it with the same queries, index and ``k``. ``mesh`` holds this
    process's devices (:func:`dpr_jax.mesh.make_local_mesh`). Returns ``(scores [Q, k'], rows
    [Q, k'], (start, stop))`` on every process: the merged global result (``k' = min(k, rows)``,
    global row numbers, best first) and the rows this process scored. With one process it is
    plain :func:`exact_search`.
    """
    import jax

    queries = check_queries(queries, k)  # on every process, so none waits alone at the gather
    if queries.shape[1] != index.dim:
        raise DprJaxError(f"queries have dim {queries.shape[1]} but the index at {index.directory} has dim {index.dim}")
    if index.count > _MAX_ROWS:
        raise DprJaxError(f"{index.directory}: {index.count} rows; a multi-host search handles at most {_MAX_ROWS}")
    if index.count == 0:
        raise DprJaxError(f"{index.directory}: the index is empty")
    start, stop = process_rows(index.count)
    kept = min(int(k), index.count)
    n_q = queries.shape[0]
    if stop > start:
        scores, rows = exact_search(queries, index, kept, mesh=mesh, row_range=(start, stop), **kwargs)
    else:  # more processes than rows: this one has nothing to score
        scores, rows = np.zeros((n_q, 0), np.float32), np.zeros((n_q, 0), np.int64)
    if jax.process_count() == 1:
        return scores, rows, (start, stop)
    from jax.experimental import multihost_utils

    scores, rows = _pad(scores, rows, kept)
    all_scores, all_rows = multihost_utils.process_allgather((scores, rows))  # [P, Q, kept] each
    merged_scores, merged_rows = merge_topk(all_scores, all_rows, kept)
    return merged_scores, merged_rows, (start, stop)
