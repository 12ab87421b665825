"""Streaming readers for passage corpora: DPR ``psgs_w100.tsv``, JSON lines and BEIR ``corpus.jsonl``.

Corpora can hold tens of millions of passages, so :func:`read_passages` yields one
:class:`~dpr_jax.data.records.Passage` at a time and its memory does not grow with the corpus (apart
from the set of ids kept to detect duplicates). Every problem is reported as an
:class:`~dpr_jax.errors.InputError` naming the file, the line and the field.

Formats (``fmt``; detected from the extension and the first record when ``None``, ``.gz`` allowed):

- ``"tsv"``: DPR's ``id<TAB>text<TAB>title`` with the header line ``id\\ttext\\ttitle``, read with the
  :mod:`csv` module and a tab delimiter exactly like facebookresearch/DPR, so quoted fields (with
  ``""`` escapes, even spanning lines) work. A header line naming the columns (``id``, ``text`` and
  optionally ``title``, in any order) is recognised; without one the columns are ``id, text, title``.
- ``"jsonl"``: one ``{"id", "title", "text"}`` object per line (``title`` optional).
- ``"beir"``: BEIR ``corpus.jsonl``, ``{"_id", "title", "text", ...}``.

A passage needs a non-empty id and a string ``text``; an empty text is accepted only when the title
is not empty (some BEIR corpora have title-only documents).

This module also holds the small helpers the other readers share: :func:`iter_text_lines` and
:func:`read_text` (gzip-aware; UTF-8 decoded line by line so a bad byte is located) and
:class:`Problem` (a located, non-fatal problem collected when validating instead of failing).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import sys
from pathlib import Path
from typing import Iterator

from dpr_jax.data.records import Passage
from dpr_jax.errors import InputError

PASSAGE_FORMATS = ("tsv", "jsonl", "beir")
_TSV_DEFAULT_COLUMNS = ("id", "text", "title")

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
    p = Path(path)
    if p.suffix == ".gz":
        p = p.with_suffix("")
    return p.suffix.lower()


def _open_binary(path):
    """Open a file (gunzipping ``.gz``) for binary reading; a missing file becomes an InputError."""
    path = Path(path)
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a file") from None
    except OSError as e:
        raise InputError(path, f"cannot open: {e.strerror or e}") from None


def iter_text_lines(path) -> Iterator[str]:
    """Yield the UTF-8 lines of a (possibly gzipped) file, line endings kept, decoding line by line.

    Decoding each line separately (instead of a text-mode file's 8 KiB chunks) lets a bad byte be
    reported on its own line; a corrupt gzip stream is reported after the last good line.
    """
    lineno = 0
    with _open_binary(path) as f:
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise InputError(path, f"cannot read after line {lineno}: {e}") from None
            if not raw:
                return
            lineno += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(path, f"not UTF-8 text ({e.reason} at byte {e.start})", line=lineno) from None


def read_text(path) -> str:
    """The whole (possibly gzipped) file as a string; a bad byte is reported with its line."""
    with _open_binary(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise InputError(path, f"cannot read: {e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason})", line=data.count(b"\n", 0, e.start) + 1) from None


def first_nonblank_line(path) -> str:
    """The first line with content (stripped), or ``""`` for an empty file; used for format sniffing."""
    for line in iter_text_lines(path):
        if line.strip():
            return line.strip()
    return ""


def detect_passage_format(path) -> str:
    """Guess ``"tsv"``, ``"jsonl"`` or ``"beir"`` from the extension and the first record."""
    ext = base_suffix(path)
    if ext in (".tsv", ".csv"):
        return "tsv"
    first = first_nonblank_line(path)
    if ext in (".jsonl", ".json", ".ndjson") or first.startswith("{"):
        try:
            obj = json.loads(first) if first else {}
        except json.JSONDecodeError:
            return "jsonl"  # the reader reports the malformed line with its number
        return "beir" if isinstance(obj, dict) and "_id" in obj and "id" not in obj else "jsonl"
    if "\t" in first:
        return "tsv"
    raise InputError(path, "cannot tell the passage format from the extension or the first line; "
                           f"pass fmt= one of {', '.join(PASSAGE_FORMATS)}")


def count_lines(path) -> int:
    """Number of lines in the (possibly gzipped) file, counting a last line without newline.

    Fast (binary chunks, no decoding); meant for progress-bar totals. For a TSV with a header the
    number of passages is one less.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    last = b"\n"
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, EOFError) as e:
        raise InputError(path, f"cannot read: {e}") from None
    return n + (last != b"\n")


