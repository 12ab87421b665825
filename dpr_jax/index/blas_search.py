"""Exact top-k on the CPU: each block scored by NumPy's BLAS, then pruned by the running k-th best.

:func:`dpr_jax.index.search.exact_search` uses this on the CPU backend (see its docstring for the
measurements behind the choice). Blocks arrive as ``(first row, block [R, dim], valid rows)`` with
``R`` a multiple of :data:`GROUP`; per block and per slice of queries:

1. ``scores = q @ block.T`` by the BLAS sgemm (all cores), into a reused buffer; padded rows -> ``-inf``.
2. Column groups: group ``j`` is the ``g`` columns ``j, j + R/g, j + 2R/g, ...`` (``g`` =
   :data:`GROUP`, halved while there would be fewer than k groups), so the group maxima are an
   element-wise maximum of ``g`` contiguous row pieces (one vectorised pass, read only; contiguous
   groups need a reduction along a short inner axis, measured 6x slower).
3. The bound: once ``k`` rows have been seen, an entry can only enter the top-k if its score is
   strictly above the query's current k-th best (an equal score loses the tie to an earlier, lower
   row). Before that, or when a block would open more than k groups for a query (a corpus that
   improves block by block), an entry must also reach the block's own k-th best (at least the
   k-th largest group maximum: k distinct entries reach it), so a block yields about k
   candidates per query at most, not all its columns. Only ties at that cut can bring more; a
   query for which more than 2k groups or 4k entries pass (a corpus of duplicates) takes its
   exact block top-k instead, ties to the lower rows.
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
        # Groups of GROUP columns, halved while there would be fewer than k of them (the first-block
        # bound needs k group maxima): 32 for k = 1000 in 32768-row blocks.
        self.group = GROUP
        while self.group > 1 and block_rows // self.group < k:
            self.group //= 2
        self._buf = np.empty((self.slice, block_rows), np.float32)
        self._gmax = np.empty((self.slice, block_rows // self.group), np.float32)

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
        """Candidates of ``scores`` [queries s.., block rows] (see the module doc), merged.

        An entry is a candidate when it is above ``above`` (strictly: the running k-th best once
        the lists are full, else ``-inf``, which also drops padding) and at least ``least`` (the
        block's k-th largest group maximum, where that is needed: before the lists are full, or
        for a query that would open more than k groups, as when the corpus improves block by block).
        """
        (n, rows), k, group = scores.shape, self.k, self.group
        ng = rows // group
        if valid < rows:
            scores[:, valid:] = -np.inf
        grouped = scores.reshape(n, group, ng)  # [query, i, j] = column i * ng + j
        gmax = np.max(grouped, axis=1, out=self._gmax[:n])
        above = self.scores[s : s + n, k - 1] if full else np.full(n, -np.inf, np.float32)
        least = np.full(n, -np.inf, np.float32)
        opened = gmax > above[:, None]
        tied = np.zeros(0, np.int64)
        if ng >= k:
            heavy = np.nonzero(np.count_nonzero(opened, axis=1) > k)[0]
            if heavy.size:  # the block's k-th best is at least its k-th largest group maximum
                least[heavy] = np.partition(gmax[heavy], ng - k, axis=1)[:, ng - k]
                opened[heavy] &= gmax[heavy] >= least[heavy, None]
                # more than 2k groups still open: ties at the cut (a corpus of duplicates)
                tied = heavy[np.count_nonzero(opened[heavy], axis=1) > 2 * k]
                opened[tied] = False
        qi, gj = np.nonzero(opened)
        vals = grouped[qi, :, gj]  # [groups opened, group]
        ci, ii = np.nonzero((vals > above[qi, None]) & (vals >= least[qi, None]))
        cand_q, cand_c = qi[ci], ii * ng + gj[ci]  # query, column in the block
        many = np.bincount(cand_q, minlength=n) > 4 * k  # ties at the cut again, in fewer groups
        if many.any():
            keep = ~many[cand_q]
            cand_q, cand_c = cand_q[keep], cand_c[keep]
            tied = np.union1d(tied, np.nonzero(many)[0])
        if tied.size:  # each keeps its exact block top-k, ties to the lower columns
            q2, c2 = _block_topk(scores, tied, k, above, least)
            cand_q, cand_c = np.concatenate([cand_q, q2]), np.concatenate([cand_c, c2])
            order = np.argsort(cand_q, kind="stable")
            cand_q, cand_c = cand_q[order], cand_c[order]
        if cand_q.size == 0:
            return
        cand_v = scores[cand_q, cand_c]
        self._merge(s, cand_q, cand_v, cand_c.astype(np.int64) + offset)

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


def _block_topk(scores, queries, k, above, least, piece=128):
    """``(query, column)`` of each listed query's exact top-k entries of ``scores`` that pass the bounds.

    Ties at the k-th value go to the lower columns. For the rare query whose block holds many
    equal top scores (a corpus of duplicates): O(block rows) per query, ``piece`` queries at a time.
    """
    rows = scores.shape[1]
    out_q, out_c = [], []
    for a in range(0, queries.size, piece):
        qs = queries[a : a + piece]
        x = scores[qs]
        ok = (x > above[qs, None]) & (x >= least[qs, None])
        kth = np.partition(x, rows - k, axis=1)[:, rows - k]
        gt = ok & (x > kth[:, None])
        eq = ok & (x == kth[:, None])
        room = k - np.count_nonzero(gt, axis=1)
        eq &= np.cumsum(eq, axis=1, dtype=np.int32) <= room[:, None]
        i, c = np.nonzero(gt | eq)
        out_q.append(qs[i])
        out_c.append(c)
    return np.concatenate(out_q), np.concatenate(out_c)


def blas_topk(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray, int]], k: int,
              block_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact ``(scores [Q, k], rows [Q, k], rows seen)`` over float32 ``blocks`` of ``block_rows`` rows.

    Lists hold ``-inf`` / ``-1`` past the number of rows seen.
    """
    top = RunningTopK(queries, k, block_rows)
    for offset, block, valid in blocks:
        top.add(offset, block, valid)
    return top.scores, top.rows, top.seen
