"""Exact top-k on the CPU: each block scored by NumPy's BLAS, then pruned by the running k-th best.

:func:`dpr_jax.index.search.exact_search` uses this on the CPU backend (see its docstring for the
measurements behind the choice). Blocks arrive as ``(first row, block [R, dim], valid rows)`` with
``R`` a multiple of :data:`GROUP`; per block and per slice of queries:

1. ``scores = q @ block.T`` by the BLAS sgemm (all cores), into a reused buffer; padded rows -> ``-inf``.
2. Column groups: group ``j`` is the ``GROUP`` columns ``j, j + R/GROUP, j + 2R/GROUP, ...``, so the
   group maxima are an element-wise maximum of ``GROUP`` contiguous row pieces (one vectorised
   pass, read only; contiguous groups would need a slow reduction along a short inner axis).
3. The bound: once ``k`` rows have been seen, an entry can only enter the top-k if its score is
   strictly above the query's current k-th best (an equal score loses the tie to an earlier, lower
   row). Before that, an entry must reach the block's own k-th best (at least the k-th largest
   group maximum: k distinct entries reach it), so the first block yields about k candidates, not
   all its columns.
4. Only groups whose maximum passes the bound are opened; their entries that pass are the
   candidates (about ``k / b`` per query in block ``b`` of random-order data).
5. Candidates are merged into the running list by one sort on (score descending, row ascending),
   so among equal scores the lower row comes first, as in the JAX path.

Every entry that could be in the top-k passes steps 3-4 and the merge ranks exactly, so the result
is exact: the same float32 scores as a full sort of ``q @ C.T``, ties to the lower row.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

GROUP = 64  # columns per group: 32768 / 64 = 512 group maxima per query and block
_SCORE_FLOATS = 1 << 25  # score buffer bound (128 MiB): queries per slice = this // block rows


def as_float32(block) -> np.ndarray:
    """A block's values as a C-contiguous float32 array, converted once (float16, bfloat16, float64, jax).

    float32 passes through without a copy. bfloat16 goes through ml_dtypes' cast, measured faster
    than shifting the raw bits in NumPy (two passes).
    """
    return np.ascontiguousarray(np.asarray(block), dtype=np.float32)


class RunningTopK:
    """The running exact top-k of ``queries`` [Q, D] over blocks fed in row order (see the module doc)."""

    def __init__(self, queries: np.ndarray, k: int, block_rows: int):
        if block_rows % GROUP:
            raise ValueError(f"block rows {block_rows} must be a multiple of {GROUP}")
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        n_q = self.q.shape[0]
        self.scores = np.full((n_q, k), -np.inf, np.float32)  # best first
        self.rows = np.full((n_q, k), -1, np.int64)
        self.seen = 0  # rows merged so far (same for every query)
        self.slice = max(1, min(n_q, _SCORE_FLOATS // block_rows))
        self._buf = np.empty((self.slice, block_rows), np.float32)
        self._gmax = np.empty((self.slice, block_rows // GROUP), np.float32)

    def add(self, offset: int, block: np.ndarray, valid: int) -> None:
        """Merge rows ``offset .. offset + valid - 1`` (the first ``valid`` rows of ``block``)."""
        full = self.seen >= self.k  # every query already holds k real entries
        for s in range(0, self.q.shape[0], self.slice):
            e = min(s + self.slice, self.q.shape[0])
            self._add_slice(s, e, offset, block, valid, full)
        self.seen += valid

    def _add_slice(self, s, e, offset, block, valid, full):
        scores = self._buf[: e - s]
        np.matmul(self.q[s:e], block.T, out=scores)
        self._prune_and_merge(s, scores, offset, valid, full)

    def _prune_and_merge(self, s, scores, offset, valid, full):
        """Candidates of ``scores`` [queries s.., block rows] (see the module doc), merged."""
        (n, rows), k = scores.shape, self.k
        e = s + n
        ng = rows // GROUP
        if valid < rows:
            scores[:, valid:] = -np.inf
        grouped = scores.reshape(n, GROUP, ng)  # [query, i, j] = column i * ng + j
        gmax = np.max(grouped, axis=1, out=self._gmax[:n])
        if full:
            bound, strict = self.scores[s:e, k - 1], True
        elif ng >= k:  # the block's k-th best is at least its k-th largest group maximum
            bound, strict = np.partition(gmax, ng - k, axis=1)[:, ng - k], False
        else:
            bound, strict = None, False

        def passes(x, b):
            if strict:
                return x > b
            ok = x > -np.inf  # padding and unset entries never enter
            return ok if b is None else ok & (x >= b)

        qi, gj = np.nonzero(passes(gmax, None if bound is None else bound[:, None]))
        if qi.size == 0:
            return
        vals = grouped[qi, :, gj]  # [groups opened, GROUP]
        ci, ii = np.nonzero(passes(vals, None if bound is None else bound[qi][:, None]))
        cand_q, cand_v = qi[ci], vals[ci, ii]
        cand_r = (ii * ng + gj[ci]).astype(np.int64) + offset
        self._merge(s, cand_q, cand_v, cand_r)

    def _merge(self, s, cand_q, cand_v, cand_r):
        """Merge candidates (``cand_q`` ascending, slice-local query numbers) into the running lists."""
        counts = np.bincount(cand_q)
        active = np.nonzero(counts)[0]
        counts = counts[active]
        width = int(counts.max())
        slot = np.zeros(cand_q.max() + 1, np.int64)
        slot[active] = np.arange(active.size)
        starts = np.cumsum(counts) - counts
        a = slot[cand_q]
        pos = np.arange(cand_q.size) - starts[a]
        pad_v = np.full((active.size, width), -np.inf, np.float32)
        pad_r = np.full((active.size, width), np.iinfo(np.int64).max, np.int64)
        pad_v[a, pos], pad_r[a, pos] = cand_v, cand_r
        at = active + s
        all_v = np.concatenate([self.scores[at], pad_v], axis=1)
        all_r = np.concatenate([self.rows[at], pad_r], axis=1)
        order = np.lexsort((all_r, -all_v), axis=1)[:, : self.k]  # score descending, then row ascending
        self.scores[at] = np.take_along_axis(all_v, order, axis=1)
        self.rows[at] = np.take_along_axis(all_r, order, axis=1)


def blas_topk(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray, int]], k: int,
              block_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact ``(scores [Q, k], rows [Q, k], rows seen)`` over float32 ``blocks`` of ``block_rows`` rows.

    Lists hold ``-inf`` / ``-1`` past the number of rows seen.
    """
    top = RunningTopK(queries, k, block_rows)
    for offset, block, valid in blocks:
        top.add(offset, block, valid)
    return top.scores, top.rows, top.seen