def read_passages(path, *, fmt: str | None = None, problems: list | None = None,
                  check_duplicates: bool = True) -> Iterator[Passage]:
    """Yield the passages of a corpus file one by one, in file order.

    Without ``problems`` the first bad record raises :class:`InputError` (file:line, field). With a
    list, bad records (malformed JSON, missing id/text, wrong column count, duplicate id) are
    appended to it as :class:`Problem` and skipped, so a validator can report all of them. Errors
    that make the rest of the file unreadable (bad UTF-8, corrupt gzip) always raise.
    """
    fmt = fmt or detect_passage_format(path)
    if fmt not in PASSAGE_FORMATS:
        raise InputError(path, f"unknown passage format {fmt!r}; expected one of {', '.join(PASSAGE_FORMATS)}")
    records = _tsv_records(path) if fmt == "tsv" else _json_records(path, id_key="_id" if fmt == "beir" else "id")
    seen: set[str] = set()
    for line, item in records:
        if isinstance(item, InputError):
            err = item
        elif check_duplicates and item.id in seen:
            err = InputError(path, f"duplicate passage id {item.id!r}", line=line, field="id")
        else:
            if check_duplicates:
                seen.add(item.id)
            yield item
            continue
        if problems is None:
            raise err
        problems.append(Problem.from_error(err))


def load_passages(path, *, fmt: str | None = None) -> dict[str, Passage]:
    """All passages of a small corpus as ``{id: Passage}`` (file order kept)."""
    return {p.id: p for p in read_passages(path, fmt=fmt)}


# The record readers below yield (line, Passage or InputError); the line is where the record starts.


def _passage_from_fields(path, line: int, pid, text, title, *, id_field: str, text_field: str = "text",
                         title_field: str = "title"):
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        return InputError(path, "missing or empty passage id", line=line, field=id_field)
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        return InputError(path, f"passage id must be a string or integer, got {type(pid).__name__}",
                          line=line, field=id_field)
    if text is None:
        return InputError(path, "missing passage text", line=line, field=text_field)
    if not isinstance(text, str):
        return InputError(path, f"must be a string, got {type(text).__name__}", line=line, field=text_field)
    if title is None:
        title = ""
    if not isinstance(title, str):
        return InputError(path, f"must be a string, got {type(title).__name__}", line=line, field=title_field)
    if not text.strip() and not title.strip():
        return InputError(path, "empty passage (no text and no title)", line=line, field=text_field)
    return Passage(id=str(pid), text=text, title=title)


def _json_records(path, *, id_key: str):
    for lineno, line in enumerate(iter_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=lineno)
            continue
        if not isinstance(obj, dict):
            yield lineno, InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
            continue
        yield lineno, _passage_from_fields(path, lineno, obj.get(id_key), obj.get("text"), obj.get("title"),
                                           id_field=id_key)


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


def _tsv_records(path):
    columns = None
    for line, row in iter_tsv_rows(path):
        if columns is None:
            names = [c.strip().lower() for c in row]
            if {"id", "text"} <= set(names) and set(names) <= set(_TSV_DEFAULT_COLUMNS):
                if len(set(names)) != len(names):
                    raise InputError(path, f"bad header {row!r}: repeated column name", line=line)
                columns = names  # a header line naming the columns (DPR's is "id text title")
                continue
            columns = list(_TSV_DEFAULT_COLUMNS)
        if len(row) != len(columns):
            yield line, InputError(path, f"expected {len(columns)} tab-separated columns "
                                         f"({', '.join(columns)}), found {len(row)}", line=line)
            continue
        fields = dict(zip(columns, row))
        yield line, _passage_from_fields(path, line, fields["id"], fields["text"], fields.get("title"),
                                         id_field="id")


__all__ = ["PASSAGE_FORMATS", "Problem", "base_suffix", "count_lines", "detect_passage_format",
           "first_nonblank_line", "iter_text_lines", "load_passages", "read_passages", "read_text"]
