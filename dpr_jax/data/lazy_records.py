"""Training records read on demand: a ``Sequence[TrainRecord]`` over a :class:`~dpr_jax.data.record_index.RecordIndex`.

``records[i]`` seeks to record ``i``'s line, reads it and parses it with the same validation as
:func:`~dpr_jax.data.training_data.parse_training_record` (``source`` stays the original
``file:line``). Nothing else of the file is read or kept, so a process holds only the records it
uses; a small LRU cache saves re-parsing a record used twice in a row (a random negative drawn
from it, say).

``parses`` counts the records actually parsed and, when ``log`` is a list, their index
positions are appended to it: what the multi-host tests use to show that each process parsed only
its share. A :meth:`LazyRecords.subset` (the valid records, once the bad ones of
``on_error="skip"`` are known) shares the open file, the cache and the counters.
"""

from __future__ import annotations

import collections
import threading
from typing import Sequence

import numpy as np

from dpr_jax import storage
from dpr_jax.data.record_index import RecordIndex
from dpr_jax.data.records import TrainRecord
from dpr_jax.data.textfiles import decode_line, parse_json
from dpr_jax.data.training_data import parse_training_record
from dpr_jax.errors import InputError


class _Reader:
    """The open data file, the parse cache and the counters that a record sequence and its subsets share."""

    def __init__(self, index: RecordIndex, cache_size: int, log: list | None):
        self.index = index
        self.cache_size = cache_size
        self.cache: collections.OrderedDict[int, TrainRecord] = collections.OrderedDict()
        self.lock = threading.Lock()  # batches are built in a background thread
        self.file = None
        self.parses = 0
        self.log = log

    def record(self, pos: int, cache: bool = True) -> TrainRecord:
        with self.lock:
            hit = self.cache.get(pos) if cache else None
            if hit is not None:
                self.cache.move_to_end(pos)
                return hit
            raw = self._line(pos)
            self.parses += 1
            if self.log is not None:
                self.log.append(pos)
        path, line = self.index.source, int(self.index.lines[pos])
        record = parse_training_record(path, line, parse_json(path, decode_line(path, raw, line), line))
        if not cache:
            return record
        with self.lock:
            self.cache[pos] = record
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return record

    def _line(self, pos: int) -> bytes:
        if self.file is None:
            self.file = storage.open_random_access(self.index.data)
        self.file.seek(int(self.index.offsets[pos]))
        try:
            return self.file.readline()
        except OSError as e:
            raise InputError(self.index.source, f"cannot read: {e}", line=int(self.index.lines[pos])) from None

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class LazyRecords(Sequence[TrainRecord]):
    """The records at ``positions`` of an index (all of them by default), parsed when accessed."""

    def __init__(self, index: RecordIndex, positions: np.ndarray | None = None, *, cache_size: int = 256,
                 log: list | None = None, _reader: _Reader | None = None):
        self._reader = _reader or _Reader(index, cache_size, log)
        self.index = index
        self.positions = np.arange(len(index), dtype=np.int64) if positions is None else np.asarray(positions,
                                                                                                    np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        return self._reader.record(int(self.positions[i]))

    def parse(self, pos: int, cache: bool = True) -> TrainRecord:
        """The record at index position ``pos`` (not a position of this subset); raises :class:`InputError`.

        ``cache=False`` neither uses nor fills the cache (a one-pass check of many records).
        """
        return self._reader.record(pos, cache)

    def subset(self, positions: np.ndarray) -> "LazyRecords":
        """The records at index ``positions``, sharing this sequence's file, cache and counters."""
        return LazyRecords(self.index, positions, _reader=self._reader)

    @property
    def parses(self) -> int:
        """How many records have been parsed (cache hits not counted)."""
        return self._reader.parses

    @property
    def log(self) -> list | None:
        return self._reader.log

    def close(self) -> None:
        self._reader.close()


__all__ = ["LazyRecords"]
