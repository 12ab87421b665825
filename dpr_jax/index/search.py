"""Exact maximum-inner-product search: streamed corpus chunks, scored block by block, a running merge.

DPR scores a passage by the dot product of its vector with the question vector and keeps the k best.
Here that is done exactly (no approximation, no quantisation), in float32 by default, by one of two
engines over the same chunk stream (``engine="auto"`` picks by the backend of the mesh's devices, or
JAX's default backend without a mesh):

* The corpus arrives as chunks of a fixed number of rows (the last one padded, its padded rows
  scored ``-inf``), so XLA compiles the step once. A background thread reads the next chunk (row
  ranges of the index's shards, local or on a bucket, or any iterable of arrays) while the current
  one is scored, and at most two chunks are in flight, so a corpus larger than RAM streams through
  bounded memory.
* ``"blas"``, the CPU default (:mod:`dpr_jax.index.blas_search`): each block is scored by NumPy's
  multi-threaded BLAS sgemm for all queries at once, and only scores that can still enter a query's
  top-k (at least the running k-th best) are looked at again, found through column-group maxima
  (one vectorised pass). float16/bfloat16/int8 blocks become float32 once per block, in the reading
  thread. A mesh is ignored here: CPU "devices" share the same cores, which the BLAS already uses.
  Why this path, measured on this project's 2-core AMD EPYC (Zen 4), every figure under load from
  other jobs, so only same-run ratios mean anything: XLA's CPU dot of [1000, 768] x [768, 32768]
  ran at 0.87-0.91x the speed of NumPy's matmul of that shape, which matched a 2048^3 sgemm
  (0.96-1.02x), so the dot is not the problem; ``lax.top_k`` over [256, 32768] runs on one thread
  and took 33 ms, about as long as the matmul of those 256 queries takes on a quiet machine (29 ms
  at 452 GFLOP/s), which is why the XLA path reached only 43% of the sgemm ceiling on a quiet
  machine (issue 12; 69% in our loaded run). The BLAS path's extra work per 32768-row block and
  1,000 queries (group maxima, then a few candidates per query merged) measured 29 ms beside a
  940 ms matmul under heavy load, and the whole search reached 77-93% of the same-run sgemm rate
  in three loaded runs (200K-500K x 768, 1,000 queries, k=100; XLA path 66-76%, faiss
  IndexFlatIP 59-71%; load inflates the XLA path, whose single-threaded top_k loses less to it).
* ``"xla"``, for accelerators (GPU/TPU backends; on any backend when asked for, or for
  ``approx_recall`` or a ``compute_dtype`` other than float32):
  one jitted step per (chunk, wave of query batches): for each batch of the wave, scores =
  q @ chunk.T, the chunk's top-k, then merged into the running top-k by concatenating both
  candidate lists and taking top_k again. Optionally (``topk_group`` > 1) the chunk's top-k first
  keeps only the k groups of ``topk_group`` columns with the largest maxima (exact: see
  :func:`_topk_by_groups`), cheaper than a full-width top_k on some machines.
  The batches of a wave are independent, so on CPU XLA overlaps one batch's top_k (which runs on
  one thread) with the next batch's matmul (which wants every core).
  With a mesh of several devices (:func:`dpr_jax.mesh.make_mesh`) each chunk is split by rows over
  the data axis, queries are replicated, every device takes the top-k of its slice inside
  ``jax.shard_map``, and the per-device lists are merged the same way.

``approx_recall`` swaps each chunk's exact top-k for ``jax.lax.approx_max_k`` (a recall target):
faster on TPU, where it is a partial reduction; on CPU/GPU XLA turns it back into the exact TopK.

Results are global row numbers (corpus order); :meth:`dpr_jax.index.store.Index.id_at` or
:func:`search_index` turns them into passage ids.

``k`` larger than the corpus is clamped: the result has ``min(k, corpus rows)`` columns.
Ties: among exactly equal scores the lower row comes first. The BLAS path sorts candidates by
(score, row); in the XLA path, XLA's CPU ``top_k`` orders equal values by index, every candidate
list is laid out in row order (running list, then the chunk; devices in mesh order), and the tests
check it on 1 and 8 CPU devices (and pass on one GPU); XLA does not promise it for every backend.
The two engines round some float32 scores differently in the last bit (different summation
orders), so on real-valued data they can order two near-tied rows differently; on data whose
scores are exact (the tests) they return identical ids.
Row numbers are int32 on device, so a corpus may hold at most 2**31 - 1 rows.
"""

