"""Approximate (faiss) indexes built from a dense index's shards, for serving past memory and at speed.

Exact search (:mod:`dpr_jax.index.search`) reads every vector for every batch of questions. To
serve a large corpus from a CPU host, :func:`build_ann` builds one of faiss's standard indexes from
the same shards, inner-product metric (DPR scores by ``q . p``):

=========  ===================================  ==========================================
type       faiss factory string                 memory per passage (dim d)
=========  ===================================  ==========================================
hnsw       ``HNSW{hnsw_m},Flat``                 4d + ~8 hnsw_m bytes (graph); no training
ivf-flat   ``IVF{nlist},Flat``                   4d + 8 bytes
ivf-pq     ``IVF{nlist},PQ{pq_m}x{nbits}``        pq_m * nbits / 8 + 8 bytes
sq8        ``SQ8`` (``IVF{nlist},SQ8`` w/ nlist)  d bytes (+ 8 with IVF)
factory    any faiss factory string (OPQ, fast-scan PQ with refine, ...)
=========  ===================================  ==========================================

How it is built, memory bounded: the quantisers are trained on ``train_size`` rows drawn uniformly
without replacement (seeded) and read from the memory-mapped shards (only their pages), then the
corpus is added ``chunk_rows`` rows at a time from :meth:`~dpr_jax.index.store.Index.iter_chunks`.
Beyond the index itself, the process holds the training sample and one chunk (float32).

Where it goes: ``INDEX/ann.faiss`` (default) and its description ``INDEX/ann.json``: settings, the
search defaults, the faiss version and a fingerprint of the shards (size and modification time of
``meta.json`` and every shard file). Both are written under temporary names and renamed, the
``.json`` last (its presence marks a finished build; it also records the ``.faiss`` size).
:func:`open_ann` refuses an index whose shards changed since: rebuild it (``dpr-jax index build``)
or search with ``--exact``. Row numbers in faiss are the global rows of the shards (added in order),
so passage ids, run files, ``evaluate`` and ``hybrid`` are exactly as for exact search.

``dim``: build over the first ``dim`` coordinates (Matryoshka truncation, see
:mod:`dpr_jax.index.truncate`); questions are then cut the same way at search time.

faiss is an optional dependency (``pip install 'dpr-jax[faiss]'``). On CUDA machines the faiss-gpu
builds provide the same Python module and read the same files; this module uses the CPU index API.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dpr_jax import storage
from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.index.store import META_NAME, Index, scale_path
from dpr_jax.index.truncate import check_dim

ANN_TYPES = ("hnsw", "ivf-flat", "ivf-pq", "sq8", "factory")
DEFAULT_NAME = "ann.faiss"
FORMAT_VERSION = 1
DEFAULT_CHUNK_ROWS = 32768
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128
DEFAULT_NBITS = 8
MAX_DEFAULT_TRAIN = 1_000_000


def import_faiss():
    """The faiss module, or one clear error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise DprJaxError("faiss is not installed: pip install 'dpr-jax[faiss]' (faiss-cpu; on CUDA machines "
                          "a faiss-gpu build works too), or search with --exact") from None
    return faiss


def default_path(index_dir) -> Path:
    """Where ``index build`` writes, and ``search`` looks, by default: ``INDEX/ann.faiss``."""
    return storage.as_path(index_dir) / DEFAULT_NAME


def sidecar(path) -> Path:
    """The description file of an ANN index: ``ann.faiss`` -> ``ann.json``."""
    return storage.as_path(path).with_suffix(".json")


