"""Paths that are either local or URLs (``gs://bucket/...``): the one module that knows the difference.

A pod run keeps its workdir, corpus and index on Cloud Storage, a laptop run on disk; every other
module should hand its path strings to this one and not care which it got. The rules:

- **A string with a scheme (``xx://``) is a URL, anything else a local path.** :func:`as_path`
  turns URLs into :class:`etils.epath.Path` (the pathlib-like class orbax itself uses, so a
  checkpoint directory is one object for both) and local paths into :class:`pathlib.Path`, which
  keeps local behaviour exactly as it was. ``pathlib.Path("gs://b/x")`` silently becomes the local
  path ``gs:/b/x``; :func:`as_path` refuses such mangled names (a first component like ``gs:``),
  so nothing is ever written to a local folder called ``gs:``.
- **URLs go through fsspec** (gcsfs for ``gs://``; s3fs, adlfs, huggingface_hub for ``s3://``,
  ``az://``, ``hf://``, the schemes etils epath knows). etils is told to use fsspec rather than
  ``tf.io.gfile`` even where TensorFlow is installed (``EPATH_USE_TF=false`` unless set), so one
  client with one configuration serves dpr-jax's files and orbax's.
- **Object stores have no rename, no append and no memory maps.** Hence the helpers here:
  :func:`atomic_open` (a temporary name + rename locally; an upload that is committed only when
  the block succeeds remotely), :func:`append_text` (read-modify-write remotely),
  :func:`read_npy_rows` (ranged reads of ``.npy`` rows instead of ``np.load(mmap_mode=...)``) and
  :func:`local_copy` (a cached download for libraries that need a real file: faiss, bm25s,
  tokenizers).

What was verified against a real GCS API server (gcp-storage-emulator) and what each library does
there is written down in ``docs/storage.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from dpr_jax.errors import DprJaxError, InputError

# etils epath would pick tf.io.gfile for gs:// whenever TensorFlow is importable; gcsfs (fsspec) is
# what dpr-jax installs, tests and configures. Read by etils at each path operation.
os.environ.setdefault("EPATH_USE_TF", "false")


def _no_listing_caches() -> None:
    """Make every gcsfs instance list objects afresh (fsspec's defaults for new instances).

    gcsfs caches directory listings for the life of an instance and forgets them only on its own
    writes. Objects written by another process, or through another instance (etils epath, hence
    orbax, keeps its own), stayed invisible: a checkpoint step or an index shard finished elsewhere
    would not be seen. A user's explicit ``FSSPEC_GCS`` setting wins.
    """
    import fsspec.config

    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)


_no_listing_caches()

# The URL schemes etils epath maps to fsspec file systems (etils/epath/gpath.py, _URI_SCHEMES).
SCHEMES = ("gs", "s3", "az", "hf")
_FSSPEC_PACKAGE = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# A first path component like "gs:" is what pathlib makes of "gs://bucket": never a real folder.
# Local names starting with a well-known scheme and a colon ("gs:bucket") are refused as well.
_MANGLED_RE = re.compile(r"^(?:([A-Za-z][A-Za-z0-9+.-]*):(?:/|$)|(gs|gcs|s3|az|hf|https?|file):)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------
# Telling URLs from local paths


def url_scheme(path) -> str | None:
    """``"gs"`` for ``gs://bucket/x`` (lower-cased), ``None`` for a local path."""
    m = _URL_RE.match(os.fspath(path))
    return m.group(1).lower() if m else None


def is_remote(path) -> bool:
    """True when ``path`` (a string or either kind of path object) is a URL."""
    return url_scheme(path) is not None


def as_path(path):
    """``path`` as an :class:`etils.epath.Path` (a URL) or a :class:`pathlib.Path` (local).

    Raises :class:`DprJaxError` for a scheme epath does not support, for a URL whose fsspec
    implementation is not installed (with the package to install), and for a local path that is
    really a URL mangled by :class:`pathlib.Path` (``gs:/bucket/x``), which would otherwise create
    a local folder named ``gs:``.
    """
    text = os.fspath(path)
    scheme = url_scheme(text)
    if scheme is None:
        m = _MANGLED_RE.match(text)
        if m:
            name = m.group(1) or m.group(2)
            raise DprJaxError(f"{text}: looks like a URL that lost a '/' (pathlib turns '{name}://' into "
                              f"'{name}:/'); write {name}://... (a local name may not start with '{name}:')")
        return Path(text)
    if scheme not in SCHEMES:
        raise DprJaxError(f"{text}: unsupported URL scheme '{scheme}://' (supported: "
                          f"{', '.join(s + '://' for s in SCHEMES)}, or a local path)")
    text = scheme + text[len(scheme):]  # epath recognises "gs://" only in lower case
    _filesystem_class(scheme, text)
    from etils import epath

    return epath.Path(text)


def absolute(path):
    """``as_path(path)``, made absolute when local. (etils' ``absolute()``/``resolve()`` of a
    ``gs://`` path prepend the working directory, giving ``/cwd/gs:/bucket``: never call them on URLs.)"""
    p = as_path(path)
    return p if is_remote(p) else p.absolute()


def _filesystem_class(scheme: str, text: str):
    import fsspec

    try:
        return fsspec.get_filesystem_class(scheme)
    except ImportError:
        raise DprJaxError(f"{text}: {scheme}:// paths need the {_FSSPEC_PACKAGE[scheme]} package "
                          f"(pip install {_FSSPEC_PACKAGE[scheme]})") from None


def filesystem(path):
    """``(fsspec file system, path inside it)`` for a URL; what the helpers below use directly."""
    import fsspec.core

    p = as_path(path)
    if not is_remote(p):
        raise ValueError(f"{p}: not a URL")
    return fsspec.core.url_to_fs(str(p))


def make_dirs(path):
    """Create the local directory ``path`` (and parents); for a URL, check that its bucket exists.

    Object stores have no directories (a "directory" exists once an object is written under it),
    so gcsfs's ``makedirs``, which ``epath.Path.mkdir(parents=True)`` calls, does nothing at all,
    even for a bucket that does not exist: a typo in the bucket name would surface only at the
    first write, as a FileNotFoundError naming an upload URL. Here it is a clear error up front.
    (dpr-jax never creates buckets; gcsfs's ``mkdir`` of a bare ``gs://name`` would.)
    """
    p = as_path(path)
    if not is_remote(p):
        p.mkdir(parents=True, exist_ok=True)
        return p
    fs, inner = filesystem(p)
    bucket = inner.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except OSError as e:
        raise DprJaxError(f"{p}: cannot reach bucket '{bucket}': {e}") from None
    if not found:
        raise DprJaxError(f"{p}: bucket '{bucket}' does not exist (dpr-jax never creates buckets)")
    return p


def remove_tree(path, missing_ok: bool = True) -> None:
    """Delete a directory (or prefix) and everything in it."""
    p = as_path(path)
    if is_remote(p):
        p.rmtree(missing_ok=missing_ok)
    elif p.exists() or not missing_ok:
        shutil.rmtree(p)


# ------------------------------------------------------------------------------------------------
# Reading


class _GzipClosingSource(gzip.GzipFile):
    """A GzipFile over an opened stream that closes that stream too (GzipFile(fileobj=) does not)."""

    def close(self):
        source = self.fileobj
        try:
            super().close()
        finally:
            if source is not None:
                source.close()


def _open_raw(path, mode: str = "rb", **remote_kwargs) -> IO[bytes]:
    p = as_path(path)
    if not is_remote(p):
        return open(p, mode)
    fs, inner = filesystem(p)
    if mode == "rb":  # gcsfs opens a prefix ("directory") as an empty file; refuse it like open() does
        info = fs.info(inner)
        if info["type"] == "directory":
            raise IsADirectoryError(str(p))
        remote_kwargs["size"] = info["size"]
    return fs.open(inner, mode, **remote_kwargs)


@contextlib.contextmanager
def _input_errors(p, expected: str):
    """Turn a missing file, a directory or an I/O failure into an InputError naming ``p``."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except IsADirectoryError:
        raise InputError(p, f"is a directory, expected {expected}") from None
    except OSError as e:
        raise InputError(p, f"cannot read: {e.strerror or e}") from None


def open_read(path, mode: str = "rb") -> IO:
    """Open a local file or an object for reading, gunzipping a ``.gz`` name; ``mode`` "rb" or "r" (UTF-8).

    Remote objects are streamed in 16 MiB ranged reads (a 13 GB corpus is never held whole). A
    missing file, a directory, or an unreadable one becomes an :class:`InputError` naming it.
    """
    if mode not in ("rb", "r", "rt"):
        raise ValueError(f"open_read: mode must be 'rb' or 'r', not {mode!r}")
    p = as_path(path)
    with _input_errors(p, "a file"):
        raw = _open_raw(p, "rb", block_size=16 << 20)
    f = _GzipClosingSource(fileobj=raw, mode="rb") if p.name.endswith(".gz") else raw
    return f if mode == "rb" else io.TextIOWrapper(f, encoding="utf-8")


def open_random_access(path, block_size: int = 1 << 20) -> IO[bytes]:
    """Open a local file or an object for seeking and reading short ranges (never gunzipped).

    Unlike :func:`open_read`'s 16 MiB streaming reads, an object is read in ``block_size`` ranges,
    so looking up one line of a training file (:mod:`dpr_jax.data.lazy_records`) does not fetch
    16 MiB. A missing file is an :class:`InputError`.
    """
    p = as_path(path)
    with _input_errors(p, "a file"):
        return _open_raw(p, "rb", block_size=block_size) if is_remote(p) else open(p, "rb")


def file_size(path) -> int:
    """Size in bytes of the file or object ``path`` (an :class:`InputError` when it is missing)."""
    p = as_path(path)
    with _input_errors(p, "a file"):
        if not is_remote(p):
            return p.stat().st_size
        fs, inner = filesystem(p)
        info = fs.info(inner)
        if info["type"] == "directory":
            raise IsADirectoryError(str(p))
        return int(info["size"])


def fingerprint(path) -> dict:
    """What changes when the file ``path`` is rewritten, for keying caches of things derived from it.

    Locally its size and modification time (``{"size", "mtime_ns"}``); for a URL its size and the
    object's generation (GCS gives every write of an object a new one; other stores' etag or
    modification time stand in), with the URL itself, since the same generation number can
    occur in another bucket.
    """
    p = as_path(path)
    with _input_errors(p, "a file"):
        if not is_remote(p):
            st = p.stat()
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        fs, inner = filesystem(p)
        info = fs.info(inner)
        if info["type"] == "directory":
            raise IsADirectoryError(str(p))
    version = next((str(info[k]) for k in ("generation", "etag", "ETag", "mtime", "updated", "LastModified")
                    if info.get(k) is not None), None)
    return {"url": str(p), "size": int(info["size"]), "generation": version}


# ------------------------------------------------------------------------------------------------
# Checking where outputs go, before the work


def _nearest_existing(path: Path) -> Path:
    for candidate in path.parents:
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_can_create_in(directory: Path, path: Path, what: str) -> None:
    """Raise unless files can be created in ``directory`` (an unnamed temporary file is the probe)."""
    if not directory.is_dir():
        raise DprJaxError(f"{what} {path}: {directory} is a file, so nothing can be created under it")
    try:
        tempfile.TemporaryFile(dir=directory).close()  # O_TMPFILE on Linux: nothing appears in the directory
    except OSError as e:
        raise DprJaxError(f"{what} {path}: cannot create files in {directory} ({e.strerror or e})") from None


def check_output_file(path, what: str = "--out") -> None:
    """Fail now, with one line, if a file cannot be written at ``path`` (called before the work).

    Locally, ``path`` must not be a directory and its nearest existing parent must be a directory
    files can be created in (missing directories in between are made when the file is written).
    For a URL, its bucket must exist (:func:`make_dirs`; nothing is created).
    """
    p = as_path(path)
    if is_remote(p):
        make_dirs(p)
        return
    p = p.expanduser().absolute()
    if p.is_dir():
        raise DprJaxError(f"{what} {p}: is a directory; expected a file name")
    _check_can_create_in(p.parent if p.parent.exists() else _nearest_existing(p), p, what)


def check_output_dir(path, what: str = "--out") -> None:
    """Fail now, with one line, if a directory cannot be written at ``path`` (called before the work).

    Locally, an existing ``path`` must be a directory files can be created in; otherwise its
    nearest existing parent must be. For a URL, its bucket must exist.
    """
    p = as_path(path)
    if is_remote(p):
        make_dirs(p)
        return
    p = p.expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise DprJaxError(f"{what} {p}: exists and is not a directory")
    _check_can_create_in(p if p.is_dir() else _nearest_existing(p), p, what)


# ------------------------------------------------------------------------------------------------
# Writing: nothing appears under the final name unless the whole write succeeded

# errors of the storage itself (not of the program): reported as "cannot write PATH: reason"
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM}


def _write_error(path, e: OSError) -> DprJaxError:
    return DprJaxError(f"cannot write {path}: {e.strerror or e}")


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the local temporaries :func:`atomic_path` left next to ``path`` (a process killed mid-write).

    Only names of exactly that form are touched (``.NAME.XXXXXXXX.tmp``: a private directory holding
    the half-written file), and nothing for a URL (its temporaries are local and vanish with their
    process). Call it only when no other process can be writing ``path`` at the same time (e.g.
    outputs this process alone produces). Returns what was removed.
    """
    p = as_path(path)
    removed: list[Path] = []
    if is_remote(p) or not p.parent.is_dir():
        return removed
    prefix = _temporary_prefix(p)
    for candidate in p.parent.iterdir():
        name = candidate.name
        middle = name[len(prefix):-len(".tmp")] if name.startswith(prefix) and name.endswith(".tmp") else ""
        if middle and middle.replace("_", "").isalnum():
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_path(path, *, last: str | None = None) -> Iterator[Path]:
    """Yield a *local* temporary path; it becomes ``path`` only if the block succeeds.

    For writers that need a real file name (``np.save`` to a name, ``faiss.write_index``,
    ``savefig``, a tokenizer's or bm25s's ``save(dir)``): the block writes a file or a directory
    at the yielded path, which does not exist yet and carries the destination's name (writers
    that pick a format from the suffix still see it).

    Locally it lies in a private temporary directory next to ``path`` and is renamed onto it (so
    a killed process never leaves a half-written ``path``); a directory replaces an existing
    directory the same way (the old one is moved aside, then deleted). For a URL it lies in a
    local temporary directory and is uploaded on success (:func:`upload`), then deleted: a
    directory file by file, objects of an older version that the new one lacks deleted after.
    Each object appears only when its upload completes, so a directory's completeness must be
    marked by a file its readers check; name it ``last`` and, for a URL, it is deleted before
    and uploaded after everything else (index shards' ``.ids`` and orbax's commit files play
    that role elsewhere).
    """
    p = as_path(path)
    if is_remote(p):
        with tempfile.TemporaryDirectory(prefix="dpr_jax_upload_") as tmpdir:
            tmp = Path(tmpdir) / p.name
            yield tmp
            upload(tmp, p, last=last, replace=True)
        return
    try:  # a directory that cannot be made or written to is one line naming the output
        p.parent.mkdir(parents=True, exist_ok=True)
        box = Path(tempfile.mkdtemp(prefix=_temporary_prefix(p), suffix=".tmp", dir=p.parent))
    except OSError as e:
        raise _write_error(p, e) from None
    try:
        tmp = box / p.name
        yield tmp
        try:
            if tmp.is_dir() and p.is_dir():  # rename() cannot replace a non-empty directory: move it aside
                os.replace(p, box / ".old")
                try:
                    os.replace(tmp, p)
                except BaseException:
                    os.replace(box / ".old", p)
                    raise
            else:
                os.replace(tmp, p)
        except OSError as e:
            raise _write_error(p, e) from None
    finally:
        shutil.rmtree(box, ignore_errors=True)