from __future__ import annotations

import queue
import threading
from functools import lru_cache, partial
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from dpr_jax.errors import DprJaxError
from dpr_jax.index.blas_search import GROUP, as_float32, blas_topk
from dpr_jax.index.store import Index
from dpr_jax.mesh import DATA_AXIS, data_sharding, replicated

DEFAULT_CHUNK_ROWS = 32768
DEFAULT_QUERY_BATCH = 256
DEFAULT_TOPK_GROUP = 1  # grouped top-k off by default: see exact_search
DEFAULT_BATCHES_PER_STEP = 4
BLAS_BLOCK_ROWS = 32768  # CPU path: larger reads are scored in blocks of this many rows (memory)
_MAX_ROWS = 2**31 - 1


# ---------------------------------------------------------------- jitted steps


def _round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n`` (block, chunk and batch sizes)."""
    return -(-int(n) // multiple) * multiple


def _merge(run_v, run_i, v, i, k):
    """Top-k of the running list and a new candidate list (running first, so earlier rows win ties)."""
    all_v = jnp.concatenate([run_v, v], axis=1)
    all_i = jnp.concatenate([run_i, i], axis=1)
    best_v, pos = lax.top_k(all_v, k)
    return best_v, jnp.take_along_axis(all_i, pos, axis=1)


def _topk_by_groups(scores, k, group):
    """Exact ``lax.top_k(scores, k)`` via the ``k`` groups (of ``group`` columns) with the largest maxima.

    Every top-k element lies in one of the k groups whose maximum is largest: an element outside
    them is exceeded (or tied by a lower row) by those k maxima. So the full-width top_k is replaced
    by a max-reduction, a top_k over ``n / group`` maxima and one over ``k * group`` candidates.
    Chosen groups are put back in column order, so ties still go to the lower column.
    """
    n_q, n = scores.shape
    grouped = scores.reshape(n_q, n // group, group)
    _, best_groups = lax.top_k(grouped.max(axis=2), k)
    best_groups = jnp.sort(best_groups, axis=1)
    cand = jnp.take_along_axis(grouped, best_groups[:, :, None], axis=1).reshape(n_q, k * group)
    v, pos = lax.top_k(cand, k)
    return v, jnp.take_along_axis(best_groups, pos // group, axis=1) * group + pos % group


def uses_groups(n: int, k: int, group: int) -> bool:
    """Whether a top-k over ``n`` columns goes through groups (worth it when groups far outnumber k)."""
    return group > 1 and n % group == 0 and n // group >= 4 * k


def _score_block(q, block, first_row, valid, k_block, compute_dtype, group, recall=None):
    """Top-``k_block`` (scores, rows) of ``q @ block.T``; rows at or past ``valid`` score ``-inf``.

    ``recall``: use ``lax.approx_max_k`` with this recall target instead of the exact top-k.
    """
    scores = jnp.dot(q.astype(compute_dtype), block.astype(compute_dtype).T,
                     precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    local = first_row + jnp.arange(block.shape[0], dtype=jnp.int32)
    scores = jnp.where(local[None, :] < valid, scores, -jnp.inf)
    if recall is not None:
        v, i = lax.approx_max_k(scores, k_block, recall_target=recall)
    elif uses_groups(scores.shape[1], k_block, group):
        v, i = _topk_by_groups(scores, k_block, group)
    else:
        v, i = lax.top_k(scores, k_block)
    return v, i + first_row


def _score_wave(q, block, first_row, valid, k_block, compute_dtype, group, recall=None):
    """:func:`_score_block` for each query batch of ``q`` [W, qb, D], stacked to [W, qb, k_block].

    The W batches are independent, so XLA can run one batch's (single-threaded) top_k while
    another batch's matmul uses the remaining cores.
    """
    out = [_score_block(q[w], block, first_row, valid, k_block, compute_dtype, group, recall)
           for w in range(q.shape[0])]
    return jnp.stack([v for v, _ in out]), jnp.stack([i for _, i in out])


def _merge_wave(run_v, run_i, v, i, k):
    out = [_merge(run_v[w], run_i[w], v[w], i[w], k) for w in range(run_v.shape[0])]
    return jnp.stack([a for a, _ in out]), jnp.stack([b for _, b in out])


@partial(jax.jit, static_argnames=("k", "k_block", "compute_dtype", "group", "recall"))
def _step_single(run_v, run_i, q, block, offset, valid, *, k, k_block, compute_dtype, group, recall=None):
    v, i = _score_wave(q, block, jnp.int32(0), valid, k_block, compute_dtype, group, recall)
    return _merge_wave(run_v, run_i, v, i + offset, k)


@lru_cache(maxsize=32)
def _make_sharded_step(mesh, k, k_block, compute_dtype, group, recall=None):
    """Per-device top-k of its row slice (shard_map), then the merge, jitted; running lists replicated."""

    def local_topk(q, block, valid):
        first = lax.axis_index(DATA_AXIS).astype(jnp.int32) * block.shape[0]
        return _score_wave(q, block, first, valid, k_block, compute_dtype, group, recall)

    sharded = jax.shard_map(local_topk, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                            out_specs=(P(None, None, DATA_AXIS), P(None, None, DATA_AXIS)))

    def step(run_v, run_i, q, block, offset, valid):
        v, i = sharded(q, block, valid)
        return _merge_wave(run_v, run_i, v, i + offset, k)

    rep = replicated(mesh)
    return jax.jit(step, out_shardings=(rep, rep))


# ---------------------------------------------------------------- chunk streaming


def _fixed_blocks(chunks, chunk_rows: int, dim: int, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[int, np.ndarray, int]]:
    """Re-cut any chunk source into ``(first row, block [chunk_rows, dim], valid rows)``.

    Blocks that already have ``chunk_rows`` rows pass through without a copy; the last block is
    zero-padded (``valid`` says how many rows are real). An index or array is read from row
    ``start`` to ``stop`` only; rows are numbered from 0 at ``start``.
    """
    if isinstance(chunks, Index):
        source: Iterable[np.ndarray] = (c for _, c in chunks.iter_chunks(chunk_rows, start, stop))
    elif isinstance(chunks, np.ndarray):
        if chunks.ndim != 2:
            raise DprJaxError(f"corpus array must be 2-D [n, dim], got shape {chunks.shape}")
        stop = chunks.shape[0] if stop is None else stop
        source = (chunks[s : min(s + chunk_rows, stop)] for s in range(start, stop, chunk_rows))
    else:
        source = chunks
    pending: list[np.ndarray] = []
    have = 0
    offset = 0
    for chunk in source:
        if not isinstance(chunk, jax.Array):  # a corpus already on the device stays there (no host copy)
            chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != dim:
            raise DprJaxError(f"corpus chunk has shape {chunk.shape}; expected [rows, {dim}] to match the queries")
        if offset + have + chunk.shape[0] > _MAX_ROWS:
            raise DprJaxError(f"corpus has more than {_MAX_ROWS} rows; split it into several indexes")
        if not pending and chunk.shape[0] == chunk_rows:
            yield offset, chunk, chunk_rows
            offset += chunk_rows
            continue
        pos = 0
        while pos < chunk.shape[0]:
            take = min(chunk_rows - have, chunk.shape[0] - pos)
            pending.append(chunk[pos : pos + take])
            have += take
            pos += take
            if have == chunk_rows:
                yield offset, np.concatenate(pending), chunk_rows
                offset += chunk_rows
                pending, have = [], 0
    if have:
        tail = np.concatenate(pending)
        block = np.zeros((chunk_rows, dim), dtype=tail.dtype)
        block[:have] = tail
        yield offset, block, have


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead (disk reads overlap scoring)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # re-raised in the consumer
            q.put((done, e))

    thread = threading.Thread(target=worker, name="dpr-jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue, then let it end
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)


def _corpus_rows(chunks) -> int | None:
    if isinstance(chunks, Index):
        return chunks.count
    if isinstance(chunks, np.ndarray):
        return chunks.shape[0]
    return None


# ---------------------------------------------------------------- public API


def check_queries(queries, k) -> np.ndarray:
    """``queries`` as an array, checked: non-empty 2-D, finite; ``k`` a positive integer."""
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[0] == 0:
        raise DprJaxError(f"queries must be a non-empty 2-D array [Q, dim], got shape {queries.shape}")
    if not np.all(np.isfinite(queries)):
        raise DprJaxError("queries contain NaN or infinite values")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise DprJaxError(f"k must be a positive integer, got {k!r}")
    return queries


def exact_search(
    queries: np.ndarray,
    chunks,
    k: int,
    *,
    mesh=None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    query_batch: int = DEFAULT_QUERY_BATCH,
    compute_dtype=jnp.float32,
    topk_group: int = DEFAULT_TOPK_GROUP,
    batches_per_step: int = DEFAULT_BATCHES_PER_STEP,
    approx_recall: float | None = None,
    progress: bool = False,
    row_range: tuple[int, int] | None = None,
    engine: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search of ``queries`` [Q, D] over a streamed corpus.

    ``chunks``: an :class:`~dpr_jax.index.store.Index`, a 2-D array, or any iterable of 2-D arrays
    (rows numbered consecutively across them; ``jax.Array`` chunks of exactly ``chunk_rows`` rows
    are scored where they are, without a round trip through host memory). ``mesh``: a mesh from
    :func:`dpr_jax.mesh.make_mesh` to split each chunk's rows over its devices (``chunk_rows`` is
    rounded up to a multiple of the device count). ``query_batch`` bounds the score matrix to
    ``query_batch x chunk_rows`` floats per step. ``compute_dtype``: the dtype of the matmul inputs
    (float32 default: exact for float16 and float32 shards; scores are accumulated in float32, at
    ``Precision.HIGHEST`` so GPUs/TPUs do not drop to TF32/bfloat16 passes). ``topk_group``: column
    group size of the two-stage top-k (1, the default = one full-width ``lax.top_k``; same results
    either way). Measured on 2 CPU cores, 1,000 queries x 32,768-row chunks: 16 cost 6% more CPU
    time on an AMD EPYC (Zen 4) and saved 15-19% of wall time on an Intel Xeon; try it per machine.
    ``batches_per_step``: query batches scored per jitted call (a "wave"; queries are split into
    equal batches of at most ``query_batch``, their count rounded up to a multiple of the wave).
    ``row_range=(start, stop)``: score only those rows of an index or array (one host's part in
    :mod:`dpr_jax.index.multihost`); only they are read, and row numbers stay global.
    ``engine``: ``"auto"`` (``"blas"`` on the CPU backend unless ``approx_recall`` or a non-float32
    ``compute_dtype`` is asked for, else ``"xla"``), ``"blas"`` or ``"xla"`` (see the module
    docstring). ``mesh``, ``query_batch``, ``topk_group`` and ``batches_per_step`` steer the XLA
    path only; the BLAS path scores all queries per block (in slices bounding the score buffer to
    128 MiB), reads ``chunk_rows`` (rounded up to a multiple of its block) at a time and scores
    them in float32 blocks of at most :data:`BLAS_BLOCK_ROWS` rows (a multiple of 64).
    ``approx_recall``: a recall target in (0, 1) to take each chunk's top-k with
    ``jax.lax.approx_max_k`` instead (TPU-optimised: on TPU a partial reduction that keeps about that
    fraction of the true top-k; on CPU and GPU, JAX 0.10.2 lowers it to the same exact ``TopK`` as
    ``lax.top_k``, so results there are exact and speed unchanged). The running merge stays exact.
    XLA path only.

    Returns ``(scores float32 [Q, k'], rows int64 [Q, k'])`` best first, with ``k' = min(k, rows in
    the corpus)``. Ties: the lower row first (see the module docstring). Queries are checked to be
    finite; corpus vectors are not (that would cost a pass over the corpus), and a NaN in them
    makes the result unspecified.
    """
    queries = check_queries(queries, k)
    if chunk_rows < 1 or query_batch < 1 or batches_per_step < 1:
        raise DprJaxError("chunk_rows, query_batch and batches_per_step must be positive")
    if approx_recall is not None:
        if not 0 < approx_recall < 1:
            raise DprJaxError(f"approx_recall must lie strictly between 0 and 1, got {approx_recall!r}")
        approx_recall = float(approx_recall)
    engine = choose_engine(engine, mesh, approx_recall, compute_dtype)
    k = int(k)
    num_q, dim = queries.shape
    if isinstance(chunks, Index) and chunks.dim != dim:
        raise DprJaxError(f"queries have dim {dim} but the index at {chunks.directory} has dim {chunks.dim}")

    n_dev = 1 if mesh is None or engine == "blas" else mesh.devices.size
    chunk_rows = _round_up(chunk_rows, n_dev)
    total = _corpus_rows(chunks)
    start, stop = 0, None
    if row_range is not None:
        if total is None:
            raise DprJaxError("row_range needs an Index or an array as the corpus")
        start, stop = (int(x) for x in row_range)
        if not 0 <= start <= stop <= total:
            raise DprJaxError(f"row range {start}-{stop} is not within the corpus's {total} rows")
        total = stop - start
    if total is not None:  # no point in a block bigger than the corpus (one compile, less padding)
        chunk_rows = min(chunk_rows, max(n_dev, _round_up(total, n_dev)))
    if engine == "blas":  # reads of chunk_rows, scored in blocks of at most BLAS_BLOCK_ROWS
        block_rows = min(_round_up(chunk_rows, GROUP), BLAS_BLOCK_ROWS)
        chunk_rows = _round_up(chunk_rows, block_rows)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="rows", desc="search", leave=False)
    blocks = _fixed_blocks(chunks, chunk_rows, dim, start, stop)
    if engine == "blas":
        blocks = _float32_blocks(blocks, block_rows)
    blocks = _prefetch(blocks)
    try:
        counted = _counted(blocks, bar)
        if engine == "blas":
            scores, rows, seen = blas_topk(queries, counted, k, block_rows)
        else:
            scores, rows, seen = _xla_topk(queries, counted, k, mesh=mesh, chunk_rows=chunk_rows,
                                           query_batch=query_batch, compute_dtype=compute_dtype,
                                           topk_group=topk_group, batches_per_step=batches_per_step,
                                           approx_recall=approx_recall)
    finally:
        blocks.close()
        if bar is not None:
            bar.close()
    if seen == 0:
        raise DprJaxError("the corpus is empty")
    kept = min(k, seen)
    return scores[:, :kept], rows[:, :kept] + start


