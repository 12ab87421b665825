"""The on-disk dense index: passage vectors in ``.npy`` shards, their ids beside them, one meta file.

Layout of an index directory::

    INDEX/shard-00000.npy   float16 or float32 [n, dim], row i is the vector of line i of .ids
    INDEX/shard-00000.ids   one passage id per line, same order (UTF-8, '\\n'-terminated)
    INDEX/meta.json         model, pooling, dim, dtype, count, num_shards (+ free-form fields)

Why this shape: plain ``.npy`` is readable from any tool and can be memory-mapped, so search streams
a corpus of any size through bounded memory; shards let encoding resume after a crash. Each file is
written to a temporary name and renamed, the ``.ids`` file last: a shard counts as finished exactly
when its ``.ids`` exists (:func:`shard_done`), so an encoder killed mid-shard redoes only that shard.

Rows are numbered globally in shard order (shard 0's rows first); :meth:`Index.id_at` maps global
rows, as returned by :func:`dpr_jax.index.search.exact_search`, back to passage ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.io_utils import atomic_open, atomic_path, write_json

META_NAME = "meta.json"
SUPPORTED_DTYPES = ("float16", "float32")
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.ids$")


def shard_paths(index_dir, shard_no: int) -> tuple[Path, Path]:
    """The ``(vectors .npy, ids)`` paths of shard ``shard_no``."""
    base = Path(index_dir) / f"shard-{shard_no:05d}"
    return base.with_suffix(".npy"), base.with_suffix(".ids")


def write_shard(index_dir, shard_no: int, vectors: np.ndarray, ids: Sequence[str]) -> None:
    """Write one shard atomically: vectors first, then ids (whose presence marks the shard done).

    ``vectors`` must be a 2-D float16/float32 array with one row per id; ids must be non-empty and
    free of line breaks, since the ids file holds one per line.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise DprJaxError(f"shard {shard_no}: vectors must be 2-D [n, dim], got shape {vectors.shape}")
    if vectors.dtype.name not in SUPPORTED_DTYPES:
        raise DprJaxError(f"shard {shard_no}: vectors dtype {vectors.dtype} is not one of {SUPPORTED_DTYPES}")
    if len(ids) != vectors.shape[0]:
        raise DprJaxError(f"shard {shard_no}: {vectors.shape[0]} vectors but {len(ids)} ids")
    for pid in ids:
        if not pid or "\n" in pid or "\r" in pid:
            raise DprJaxError(f"shard {shard_no}: passage id {pid!r} is empty or contains a line break")
    npy_path, ids_path = shard_paths(index_dir, shard_no)
    if ids_path.exists():  # re-writing a finished shard: un-finish it first so a crash can't mix versions
        ids_path.unlink()
    with atomic_path(npy_path) as tmp:
        with open(tmp, "wb") as f:  # a file object, so np.save does not append ".npy" to the temp name
            np.save(f, np.ascontiguousarray(vectors), allow_pickle=False)
    with atomic_open(ids_path) as f:
        f.writelines(f"{pid}\n" for pid in ids)


def shard_done(index_dir, shard_no: int) -> bool:
    """True when shard ``shard_no`` was completely written (both files, ids renamed last)."""
    npy_path, ids_path = shard_paths(index_dir, shard_no)
    return ids_path.is_file() and npy_path.is_file()


def read_shard_ids(index_dir, shard_no: int) -> list[str]:
    """The passage ids of one finished shard, in row order."""
    return _read_ids(shard_paths(index_dir, shard_no)[1])


def write_meta(index_dir, **fields) -> None:
    """Write ``meta.json`` atomically (model, pooling, dim, dtype, count, num_shards, anything else)."""
    write_json(Path(index_dir) / META_NAME, fields)