@dataclass
class AnnSettings:
    """What to build. ``None`` fields get defaults from the corpus size (:meth:`resolved`)."""

    type: str
    nlist: int | None = None
    pq_m: int | None = None
    nbits: int = DEFAULT_NBITS
    hnsw_m: int = DEFAULT_HNSW_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    factory: str | None = None
    train_size: int | None = None
    dim: int | None = None
    seed: int = 0
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    nprobe: int | None = None  # search defaults stored with the index
    ef_search: int = DEFAULT_EF_SEARCH

    def resolved(self, count: int, source_dim: int) -> AnnSettings:
        """A copy with every default filled in and every value checked (before any work is done)."""
        s = AnnSettings(**asdict(self))
        if s.type not in ANN_TYPES:
            raise DprJaxError(f"--type must be one of {', '.join(ANN_TYPES)}, not {s.type!r}")
        if (s.type == "factory") != bool(s.factory):
            raise DprJaxError("--factory STRING goes with --type factory (and only with it)")
        if count < 1:
            raise DprJaxError("the index is empty")
        s.dim = check_dim(s.dim, source_dim, f"the index holds {source_dim}-d vectors")
        for name in ("hnsw_m", "ef_construction", "chunk_rows", "ef_search"):
            if getattr(s, name) < 1:
                raise DprJaxError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
        uses_ivf = s.type in ("ivf-flat", "ivf-pq") or (s.type == "sq8" and s.nlist)
        if uses_ivf:
            s.nlist = s.nlist or default_nlist(count)
            if not 1 <= s.nlist <= count:
                raise DprJaxError(f"--nlist must be between 1 and the corpus size ({count}), got {s.nlist}")
        elif s.type != "factory" and s.nlist:
            raise DprJaxError(f"--nlist does not apply to --type {s.type}")
        if s.type == "ivf-pq":
            s.pq_m = s.pq_m or default_pq_m(s.dim)
            if s.pq_m < 1 or s.dim % s.pq_m:
                raise DprJaxError(f"--pq-m must divide the dimension {s.dim}, got {s.pq_m}")
            if not 1 <= s.nbits <= 16:
                raise DprJaxError(f"--nbits must be between 1 and 16, got {s.nbits}")
        elif s.pq_m:
            raise DprJaxError(f"--pq-m does not apply to --type {s.type}")
        return s

    def factory_string(self) -> str:
        if self.type == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        if self.type == "ivf-flat":
            return f"IVF{self.nlist},Flat"
        if self.type == "ivf-pq":
            return f"IVF{self.nlist},PQ{self.pq_m}x{self.nbits}np"  # np: no polysemous training (10x slower, unused)
        if self.type == "sq8":
            return f"IVF{self.nlist},SQ8" if self.nlist else "SQ8"
        return self.factory


def default_nlist(count: int) -> int:
    """About 4 sqrt(N) inverted lists (a power of two), at most N / 39 (faiss wants >= 39 points per list)."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return max(1, min(target, count // 39))


def default_pq_m(dim: int) -> int:
    """dim / 8 sub-quantisers (1 byte per 8 dimensions at 8 bits), or the largest divisor below it."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def default_train_size(count: int, nlist: int | None) -> int:
    """Rows to train on: 64 per inverted list, at least 65,536 (PQ codebooks want ~40 x 256), at most 1M."""
    return min(count, min(MAX_DEFAULT_TRAIN, max(64 * (nlist or 0), 65_536)))


def shards_fingerprint(index: Index) -> dict:
    """``{file name: fingerprint}`` of ``meta.json`` and every shard file of ``index`` (size and
    modification time locally, size and generation on a bucket: :func:`dpr_jax.storage.fingerprint`)."""
    paths = [index.directory / META_NAME]
    for i, (npy, ids) in enumerate(index.shards):
        paths += [npy, ids] + ([scale_path(index.directory, i)] if index.dtype_name == "int8" else [])
    return {p.name: storage.fingerprint(p) for p in paths}


def _set_search_params(faiss, fidx, nprobe: int | None, ef_search: int | None) -> None:
    """nprobe / efSearch on whatever the factory string built (wrappers included)."""
    ps = faiss.ParameterSpace()
    if nprobe is not None and _ivf(faiss, fidx) is not None:
        ps.set_index_parameter(fidx, "nprobe", int(nprobe))
    if ef_search is not None and _hnsw(faiss, fidx) is not None:
        ps.set_index_parameter(fidx, "efSearch", int(ef_search))


def _ivf(faiss, fidx):
    try:
        return faiss.extract_index_ivf(fidx)
    except RuntimeError:
        return None


