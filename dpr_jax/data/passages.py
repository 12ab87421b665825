"""Streaming readers for passage corpora: DPR ``psgs_w100.tsv``, JSON lines and BEIR ``corpus.jsonl``.

Corpora can hold tens of millions of passages, so :func:`read_passages` yields one
:class:`~dpr_jax.data.records.Passage` at a time and its memory does not grow with the corpus, duplicate
ids included (:mod:`dpr_jax.data.unique_ids`: in memory for the first 100k ids, then hashed into
temporary files and checked at the end). Every problem is reported as an
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

Line reading, TSV rows and :class:`~dpr_jax.data.textfiles.Problem` come from
:mod:`dpr_jax.data.textfiles`, the layer all three readers share.
"""

from __future__ import annotations

import json
from typing import Iterator

from dpr_jax.data.records import Passage
from dpr_jax.data.textfiles import (JSON_ERRORS, Problem, base_suffix, count_lines, estimate_lines,
                                    first_nonblank_line, iter_json_lines, iter_tsv_rows)
from dpr_jax.data.unique_ids import IdChecker
from dpr_jax.errors import InputError

PASSAGE_FORMATS = ("tsv", "jsonl", "beir")
_TSV_DEFAULT_COLUMNS = ("id", "text", "title")


def detect_passage_format(path) -> str:
    """Guess ``"tsv"``, ``"jsonl"`` or ``"beir"`` from the extension and the first record."""
    ext = base_suffix(path)
    if ext in (".tsv", ".csv"):
        return "tsv"
    first = first_nonblank_line(path)
    if ext in (".jsonl", ".json", ".ndjson") or first.startswith("{"):
        try:
            obj = json.loads(first) if first else {}
        except JSON_ERRORS:
            return "jsonl"  # the reader reports the malformed line with its number
        return "beir" if isinstance(obj, dict) and "_id" in obj and "id" not in obj else "jsonl"
    if "\t" in first:
        return "tsv"
    raise InputError(path, "cannot tell the passage format from the extension or the first line; "
                           f"pass fmt= one of {', '.join(PASSAGE_FORMATS)}")


def _is_tsv_header(row: list[str]) -> bool:
    """Whether a TSV row names the columns (``id``, ``text`` and optionally ``title``, any order)."""
    names = [c.strip().lower() for c in row]
    return {"id", "text"} <= set(names) and set(names) <= set(_TSV_DEFAULT_COLUMNS)


def estimate_passage_count(path, fmt: str | None = None) -> int:
    """The number of passages for a progress-bar total, without parsing the corpus.

    Lines of the file, less a TSV header line. Exact for JSON lines and for TSV without quoted
    multi-line fields (for a file on a bucket, estimated from its first 16 MiB: see
    :func:`~dpr_jax.data.textfiles.estimate_lines`); meant for progress display, never for correctness.
    """
    fmt = fmt or detect_passage_format(path)
    n = estimate_lines(path)
    if fmt == "tsv" and n:
        first = next(iter_tsv_rows(path), (0, []))[1]
        n -= _is_tsv_header(first)
    return n


def read_passages(path, *, fmt: str | None = None, problems: list | None = None,
                  check_duplicates: bool = True) -> Iterator[Passage]:
    """Yield the passages of a corpus file one by one, in file order.

    Without ``problems`` the first bad record raises :class:`InputError` (file:line, field). With a
    list, bad records (malformed JSON, missing id/text, wrong column count, duplicate id) are
    appended to it as :class:`Problem` and skipped, so a validator can report all of them. Errors
    that make the rest of the file unreadable (bad UTF-8, corrupt gzip) always raise.

    Duplicate ids (``check_duplicates``) are reported with the lines of both occurrences. Among
    the first 100k ids a repeat is reported when it is read; past them the check costs no memory
    per passage and repeats are reported after the last passage has been yielded (at most the
    first 1,000 of them as problems, then a count), so a consumer must not treat the passages as
    checked until the iteration has ended.
    """
    fmt = fmt or detect_passage_format(path)
    if fmt not in PASSAGE_FORMATS:
        raise InputError(path, f"unknown passage format {fmt!r}; expected one of {', '.join(PASSAGE_FORMATS)}")
    records = _tsv_records(path) if fmt == "tsv" else _json_records(path, id_key="_id" if fmt == "beir" else "id")
    checker = IdChecker(expected=lambda: estimate_lines(path)) if check_duplicates else None
    try:
        for line, item in records:
            if isinstance(item, InputError):
                err = item
            elif checker is not None and (first := checker.add(item.id, line)) is not None:
                err = _duplicate_error(path, item.id, first, line)
            else:
                yield item
                continue
            if problems is None:
                raise err
            problems.append(Problem.from_error(err))
        if checker is not None:
            found, total = checker.duplicates(limit=1 if problems is None else _MAX_LISTED_DUPLICATES)
            for dup in found:
                err = _duplicate_error(path, dup.id, dup.first, dup.second)
                if problems is None:
                    raise err
                problems.append(Problem.from_error(err))
            if total > len(found):
                problems.append(Problem(str(path), f"{total - len(found)} more duplicate passage ids not listed"))
    finally:
        if checker is not None:
            checker.close()


_MAX_LISTED_DUPLICATES = 1000


def _duplicate_error(path, pid: str, first_line: int, line: int) -> InputError:
    return InputError(path, f"duplicate passage id {pid!r} (first on line {first_line})", line=line, field="id")


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
    for lineno, obj in iter_json_lines(path):
        if isinstance(obj, InputError):
            yield lineno, obj
            continue
        if not isinstance(obj, dict):
            yield lineno, InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
            continue
        yield lineno, _passage_from_fields(path, lineno, obj.get(id_key), obj.get("text"), obj.get("title"),
                                           id_field=id_key)


def _tsv_records(path):
    columns = None
    for line, row in iter_tsv_rows(path):
        if columns is None:
            names = [c.strip().lower() for c in row]
            if _is_tsv_header(row):
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


__all__ = ["PASSAGE_FORMATS", "detect_passage_format", "estimate_passage_count", "load_passages", "read_passages"]
