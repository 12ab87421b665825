"""Duplicate-id detection in memory that does not grow with the corpus (21M passages and beyond).

A set of every passage id of DPR's Wikipedia corpus costs about 2 GB of Python objects. The
:class:`IdChecker` here keeps a dict only for the first ``in_memory`` ids (small files: a duplicate
is reported at once, with the line of its first occurrence), then spills to disk and partitions by
hash (external hash partitioning):

* each id's 64-bit hash, its location (a line or row number) and its UTF-8 bytes are appended to
  one of B temporary bucket files chosen by the hash (B sized so a bucket holds about 262k
  ids), through a buffer of bounded size;
* :meth:`IdChecker.duplicates` then reads one bucket at a time, sorts its hashes, and compares the
  strings of equal hashes only, so a hash collision is never reported as a duplicate.

Peak memory is the dict, the write buffer and one bucket: bounded whatever the number of ids.
Temporary disk is about ``20 + len(id)`` bytes per id (``TMPDIR``), deleted by :meth:`close`.
The hash is Python's own (salted per process, used only within this process); the reported
duplicates are the ``limit`` with the earliest second occurrence, whatever the salt.
"""

from __future__ import annotations

import dataclasses
import heapq
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

IN_MEMORY_IDS = 100_000  # ids kept in a dict before spilling (~12 MB)
BUCKET_IDS = 1 << 18  # target ids per bucket file when the checker spills (~5 MB of records)
MAX_BUCKETS = 512
_BUFFER_IDS = 1 << 16  # ids buffered in memory between writes to the bucket files
_RECORD = np.dtype([("hash", "<i8"), ("loc", "<i8"), ("len", "<i4")])
_hash = hash  # 64-bit on 64-bit CPython; a module attribute so tests can force collisions


@dataclasses.dataclass(frozen=True, order=True)
class Duplicate:
    """An id seen again: ``first`` and ``second`` are the locations (line or row) of two occurrences."""

    second: int
    first: int
    id: str


class IdChecker:
    """Finds repeated ids in a stream of ``(id, location)`` with bounded memory (see the module doc).

    ``add`` returns the first location of an id already seen while the checker is still in
    memory (an immediate, located error for small inputs); once spilled, repeats are found by
    :meth:`duplicates` after the last id. Locations must be added in increasing order.
    ``expected``: the number of ids to come, or a callable giving it (asked only when spilling),
    to size the buckets. ``in_memory`` defaults to :data:`IN_MEMORY_IDS`.
    """

    def __init__(self, *, in_memory: int | None = None, expected: int | Callable[[], int] | None = None,
                 tmp_dir=None):
        self.in_memory = IN_MEMORY_IDS if in_memory is None else int(in_memory)
        self._expected = expected
        self._tmp_parent = tmp_dir
        self._seen: dict[str, int] | None = {}
        self._dir: Path | None = None
        self._n_buckets = 0
        self._buf_ids: list[str] = []
        self._buf_locs: list[int] = []
        self.count = 0

    @property
    def spilled(self) -> bool:
        return self._seen is None

    def add(self, pid: str, location: int) -> int | None:
        """Record ``pid`` at ``location``; the earlier location if it is a repeat known now, else None."""
        self.count += 1
        if self._seen is not None:
            first = self._seen.get(pid)
            if first is not None:
                return first
            if len(self._seen) < self.in_memory:
                self._seen[pid] = location
                return None
            self._spill()
        self._buf_ids.append(pid)
        self._buf_locs.append(location)
        if len(self._buf_ids) >= _BUFFER_IDS:
            self._flush()
        return None

    def add_many(self, ids: Iterable[str], first_location: int) -> list[Duplicate]:
        """``add`` each id at consecutive locations; the repeats found at once (in-memory phase)."""
        found = []
        for loc, pid in enumerate(ids, start=first_location):
            first = self.add(pid, loc)
            if first is not None:
                found.append(Duplicate(loc, first, pid))
        return found

    def _spill(self) -> None:
        expected = self._expected() if callable(self._expected) else self._expected
        expected = max(int(expected or 0), 2 * len(self._seen))
        self._n_buckets = int(min(MAX_BUCKETS, max(1, -(-expected // BUCKET_IDS))))
        self._dir = Path(tempfile.mkdtemp(prefix="dpr-jax-ids-", dir=self._tmp_parent))
        seen, self._seen = self._seen, None
        for pid, loc in seen.items():
            self._buf_ids.append(pid)
            self._buf_locs.append(loc)
            if len(self._buf_ids) >= _BUFFER_IDS:
                self._flush()

    def _bucket_paths(self, b: int) -> tuple[Path, Path]:
        return self._dir / f"{b:04d}.rec", self._dir / f"{b:04d}.bytes"

    def _flush(self) -> None:
        if not self._buf_ids:
            return
        encoded = [s.encode("utf-8") for s in self._buf_ids]
        recs = np.empty(len(encoded), _RECORD)
        recs["hash"] = np.fromiter(map(_hash, self._buf_ids), np.int64, len(encoded))
        recs["loc"] = np.asarray(self._buf_locs, np.int64)
        recs["len"] = np.fromiter(map(len, encoded), np.int32, len(encoded))
        bucket = recs["hash"] % self._n_buckets  # numpy's % is non-negative for a positive divisor
        order = np.argsort(bucket, kind="stable")  # keeps stream order within a bucket
        bounds = np.searchsorted(bucket[order], np.arange(self._n_buckets + 1))
        for b in range(self._n_buckets):
            sel = order[bounds[b]:bounds[b + 1]]
            if not len(sel):
                continue
            rec_path, bytes_path = self._bucket_paths(b)
            with open(rec_path, "ab") as f:
                recs[sel].tofile(f)
            with open(bytes_path, "ab") as f:
                f.write(b"".join(encoded[i] for i in sel))
        self._buf_ids, self._buf_locs = [], []

    def duplicates(self, limit: int = 1) -> tuple[list[Duplicate], int]:
        """After the last ``add``: ``(the limit repeats with the earliest second location, how many in all)``.

        Repeats already returned by ``add`` are not included. Every repeat of an id is one
        :class:`Duplicate` naming the id's first location.
        """
        if not self.spilled:
            return [], 0
        self._flush()
        kept: list[tuple[int, int, str]] = []  # max-heap on second location, as negatives
        total = 0
        for b in range(self._n_buckets):
            rec_path, bytes_path = self._bucket_paths(b)
            if not rec_path.exists():
                continue
            recs = np.fromfile(rec_path, _RECORD)
            order = np.argsort(recs["hash"], kind="stable")
            hashes = recs["hash"][order]
            same = hashes[1:] == hashes[:-1]
            if not same.any():
                continue
            offsets = np.concatenate([[0], np.cumsum(recs["len"], dtype=np.int64)])
            blob = bytes_path.read_bytes()
            in_group = np.zeros(len(recs), bool)
            in_group[1:] |= same
            in_group[:-1] |= same
            first_of: dict[str, int] = {}
            for i in order[in_group]:  # grouped by hash, each group in location order
                text = blob[offsets[i]:offsets[i + 1]].decode("utf-8")
                loc = int(recs["loc"][i])
                if text not in first_of:
                    first_of[text] = loc
                    continue
                total += 1
                item = (-loc, -first_of[text], text)
                if len(kept) < limit:
                    heapq.heappush(kept, item)
                elif limit and item > kept[0]:
                    heapq.heapreplace(kept, item)
        found = sorted(Duplicate(-s, -f, t) for s, f, t in kept)
        return found, total

    def close(self) -> None:
        """Delete the temporary bucket files."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "IdChecker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
