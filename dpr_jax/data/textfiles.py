"""Reading text files line by line with located problems: the layer every input reader sits on.

Corpora, question sets and training files share the same mechanics, kept here once: opening a
file that may be gzipped and may be local or on a bucket (:func:`dpr_jax.storage.open_read`), decoding
UTF-8 line by line so a bad byte is reported on its own line (:func:`iter_text_lines`,
:func:`read_text`) with a leading UTF-8 byte-order mark dropped (Windows tools write one; it is
not part of the first id or JSON value) and UTF-16 named as such, sniffing the first record (:func:`first_nonblank_line`,
:func:`base_suffix`), counting lines for progress bars (:func:`count_lines`), tab-separated rows
read with DPR's ``csv`` settings (:func:`iter_tsv_rows`), JSON records from a JSON array or JSON
lines with the line each one starts on (:func:`iter_json_records`), and :class:`Problem`, a located
problem kept (instead of raised) when a validator or ``on_error="skip"`` wants every problem.

The readers on top of it - :mod:`~dpr_jax.data.passages`, :mod:`~dpr_jax.data.questions` and
:mod:`~dpr_jax.data.training_data` - are siblings: each knows one kind of record (the question
reader borrows the training reader's public DPR field parsers for DPR-format question files).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import sys
from typing import Iterator

from dpr_jax import storage
from dpr_jax.errors import InputError

# DPR raises the csv field limit the same way: Wikipedia blocks can exceed the 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclasses.dataclass(frozen=True)
class Problem:
    """A located problem found while reading, kept instead of raised when validating or skipping."""

    source: str  # "file:line"
    reason: str

    @classmethod
    def from_error(cls, err: InputError) -> "Problem":
        source = err.path if err.line is None else f"{err.path}:{err.line}"
        reason = f"field '{err.field}': {err.reason}" if err.field else err.reason
        return cls(source, reason)

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def base_suffix(path) -> str:
    """The file's extension ignoring a trailing ``.gz`` (``corpus.jsonl.gz`` -> ``.jsonl``)."""
    p = storage.as_path(path)
    if p.suffix == ".gz":
        p = p.with_suffix("")
    return p.suffix.lower()


def _open_binary(path):
    """Open a local file or an object (gunzipping ``.gz``) for binary reading; a missing file becomes an InputError."""
    return storage.open_read(path)


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def strip_bom(path, first: bytes) -> bytes:
    """The file's first bytes without a UTF-8 byte-order mark; UTF-16 is refused with a clear message."""
    if first.startswith(_UTF8_BOM):
        return first[len(_UTF8_BOM):]
    if first.startswith(_UTF16_BOMS):
        raise InputError(path, "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8", line=1)
    return first


def read_raw_line(path, f, lineno: int) -> bytes:
    """The next line of the binary file ``f`` (``b""`` at its end); a read error, such as a corrupt gzip
    stream, is an :class:`InputError` naming ``path`` and the last good line ``lineno``."""
    try:
        return f.readline()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(path, f"cannot read after line {lineno}: {e}") from None