def _hnsw(faiss, fidx):
    inner = faiss.downcast_index(fidx.index) if isinstance(fidx, faiss.IndexPreTransform) else fidx
    inner = faiss.downcast_index(inner)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def _float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def build_ann(index: Index, settings: AnnSettings, out: str | Path | None = None, *, progress: bool = True) -> dict:
    """Build a faiss index over ``index``'s shards and write it to ``out`` (default ``INDEX/ann.faiss``).

    Returns the description written beside it (``ann.json``). Memory: the index, the training
    sample (``train_size x dim`` float32) and one chunk; never the whole corpus.
    """
    faiss = import_faiss()
    out = storage.as_path(out) if out else default_path(index.directory)
    s = settings.resolved(index.count, index.dim)
    view = index.truncated(s.dim)  # readers cut the vectors when --dim is below the stored width
    factory = s.factory_string()
    try:
        fidx = faiss.index_factory(s.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise DprJaxError(f"faiss cannot build {factory!r} for {s.dim}-d vectors: {str(e).splitlines()[0]}") from None
    hnsw = _hnsw(faiss, fidx)
    if hnsw is not None:
        hnsw.efConstruction = s.ef_construction
    ivf = _ivf(faiss, fidx)
    if ivf is not None:
        s.nlist = int(ivf.nlist)
        if s.nprobe is None:
            s.nprobe = min(s.nlist, max(8, s.nlist // 32))
    if fidx.is_trained:
        s.train_size = 0
    else:
        s.train_size = s.train_size or default_train_size(index.count, s.nlist)
        if not 1 <= s.train_size <= index.count:
            raise DprJaxError(f"--train-size must be between 1 and the corpus size ({index.count}), got {s.train_size}")
    fingerprint = shards_fingerprint(index)

    t0 = time.perf_counter()
    log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    if s.train_size:
        log(f"index build: training {factory} on {s.train_size:,} sampled rows "
            f"({s.train_size * s.dim * 4 / 2**20:,.0f} MiB in float32)")
        rows = np.sort(np.random.default_rng(s.seed).choice(index.count, size=s.train_size, replace=False))
        sample = view.vectors_at(rows)
        fidx.train(sample)
        del sample
    from tqdm.auto import tqdm

    with tqdm(total=index.count, unit="rows", desc=f"add to {s.type}", disable=not progress, file=sys.stderr) as bar:
        for _, chunk in view.iter_chunks(s.chunk_rows):
            fidx.add(_float32(chunk))
            bar.update(chunk.shape[0])
    if fidx.ntotal != index.count:
        raise DprJaxError(f"faiss holds {fidx.ntotal} vectors after adding {index.count}")
    build_s = time.perf_counter() - t0

    desc_path = sidecar(out)
    if desc_path.exists():  # un-finish the old build first, so a crash can never pair old and new files
        desc_path.unlink()
    with storage.atomic_path(out) as tmp:  # a local temporary file (uploaded for a URL)
        faiss.write_index(fidx, str(tmp))
    desc = {
        "format": FORMAT_VERSION, "faiss_version": faiss.__version__, "factory": factory, "metric": "inner_product",
        "settings": asdict(s), "dim": s.dim, "source_dim": index.dim,
        "normalize_truncated": bool(view.cut and view.cut[1]),
        "count": index.count, "build_seconds": round(build_s, 3), "faiss_bytes": storage.file_size(out),
        "shards": fingerprint,
    }
    storage.write_json(desc_path, desc)
    return desc


@dataclass
class AnnIndex:
    """An opened faiss index checked against the shards it was built from."""

    path: Path
    desc: dict
    index: object  # faiss.Index

    @property
    def dim(self) -> int:
        return self.desc["dim"]

    @property
    def kind(self) -> str:
        return self.desc["settings"]["type"]

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None,
               params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [Q, k'], rows int64 [Q, k'])``, best first, ``k' = min(k, count)``.

        A row of -1 means faiss found fewer than ``k`` candidates (too small ``nprobe``); such
        fillers come last. ``nprobe`` / ``ef_search`` default to the values stored at build time;
        ``ef_search`` is raised to ``k`` (HNSW returns at most ``efSearch`` results). ``params``:
        any other faiss ``ParameterSpace`` setting by name (e.g. ``{"k_factor_rf": 4}``: a refine
        stage re-scores 4k candidates).
        """
        faiss = import_faiss()
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise DprJaxError(f"queries have shape {queries.shape}; {self.path} holds {self.dim}-d vectors")
        if not np.all(np.isfinite(queries)):
            raise DprJaxError("queries contain NaN or infinite values")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise DprJaxError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), self.desc["count"])
        s = self.desc["settings"]
        nprobe = s.get("nprobe") if nprobe is None else nprobe
        if nprobe is not None and not 1 <= nprobe:
            raise DprJaxError(f"--nprobe must be positive, got {nprobe}")
        if nprobe is not None and s.get("nlist"):
            nprobe = min(nprobe, s["nlist"])
        ef = max(k, s.get("ef_search", DEFAULT_EF_SEARCH) if ef_search is None else ef_search)
        if ef_search is not None and ef_search < 1:
            raise DprJaxError(f"--ef-search must be positive, got {ef_search}")
        _set_search_params(faiss, self.index, nprobe, ef)
        for name, value in (params or {}).items():
            try:
                faiss.ParameterSpace().set_index_parameter(self.index, name, float(value))
            except (RuntimeError, ValueError, TypeError) as e:
                detail = str(e).splitlines()[0].rsplit("set_index_parameter:", 1)[-1].strip()[:200]
                raise DprJaxError(f"faiss parameter {name}={value!r} does not apply to {self.desc['factory']} "
                                  f"(faiss: {detail})") from None
        scores, rows = self.index.search(_float32(queries), k)
        return scores.astype(np.float32), rows.astype(np.int64)


def rerank_exact(index: Index, queries: np.ndarray, rows: np.ndarray, k: int, *,
                 batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ``rows`` [Q, K] exactly (``q . p`` in float32 from the shards) and keep the best ``k``.

    An approximate index ranks by approximate scores (PQ/SQ codes); reading the K candidates'
    stored vectors back from the memory-mapped shards gives exact scores and order among them, so
    recall@k becomes the approximate index's recall@K of the true top-k. The shards stay on disk:
    each question reads K vectors (K x dim x bytes per value), ``batch`` questions at a time, and
    the pages leave the process once read (local shards: a shard on a bucket is read whole per
    batch, so keep the shards of a reranked index on local disk). A
    :meth:`~dpr_jax.index.store.Index.truncated` view
    re-scores in its own dimension. Rows of -1 (no candidate) stay last. Returns ``(scores
    float32, rows int64)`` [Q, min(k, K)], best first, ties to the lower row.
    """
    queries = np.asarray(queries, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    k = min(k, rows.shape[1])
    out_s = np.full((rows.shape[0], k), -np.inf, np.float32)
    out_r = np.full((rows.shape[0], k), -1, np.int64)
    for start in range(0, rows.shape[0], batch):
        cand = rows[start:start + batch]
        uniq = np.unique(cand[cand >= 0])
        vecs = index.vectors_at(uniq)
        for j, (q, row) in enumerate(zip(queries[start:start + batch], cand)):
            valid = row >= 0
            scores = np.full(row.shape, -np.inf, np.float32)
            scores[valid] = vecs[np.searchsorted(uniq, row[valid])] @ q
            order = np.lexsort((np.where(valid, row, np.iinfo(np.int64).max), -scores))[:k]
            out_s[start + j], out_r[start + j] = scores[order], np.where(valid[order], row[order], -1)
    return out_s, out_r


def open_ann(path, index: Index) -> AnnIndex:
    """Open the faiss index at ``path`` after checking it was finished and built from ``index`` as it is now."""
    faiss = import_faiss()
    path = storage.as_path(path)
    desc_path = sidecar(path)
    rebuild = f"rebuild it (dpr-jax index build --index {index.directory} ...) or search with --exact"
    if not path.is_file() or not desc_path.is_file():
        missing = path if not path.is_file() else desc_path
        raise DprJaxError(f"{missing}: missing (the ANN index was not built, or its build did not finish); {rebuild}")
    try:
        with storage.open_read(desc_path) as f:
            desc = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(desc_path, f"not valid JSON: {e}") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT_VERSION:
        raise InputError(desc_path, f"not an ANN description of format {FORMAT_VERSION}; {rebuild}")
    if desc.get("faiss_bytes") != storage.file_size(path):
        raise DprJaxError(f"{path} is not the file {desc_path.name} describes (size differs); {rebuild}")
    built, now = desc.get("shards", {}), shards_fingerprint(index)
    changed = sorted(n for n in set(built) | set(now) if built.get(n) != now.get(n))
    if changed:
        what = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise DprJaxError(f"{path} is stale: the shards changed since it was built ({what}); {rebuild} "
                          "(copying the directory without keeping modification times also counts as a change)")
    fidx = faiss.read_index(str(storage.cached_copy(path)))  # faiss reads local files only
    if fidx.ntotal != index.count or fidx.d != desc["dim"]:
        raise DprJaxError(f"{path} holds {fidx.ntotal} x {fidx.d} vectors but should hold "
                          f"{index.count} x {desc['dim']}; {rebuild}")
    return AnnIndex(path, desc, fidx)