def read_meta(index_dir) -> dict:
    """Read ``meta.json``; a clear error when the directory is not a dense index."""
    index_dir = Path(index_dir)
    path = index_dir / META_NAME
    if not index_dir.is_dir():
        raise DprJaxError(f"{index_dir}: not a directory (expected a dense index written by dpr-jax encode)")
    if not path.is_file():
        raise DprJaxError(f"{index_dir}: not a dense index (no {META_NAME}; was encoding finished?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise InputError(path, "expected a JSON object")
    for key in ("dim", "dtype", "count", "num_shards"):
        if key not in meta:
            raise InputError(path, "missing", field=key)
    if meta["dtype"] not in SUPPORTED_DTYPES:
        raise InputError(path, f"{meta['dtype']!r} is not one of {SUPPORTED_DTYPES}", field="dtype")
    for key in ("dim", "count", "num_shards"):
        if not isinstance(meta[key], int) or meta[key] < 0:
            raise InputError(path, f"expected a non-negative integer, got {meta[key]!r}", field=key)
    return meta


def _count_lines(path: Path) -> int:
    """Number of '\\n'-terminated lines (a missing final newline still counts the last line)."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _read_ids(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@dataclass
class Index:
    """An opened, validated dense index; vectors are read lazily from memory-mapped shards."""

    directory: Path
    meta: dict
    shards: list[tuple[Path, Path]]
    shard_rows: list[int]
    dim: int
    dtype: np.dtype
    count: int
    _starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self._starts = np.concatenate([[0], np.cumsum(self.shard_rows, dtype=np.int64)])

    def shard_vectors(self, i: int) -> np.ndarray:
        """Shard ``i``'s vectors as a read-only memory map (nothing is read until sliced)."""
        return np.load(self.shards[i][0], mmap_mode="r")

    def iter_chunks(self, chunk_rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first global row, array [<=chunk_rows, dim])`` over rows ``start..stop-1``, in order.

        Every chunk but the last has exactly ``chunk_rows`` rows (chunks span shard boundaries), so
        a consumer compiled for one shape sees one shape. Each chunk is a fresh in-memory copy read
        from the memory maps: memory stays at about one chunk whatever the corpus size. Each piece
        is read through its own short-lived map, so pages already consumed leave this process's
        resident set (they stay in the page cache) instead of piling up to a whole shard. With a
        row range (one host's part of a multi-host search) only the shards overlapping it are
        opened and only its rows are read.
        """
        if chunk_rows < 1:
            raise DprJaxError(f"chunk_rows must be positive, got {chunk_rows}")
        stop = self.count if stop is None else stop
        if not 0 <= start <= stop <= self.count:
            raise DprJaxError(f"row range {start}-{stop} is not within the index's {self.count} rows")
        pending: list[np.ndarray] = []
        pending_rows = 0
        offset = start
        for i, rows in enumerate(self.shard_rows):
            first = int(self._starts[i])
            if first + rows <= start or first >= stop:
                continue
            pos = max(start - first, 0)
            rows = min(rows, stop - first)
            while pos < rows:
                take = min(chunk_rows - pending_rows, rows - pos)
                mm = self.shard_vectors(i)
                pending.append(np.array(mm[pos : pos + take]))
                del mm  # unmap now
                pending_rows += take
                pos += take
                if pending_rows == chunk_rows:
                    yield offset, pending[0] if len(pending) == 1 else np.concatenate(pending)
                    offset += chunk_rows
                    pending, pending_rows = [], 0
        if pending_rows:
            yield offset, pending[0] if len(pending) == 1 else np.concatenate(pending)

    def ids(self) -> list[str]:
        """All passage ids in row order."""
        out: list[str] = []
        for _, ids_path in self.shards:
            out.extend(_read_ids(ids_path))
        return out

    def id_at(self, rows) -> list:
        """Passage ids of global ``rows`` (an int or array of any shape; nested lists come back).

        Only the ids files of shards that hold one of the rows are read. A negative row (the
        "no result" filler) maps to ``None``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and rows.max() >= self.count:
            raise DprJaxError(f"row {int(rows.max())} is out of range for an index of {self.count} rows")
        flat = rows.reshape(-1)
        out = np.empty(flat.shape, dtype=object)
        shard_of = np.searchsorted(self._starts, flat, side="right") - 1
        for s in np.unique(shard_of[flat >= 0]):
            ids = _read_ids(self.shards[s][1])
            sel = np.nonzero((shard_of == s) & (flat >= 0))[0]
            for j in sel:
                out[j] = ids[flat[j] - self._starts[s]]
        return out.reshape(rows.shape).tolist()


    def rows_of(self, ids) -> dict[str, int]:
        """Global rows of the given passage ids that the index holds (one pass over the ids files)."""
        wanted, found = set(ids), {}
        for s, (_, ids_path) in enumerate(self.shards):
            if len(found) == len(wanted):
                break
            for j, pid in enumerate(_read_ids(ids_path)):
                if pid in wanted:
                    found[pid] = int(self._starts[s]) + j
        return found

    def vectors_at(self, rows) -> np.ndarray:
        """float32 ``[len(rows), dim]`` vectors of the given global rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            out[sel] = self.shard_vectors(s)[rows[sel] - self._starts[s]]
        return out


def open_index(index_dir) -> Index:
    """Open an index directory and check that meta, vector shards and id files agree.

    Errors name the offending file: a shard whose dtype or dim differs from ``meta.json``, an ids
    file whose line count differs from its shard's rows (e.g. truncated), a missing shard, or a
    total that differs from ``meta.json``'s ``count``.
    """
    index_dir = Path(index_dir)
    meta = read_meta(index_dir)
    meta_path = index_dir / META_NAME
    found = sorted(int(m.group(1)) for p in index_dir.iterdir() if (m := _SHARD_RE.match(p.name)))
    expected = list(range(meta["num_shards"]))
    if found != expected:
        missing = sorted(set(expected) - set(found))
        if missing:
            raise InputError(shard_paths(index_dir, missing[0])[1], f"missing (meta.json says {meta['num_shards']} shards)")
        raise InputError(shard_paths(index_dir, max(set(found) - set(expected)))[1],
                         f"unexpected shard (meta.json says {meta['num_shards']} shards)")
    dtype = np.dtype(meta["dtype"])
    shards, rows = [], []
    for i in expected:
        npy_path, ids_path = shard_paths(index_dir, i)
        if not npy_path.is_file():
            raise InputError(npy_path, "missing (its .ids file exists)")
        try:
            mm = np.load(npy_path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise InputError(npy_path, f"not a readable .npy array: {e}") from None
        if mm.ndim != 2:
            raise InputError(npy_path, f"expected a 2-D [n, dim] array, got shape {mm.shape}")
        if mm.shape[1] != meta["dim"]:
            raise InputError(npy_path, f"vectors have dim {mm.shape[1]} but meta.json says dim {meta['dim']}")
        if mm.dtype != dtype:
            raise InputError(npy_path, f"dtype {mm.dtype} but meta.json says {meta['dtype']}")
        n_ids = _count_lines(ids_path)
        if n_ids != mm.shape[0]:
            raise InputError(ids_path, f"{n_ids} ids but {npy_path.name} has {mm.shape[0]} vectors")
        shards.append((npy_path, ids_path))
        rows.append(int(mm.shape[0]))
        del mm
    if sum(rows) != meta["count"]:
        raise InputError(meta_path, f"says {meta['count']} passages but the shards hold {sum(rows)}", field="count")
    return Index(index_dir, meta, shards, rows, meta["dim"], dtype, meta["count"])