def decode_line(path, raw: bytes, lineno: int) -> str:
    """One line's bytes as UTF-8 text; a bad byte is an :class:`InputError` at ``path:lineno``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason} at byte {e.start})", line=lineno) from None


def iter_text_lines(path) -> Iterator[str]:
    """Yield the UTF-8 lines of a (possibly gzipped) file, line endings kept, decoding line by line.

    Decoding each line separately (instead of a text-mode file's 8 KiB chunks) lets a bad byte be
    reported on its own line; a corrupt gzip stream is reported after the last good line. A leading
    byte-order mark is dropped.
    """
    lineno = 0
    with _open_binary(path) as f:
        while True:
            raw = read_raw_line(path, f, lineno)
            if not raw:
                return
            lineno += 1
            if lineno == 1:
                raw = strip_bom(path, raw)
            yield decode_line(path, raw, lineno)


def read_text(path) -> str:
    """The whole (possibly gzipped) file as a string (no byte-order mark); a bad byte is reported with its line."""
    with _open_binary(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise InputError(path, f"cannot read: {e}") from None
    data = strip_bom(path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason})", line=data.count(b"\n", 0, e.start) + 1) from None


# what json raises on bad input: a syntax error, or a value nested deeper than Python's recursion limit
JSON_ERRORS = (json.JSONDecodeError, RecursionError)


def parse_json(path, text: str, line: int | None = None):
    """``json.loads(text)`` with bad JSON as an :class:`InputError` of ``path`` (at ``line``, or where it broke).

    Absurdly nested input (``[[[[...``) makes ``json`` exceed the recursion limit; that is bad input
    like any other, not a crash.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})",
                         line=e.lineno if line is None else line) from None
    except RecursionError:
        raise InputError(path, "malformed JSON: nested too deeply", line=line) from None


def read_json(path):
    """The one JSON value a whole file holds; malformed JSON is an :class:`InputError` at its line."""
    return parse_json(path, read_text(path))


def head_text(path, size: int = 4096) -> str:
    """The first ``size`` bytes of a (possibly gzipped) file as text (no byte-order mark), for sniffing.

    Unlike :func:`first_nonblank_line` this never reads a whole long line (a one-line JSON file).
    """
    with _open_binary(path) as f:
        try:
            data = f.read(size)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise InputError(path, f"cannot read: {e}") from None
    return strip_bom(path, data).decode("utf-8", errors="ignore")


def first_nonblank_line(path) -> str:
    """The first line with content (stripped), or ``""`` for an empty file; used for format sniffing."""
    for line in iter_text_lines(path):
        if line.strip():
            return line.strip()
    return ""


def count_lines(path) -> int:
    """Number of lines in the (possibly gzipped) file, counting a last line without newline.

    Fast (binary chunks, no decoding); meant for progress-bar totals. For a TSV with a header the
    number of passages is one less.
    """
    with _open_binary(path) as f:
        n, _ = _count_newlines(path, f, None)
    return n


REMOTE_SAMPLE_BYTES = 16 << 20


def estimate_lines(path) -> int:
    """:func:`count_lines` for a local file; for a URL an estimate that reads at most ~16 MiB.

    Progress bars over a corpus on a bucket must not cost a second download of it (13 GB for
    ``psgs_w100.tsv``): the lines of the first :data:`REMOTE_SAMPLE_BYTES` of the stored object
    (compressed bytes for ``.gz``) are scaled by its size. Exact when the object is smaller.
    """
    if not storage.is_remote(path):
        return count_lines(path)
    size = storage.file_size(path)
    with _open_binary(path) as f:
        raw = f.fileobj if isinstance(f, gzip.GzipFile) else f
        n, consumed = _count_newlines(path, f, lambda: raw.tell() >= REMOTE_SAMPLE_BYTES and raw.tell())
    return n if consumed is None else max(n, round(n * size / consumed))


def _count_newlines(path, f, stop) -> tuple[int, int | None]:
    """``(lines, None)`` of the whole stream, or ``(lines so far, stop())`` once ``stop()`` is truthy."""
    n, last = 0, b"\n"
    try:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
            if stop is not None and (where := stop()):
                return n, where
    except (OSError, EOFError) as e:
        raise InputError(path, f"cannot read: {e}") from None
    return n + (last != b"\n"), None


def iter_tsv_rows(path) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of each non-blank row of a tab-separated file (DPR's csv quoting).

    A quoted field may span several lines; the line reported is where the row starts.
    """
    reader = csv.reader(iter_text_lines(path), delimiter="\t")
    prev_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(path, f"malformed TSV: {e}", line=reader.line_num) from None
        line, prev_end = prev_end + 1, reader.line_num
        if row and not (len(row) == 1 and not row[0].strip()):
            yield line, row


def is_json_array(path) -> bool:
    """True when the file's first non-whitespace character is ``[`` (one JSON array)."""
    for line in iter_text_lines(path):
        if line.strip():
            return line.lstrip().startswith("[")
    return False


def iter_json_records(path) -> Iterator[tuple[int, object]]:
    """Yield ``(line, value)`` for each record of a JSON-array or JSON-lines file.

    ``line`` is 1-based: the record's line in JSONL, the line where the element starts in a JSON
    array. A JSONL line that is not valid JSON is yielded as an :class:`InputError` (the caller
    decides whether to stop); a broken JSON array raises, since nothing after the break can be
    trusted. Blank JSONL lines are skipped.
    """
    if is_json_array(path):
        yield from _iter_json_array(path)
    else:
        yield from iter_json_lines(path)


def iter_json_lines(path) -> Iterator[tuple[int, object]]:
    """``(line, value)`` of each non-blank line of a JSON-lines file; a bad line's value is its InputError."""
    for lineno, line in enumerate(iter_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, parse_json(path, line, lineno)
        except InputError as e:
            yield lineno, e


def _iter_json_array(path) -> Iterator[tuple[int, object]]:
    """Decode a JSON array element by element with ``raw_decode`` to know where each one starts."""
    text = read_text(path)
    decoder = json.JSONDecoder()
    n = len(text)

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def error(i: int, msg: str) -> InputError:
        return InputError(path, f"malformed JSON array: {msg}", line=text.count("\n", 0, i) + 1)

    pos = skip_ws(0) + 1  # just after "["
    line, line_pos = 1, 0  # line number of text[line_pos], advanced incrementally
    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        if skip_ws(pos + 1) != n:
            raise error(pos + 1, "unexpected content after the closing ']'")
        return
    while True:
        if pos >= n:
            raise error(pos, "unexpected end of file (missing ']')")
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
        except RecursionError:
            raise error(pos, "an element is nested too deeply") from None
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        yield line, obj
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if skip_ws(pos + 1) != n:
                raise error(pos + 1, "unexpected content after the closing ']'")
            return
        raise error(pos, "expected ',' or ']' after an element")


__all__ = ["JSON_ERRORS", "Problem", "base_suffix", "count_lines", "decode_line", "estimate_lines",
           "first_nonblank_line",
           "head_text", "iter_json_lines", "iter_json_records", "iter_text_lines", "iter_tsv_rows", "parse_json",
           "is_json_array", "read_json", "read_raw_line", "read_text", "strip_bom"]