def choose_engine(engine: str, mesh, approx_recall, compute_dtype) -> str:
    """``"blas"`` or ``"xla"`` for :func:`exact_search`'s ``engine`` (``"auto"``: BLAS on the CPU backend)."""
    if engine not in ("auto", "blas", "xla"):
        raise DprJaxError(f"engine must be 'auto', 'blas' or 'xla', got {engine!r}")
    blas_ok = approx_recall is None and np.dtype(compute_dtype) == np.float32
    if engine == "auto":
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        return "blas" if platform == "cpu" and blas_ok else "xla"
    if engine == "blas" and not blas_ok:
        raise DprJaxError("engine='blas' computes in float32 and exactly: it takes neither compute_dtype "
                          "other than float32 nor approx_recall")
    return engine


def _float32_blocks(blocks, block_rows: int):
    """Cut ``(offset, chunk, valid)`` into float32 blocks of ``block_rows`` (dividing the chunk's rows).

    Runs in the reading thread, so float16/bfloat16/int8 values become float32 there, once per
    block; blocks of nothing but padding are dropped; float32 chunks are cut without copies.
    """
    for offset, chunk, valid in blocks:
        for j in range(0, valid, block_rows):
            yield offset + j, as_float32(chunk[j : j + block_rows]), min(block_rows, valid - j)