def upload(local, dest, *, last: str | None = None, replace: bool = False) -> None:
    """Copy a local file, or a directory's files recursively, to the URL ``dest``.

    For a directory, ``last`` (a file name inside it) is deleted at ``dest`` first and uploaded
    after every other file, so readers that check it never see a half-uploaded directory as
    complete; with ``replace``, objects under ``dest`` that the directory does not hold (left by
    an older version) are deleted before ``last`` is uploaded.
    """
    local = Path(local)
    fs, inner = filesystem(dest)
    if not local.is_dir():
        fs.put_file(str(local), inner)
        return
    names = sorted(q.relative_to(local).as_posix() for q in local.rglob("*") if q.is_file())
    if last is not None:
        if last not in names:
            raise ValueError(f"upload: {local} has no file {last!r} to upload last")
        if fs.exists(f"{inner}/{last}"):
            fs.rm_file(f"{inner}/{last}")
        names.remove(last)
    for name in names:
        fs.put_file(str(local / name), f"{inner}/{name}")
    if replace:
        keep = {f"{inner}/{name}" for name in names} | ({f"{inner}/{last}"} if last else set())
        try:
            stale = [o for o in fs.find(inner) if o not in keep]
        except FileNotFoundError:
            stale = []
        if stale:
            fs.rm(stale)
    if last is not None:
        fs.put_file(str(local / last), f"{inner}/{last}")


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """Open ``path`` for writing (``"w"``: UTF-8 text, or ``"wb"``); it exists only if the block succeeds.

    Both cases write a local temporary file (:func:`atomic_path`): locally it is renamed onto
    ``path``; for a URL it is uploaded after the block returns, and GCS makes an object visible
    only once its upload has completed, so a block that raises (or a process killed during the
    upload) leaves no object, and an object already at ``path`` stays as it was. A plain
    ``with fs.open(url, "wb")`` (or ``epath.Path.open("w")``) does *not* do this: leaving the
    block closes the file, which commits whatever was written so far even when an exception is
    propagating (tests/test_storage.py pins that down against the emulator).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        try:
            with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {}) | kwargs) as f:
                yield f
        except OSError as e:  # a full disk, a quota, a read-only mount: one line, not a traceback
            if e.errno in _STORAGE_ERRNOS and e.filename in (None, str(tmp)):
                raise _write_error(path, e) from None
            raise


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line atomically; returns the number of rows."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def append_text(path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path``, creating it if needed.

    Locally an ordinary append. Objects in a store cannot be appended to, so for a URL this reads
    the object and writes it back with ``text`` added (:func:`atomic_open`: a failure leaves the
    previous version whole). That costs the object's size per call: right for a small log such as
    ``metrics.jsonl`` written by one process every few hundred steps (a 100k-step run logging every
    100 steps uploads about 100 MB in all), wrong for data; callers that log often should buffer
    lines and append them in one call. Not safe against two concurrent appenders (the last wins).
    """
    p = as_path(path)
    if not is_remote(p):
        with open(p, "a", encoding="utf-8") as f:
            f.write(text)
        return
    try:
        old = p.read_bytes()
    except FileNotFoundError:
        old = b""
    with atomic_open(p, "wb") as f:
        f.write(old)
        f.write(text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------
# .npy files: header and row ranges, without memory maps


@dataclasses.dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: shape, dtype, layout, and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def row_bytes(self) -> int:
        """Bytes per row (per element of the first axis) of a C-ordered array."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


_NPY_PREFIX = 4096  # one ranged read covers the header of any array np.save writes for us


def read_npy_header(path) -> NpyHeader:
    """Parse the header of the ``.npy`` file ``path`` with one small (ranged) read.

    A file that is not a ``.npy`` array (or uses a header version other than 1.0/2.0) is an
    :class:`InputError`.
    """
    p = as_path(path)
    with _input_errors(p, "a .npy file"), _open_raw(p, "rb", cache_type="none") as f:
        head = f.read(_NPY_PREFIX)
        if len(head) >= 12 and head[:6] == np.lib.format.MAGIC_PREFIX:
            size_bytes = 2 if head[6] == 1 else 4
            total = 8 + size_bytes + int.from_bytes(head[8:8 + size_bytes], "little")
            if total > len(head):
                head += f.read(total - len(head))
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError) as e:
        raise InputError(p, f"not a readable .npy array: {e}") from None
    return NpyHeader(tuple(shape), np.dtype(dtype), bool(fortran), buf.tell())


def read_npy_rows(path, start: int, stop: int, header: NpyHeader | None = None) -> np.ndarray:
    """Rows ``start:stop`` of the ``.npy`` array ``path``, as a fresh in-memory array.

    One seek and one read of exactly those bytes (for a URL: one ranged GET), so a shard of any
    size can be streamed in bounded memory from local disk or an object store alike; this is
    what replaces ``np.load(mmap_mode="r")``, which needs a local file. Pass the ``header`` from
    :func:`read_npy_header` to save re-reading it for every range. A file shorter than its header
    says is an :class:`InputError`.
    """
    p = as_path(path)
    header = header or read_npy_header(p)
    n = header.shape[0] if header.shape else 0
    if header.fortran_order and len(header.shape) > 1:
        raise InputError(p, "is stored in Fortran order; row ranges need a C-ordered array")
    if not 0 <= start <= stop <= n:
        raise DprJaxError(f"{p}: rows {start}:{stop} out of range for {n} rows")
    out = np.empty((stop - start, *header.shape[1:]), dtype=header.dtype)
    nbytes = out.nbytes
    if nbytes == 0:
        return out
    with _open_raw(p, "rb", cache_type="none") as f:
        f.seek(header.data_offset + start * header.row_bytes)
        got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    if got != nbytes:
        raise InputError(p, f"truncated: expected {nbytes} bytes for rows {start}:{stop}, got {got}")
    return out


# ------------------------------------------------------------------------------------------------
# A real local file for libraries that cannot read URLs


def cache_root() -> Path:
    """dpr-jax's local cache directory: ``$DPR_JAX_CACHE``, else ``$XDG_CACHE_HOME/dpr-jax`` (``~/.cache/dpr-jax``)."""
    return Path(os.environ.get("DPR_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dpr-jax"))


def cache_dir() -> Path:
    """Where :func:`cached_copy` keeps downloads: ``cache_root()/remote``."""
    return cache_root() / "remote"


def _remote_listing(fs, inner: str) -> list[tuple[str, dict]]:
    """``[(relative name, info)]`` of the object ``inner`` (name "") or of every object under it."""
    info = fs.info(inner)
    if info["type"] != "directory":
        return [("", info)]
    found = fs.find(inner, detail=True)
    prefix = inner.rstrip("/") + "/"
    return sorted((name[len(prefix):], i) for name, i in found.items() if name.startswith(prefix))


def _identity(info: dict) -> str:
    """What changes when an object is rewritten: its generation/etag/mtime and size."""
    keys = ("generation", "etag", "ETag", "md5Hash", "crc32c", "mtime", "updated", "LastModified", "size")
    return json.dumps({k: str(info[k]) for k in keys if info.get(k) is not None}, sort_keys=True)


@contextlib.contextmanager
def local_copy(path, *, cache: bool = True) -> Iterator[Path]:
    """A local path holding the file or directory ``path``: itself when local, a download otherwise.

    For libraries that only open real files (faiss ``read_index``, bm25s ``load``, Hugging Face
    tokenizers). With ``cache`` (the default) the download is :func:`cached_copy`'s and stays in
    the cache after the block; with ``cache=False`` it is deleted when the block ends.
    """
    p = as_path(path)
    if not is_remote(p) or cache:
        yield cached_copy(p)
        return
    root = Path(tempfile.mkdtemp(prefix="dpr_jax_download_"))
    try:
        yield _download(p, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def cached_copy(path) -> Path:
    """A local path holding the file or directory ``path``: itself when local, a cached download otherwise.

    Downloads are kept in :func:`cache_dir` under a key made of the URL and each object's
    generation and size, so a second use costs one listing, and a rewritten object is fetched
    again. A download lands under a temporary name and is renamed into the cache, so processes
    sharing a host and a cache never see a partial copy. A missing ``path`` is an
    :class:`InputError`.
    """
    p = as_path(path)
    if not is_remote(p):
        if not p.exists():
            raise InputError(p, "not found")
        return p
    return _download(p, cache_dir())


def _download(p, root: Path) -> Path:
    """``root/KEY/NAME``: the object or prefix ``p`` downloaded (once per KEY, see :func:`cached_copy`)."""
    fs, inner = filesystem(p)
    try:
        listing = _remote_listing(fs, inner)
    except FileNotFoundError:
        listing = []
    if not listing:
        raise InputError(p, "not found")
    key = hashlib.sha256(json.dumps([str(p), [(n, _identity(i)) for n, i in listing]]).encode()).hexdigest()[:24]
    target = root / key / p.name
    if not target.exists():
        root.joinpath(key).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", dir=root / key)) / p.name
        try:
            if listing[0][0]:  # a directory (possibly holding only subdirectories' objects)
                tmp.mkdir()
            for name, _ in listing:
                dest = tmp / name if name else tmp
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{inner}/{name}" if name else inner, str(dest))
            try:
                os.replace(tmp, target)
            except OSError:  # another process put the same copy there first
                if not target.exists():
                    raise
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)
    return target
