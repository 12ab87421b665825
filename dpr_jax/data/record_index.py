"""A line index of a JSON-lines training file, so any record can be read without reading the others.

A multi-host run must not parse the whole training file on every host (:mod:`dpr_jax.data.host_local`).
What makes that possible is this index: the byte offset of every non-blank line of the file, and
its 1-based line number (for ``file:line`` errors), found in one streaming pass over the bytes with
no JSON parsing. With it, record ``i`` is one seek and one ``readline``
(:class:`~dpr_jax.data.lazy_records.LazyRecords`).

Random access needs a plain JSON-lines file. A JSON array (DPR's ``biencoder-nq-train.json``) or
a gzipped file has none, so it is converted once into a JSON-lines copy next to the index (a
``.gz`` JSON-lines file is decompressed as is; a JSON array is rewritten one element per line), and
the index points into the copy while keeping the *original* file's line numbers. Converting a JSON
array reads it whole once, as reading it always did.

The index lives in a cache directory (a run's ``WORKDIR/data-index``), under a name made of the
file's path and :func:`dpr_jax.storage.fingerprint` (size and mtime, or a bucket object's
generation): a file rewritten at the same path gets a new index, never a stale one, and the old
one is removed. Every file is written under a temporary name and renamed (or uploaded whole), and
the small JSON description is written last: an index without it is never used.
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
import io
import json
import re

import numpy as np

from dpr_jax import storage
from dpr_jax.data.textfiles import is_json_array, read_raw_line, strip_bom

INDEX_VERSION = 1
_PROGRESS_EVERY = 100_000


@dataclasses.dataclass(frozen=True)
class RecordIndex:
    """Where each record of a training file is.

    ``source`` is the file as given (what ``file:line`` names); ``data`` the JSON-lines file the
    ``offsets`` point into (``source`` itself, or its converted copy); ``lines[i]`` is record
    ``i``'s 1-based line in ``source``. ``built`` says whether this call built it (False: cached).
    """

    source: str
    data: object  # a Path, or an etils epath.Path for a URL
    offsets: np.ndarray  # int64 [n]
    lines: np.ndarray  # int64 [n]
    built: bool = False

    def __len__(self) -> int:
        return len(self.offsets)


def _key(path) -> tuple[str, str]:
    """``(prefix shared by every version of this path, full name of this version)`` in the cache dir."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", storage.as_path(path).name)[:60]
    path_hash = hashlib.sha256(str(storage.absolute(path)).encode()).hexdigest()[:12]
    version = json.dumps([INDEX_VERSION, storage.fingerprint(path)], sort_keys=True)
    return f"{name}-{path_hash}-", f"{name}-{path_hash}-{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def load_index(path, cache_dir) -> RecordIndex | None:
    """The cached index of the file's current version, or None when there is none (or it is incomplete)."""
    cache = storage.as_path(cache_dir)
    _, key = _key(path)
    meta_path = cache / f"{key}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    data = cache / meta["data"] if meta["data"] else storage.as_path(path)
    if meta["source"] != str(path) or storage.file_size(data) != meta["data_size"]:
        return None  # a copy that does not match its description: rebuild rather than trust it
    table = np.load(io.BytesIO((cache / f"{key}.npy").read_bytes()))
    if table.shape != (meta["records"], 2):
        return None
    return RecordIndex(str(path), data, table[:, 0].copy(), table[:, 1].copy())


def build_index(path, cache_dir, *, progress: bool = False) -> RecordIndex:
    """The index of ``path`` from ``cache_dir``, built (and cached) first if it is not there.

    Raises :class:`InputError` for a file that cannot be indexed: missing, UTF-16, a broken gzip
    stream, a malformed JSON array. Bad JSON *lines* are indexed like any other and reported when
    the record is parsed, at their line.
    """
    cached = load_index(path, cache_dir)
    if cached is not None:
        return cached
    cache = storage.as_path(cache_dir)
    storage.make_dirs(cache)
    prefix, key = _key(path)
    gz = storage.as_path(path).name.endswith(".gz")
    with _progress(progress, path) as bar:
        if is_json_array(path):
            data_name = f"{key}.jsonl"
            with storage.atomic_open(cache / data_name, "wb") as out:
                offsets, lines = _convert_json_array(path, out, bar)
        elif gz:
            data_name = f"{key}.jsonl"
            with storage.open_read(path) as f, storage.atomic_open(cache / data_name, "wb") as out:
                offsets, lines = _index_lines(path, f, out, bar)
        else:
            data_name = ""
            with storage.open_read(path) as f:
                offsets, lines = _index_lines(path, f, None, bar)
    data = cache / data_name if data_name else storage.as_path(path)
    table = np.stack([np.frombuffer(offsets, np.int64), np.frombuffer(lines, np.int64)], axis=1)
    buf = io.BytesIO()
    np.save(buf, table)
    storage.write_bytes(cache / f"{key}.npy", buf.getvalue())
    storage.write_json(cache / f"{key}.json", {"source": str(path), "data": data_name,
                                               "data_size": storage.file_size(data), "records": len(table),
                                               "version": INDEX_VERSION})
    _remove_other_versions(cache, prefix, key)
    return RecordIndex(str(path), data, table[:, 0].copy(), table[:, 1].copy(), built=True)


def _remove_other_versions(cache, prefix: str, key: str) -> None:
    """Delete the indexes (and copies) of earlier versions of the same file: they can never be used again."""
    for p in cache.glob(f"{prefix}*"):
        if not p.name.startswith(key + "."):
            p.unlink(missing_ok=True)


def _blank(raw: bytes) -> bool:
    """Whether a line holds only whitespace (Unicode whitespace too, as ``str.strip`` sees it)."""
    s = raw.strip()
    return not s or (s[0] >= 0x80 and not s.decode("utf-8", "replace").strip())


def _index_lines(path, f, out, bar) -> tuple[array.array, array.array]:
    """Offsets (in ``out`` when copying, else in ``f``) and line numbers of the non-blank lines of ``f``."""
    offsets, lines = array.array("q"), array.array("q")
    pos = lineno = 0
    while True:
        raw = read_raw_line(path, f, lineno)
        if not raw:
            return offsets, lines
        lineno += 1
        if lineno == 1:
            stripped = strip_bom(path, raw)
            if out is None:
                pos += len(raw) - len(stripped)  # the byte-order mark is not part of the first record
            raw = stripped
        if not _blank(raw):
            offsets.append(pos)
            lines.append(lineno)
        if out is not None:
            out.write(raw)
        pos += len(raw)
        if lineno % _PROGRESS_EVERY == 0:
            bar.update(_PROGRESS_EVERY)


def _convert_json_array(path, out, bar) -> tuple[array.array, array.array]:
    """Write each element of a JSON array as one line of ``out``; offsets in ``out``, lines where elements start."""
    from dpr_jax.data.textfiles import iter_json_records

    offsets, lines = array.array("q"), array.array("q")
    pos = 0
    for n, (line, obj) in enumerate(iter_json_records(path), start=1):
        raw = json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"
        offsets.append(pos)
        lines.append(line)
        out.write(raw)
        pos += len(raw)
        if n % _PROGRESS_EVERY == 0:
            bar.update(_PROGRESS_EVERY)
    return offsets, lines


def _progress(enabled: bool, path):
    from tqdm.auto import tqdm

    return tqdm(desc=f"Indexing {storage.as_path(path).name}", unit=" lines", disable=not enabled, leave=False)


__all__ = ["RecordIndex", "build_index", "load_index"]