def _counted(blocks, bar):
    """Pass blocks through, advancing the progress bar by each block's real rows."""
    for item in blocks:
        yield item
        if bar is not None:
            bar.update(item[2])


def _xla_topk(queries, blocks, k, *, mesh, chunk_rows, query_batch, compute_dtype, topk_group,
              batches_per_step, approx_recall):
    """The JAX path: ``(scores [Q, k], rows [Q, k] int64, rows seen)`` over ``(offset, block, valid)``."""
    num_q, dim = queries.shape
    n_dev = 1 if mesh is None else mesh.devices.size
    k_block = min(k, chunk_rows // n_dev)
    # Query batches of (nearly) equal size, grouped in waves of ``batches_per_step`` per jitted call.
    n_batches = -(-num_q // query_batch)
    wave = min(batches_per_step, n_batches)
    n_batches = _round_up(n_batches, wave)
    qb = -(-num_q // n_batches)
    q_pad = np.zeros((n_batches * qb, dim), dtype=np.float32)
    q_pad[:num_q] = queries
    q_pad = q_pad.reshape(n_batches // wave, wave, qb, dim)
    if mesh is None:
        step = partial(_step_single, k=k, k_block=k_block, compute_dtype=compute_dtype, group=topk_group,
                       recall=approx_recall)
        put_q = put_state = put_block = jax.device_put
    else:
        step = _make_sharded_step(mesh, k, k_block, compute_dtype, topk_group, approx_recall)
        rep, rows_sharded = replicated(mesh), data_sharding(mesh)
        put_q = put_state = lambda x: jax.device_put(x, rep)
        put_block = lambda x: jax.device_put(x, rows_sharded)
    q_dev = [put_q(w) for w in q_pad]
    state = [(put_state(np.full((wave, qb, k), -np.inf, np.float32)), put_state(np.full((wave, qb, k), -1, np.int32)))
             for _ in q_dev]
    seen = 0
    for offset, block, valid in blocks:
        prev = state
        block_dev = put_block(block)
        off, val = np.int32(offset), np.int32(valid)
        state = [step(rv, ri, q, block_dev, off, val) for (rv, ri), q in zip(state, q_dev)]
        jax.block_until_ready(prev)  # at most two chunks in flight: bounded memory
        seen = offset + valid
    scores = np.concatenate([np.asarray(v).reshape(-1, k) for v, _ in state])[:num_q]
    rows = np.concatenate([np.asarray(i).reshape(-1, k) for _, i in state])[:num_q].astype(np.int64)
    return scores, rows, seen


def search_index(index: Index, queries: np.ndarray, k: int, **kwargs) -> tuple[np.ndarray, list[list[str]]]:
    """:func:`exact_search` over an opened index, returning ``(scores [Q, k'], passage ids [Q][k'])``."""
    scores, rows = exact_search(queries, index, k, **kwargs)
    return scores, index.id_at(rows)
