"""Readers for evaluation questions: JSON lines, DPR QA TSV, BEIR queries + qrels, DPR retriever JSON.

Formats (``fmt``; detected from the extension and first record when ``None``, ``.gz`` allowed):

- ``"jsonl"``: ``{"id"?, "question", "answers"?: [...], "positive_ids"?: [...]}`` per line. A missing
  id becomes the record's 0-based position in the file (its line index when there are no blank lines).
- ``"tsv"``: DPR's QA files (``nq-test.qa.csv`` and friends): ``question<TAB>["answer", ...]``, no
  header, read with :mod:`csv` like DPR. The answer list is parsed with :func:`json.loads`, falling
  back to :func:`ast.literal_eval` for Python-style lists (``['O\\'Neil', "x"]``), never ``eval``.
  The id is the 0-based row index.
- ``"beir"``: BEIR ``queries.jsonl`` (``{"_id", "text"}``); positives come from a qrels file.
- ``"dpr"``: a DPR retriever JSON array or JSON lines (``question``, ``answers``,
  ``positive_ctxs``); positive ids are the ctxs' ``passage_id``/``id``/``psg_id``.

``qrels`` (BEIR TSV ``query-id<TAB>corpus-id<TAB>score``, header optional, score > 0 = positive)
may be given with any format; it then *replaces* the questions' positive ids and, as in BEIR, only
the questions that have at least one positive in it are kept (the count dropped is logged).
"""

from __future__ import annotations

import ast
import csv
import json
import logging
from typing import Iterator

from dpr_jax.data.records import Question
from dpr_jax.data.textfiles import (JSON_ERRORS, Problem, base_suffix, first_nonblank_line, iter_json_records, iter_text_lines,
                                    iter_tsv_rows)
from dpr_jax.data.training_data import CTX_ID_KEYS, parse_answers
from dpr_jax.errors import InputError

log = logging.getLogger(__name__)

QUESTION_FORMATS = ("jsonl", "tsv", "beir", "dpr")


def detect_question_format(path) -> str:
    """Guess the question file format from its extension and first record."""
    ext = base_suffix(path)
    if ext in (".tsv", ".csv"):
        return "tsv"
    first = first_nonblank_line(path)
    if first.startswith("["):
        return "dpr"
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except JSON_ERRORS:
            return "jsonl"  # reported with its line by the reader
        if isinstance(obj, dict):
            if "positive_ctxs" in obj:
                return "dpr"
            if "_id" in obj and "question" not in obj:
                return "beir"
        return "jsonl"
    if "\t" in first:
        return "tsv"
    raise InputError(path, "cannot tell the question format from the extension or the first line; "
                           f"pass fmt= one of {', '.join(QUESTION_FORMATS)}")


def read_questions(path, *, fmt: str | None = None, qrels=None, problems: list | None = None) -> list[Question]:
    """Read all questions of a file (see the module docstring for formats and ``qrels``).

    Without ``problems`` the first bad record raises :class:`InputError` (file:line, field); with a
    list, bad records are appended to it as :class:`Problem` and skipped (used by validation).
    """
    fmt = fmt or detect_question_format(path)
    if fmt not in QUESTION_FORMATS:
        raise InputError(path, f"unknown question format {fmt!r}; expected one of {', '.join(QUESTION_FORMATS)}")
    parse = {"jsonl": _jsonl_questions, "tsv": _tsv_questions, "beir": _beir_questions, "dpr": _dpr_questions}[fmt]
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for line, item in parse(path):
        if not isinstance(item, InputError) and item.id in seen:
            item = InputError(path, f"duplicate question id {item.id!r} (first on line {seen[item.id]})",
                              line=line, field="id")
        if isinstance(item, InputError):
            if problems is None:
                raise item
            problems.append(Problem.from_error(item))
            continue
        seen[item.id] = line
        questions.append(item)
    if not questions and not problems:
        raise InputError(path, "no questions in file")
    if qrels is not None:
        kept = apply_qrels(questions, read_qrels(qrels), qrels)
        if not kept and questions:
            raise InputError(qrels, f"none of the {len(questions)} questions of {path} has a positive in the "
                                    "qrels (do its query ids match the question ids?)")
        questions = kept
    return questions


def read_qrels_grades(path) -> dict[str, dict[str, int | float]]:
    """BEIR qrels TSV -> ``{query_id: {corpus_id: grade}}``, every judgement in file order.

    Grades 0 and below are kept (trec_eval counts a judged non-relevant document as judged); graded
    measures such as nDCG use the grade as the gain. A repeated (query, corpus) pair keeps its last
    grade, as BEIR's loader does; how many were repeated with another grade is logged.
    """
    grades: dict[str, dict[str, int | float]] = {}
    changed = 0
    reader = csv.reader(iter_text_lines(path), delimiter="\t")
    first = True
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        is_first, first = first, False
        if len(row) not in (3, 4):  # TREC style "qid 0 docid score" has 4 columns
            raise InputError(path, f"expected 3 tab-separated columns (query-id, corpus-id, score), "
                                   f"found {len(row)}", line=line)
        qid, did, score = (row[0], row[1], row[2]) if len(row) == 3 else (row[0], row[2], row[3])
        try:
            value = float(score)
        except ValueError:
            if is_first:  # header line, e.g. "query-id  corpus-id  score"
                continue
            raise InputError(path, f"score {score!r} is not a number", line=line, field="score") from None
        if not qid.strip() or not did.strip():
            raise InputError(path, "empty query or corpus id", line=line)
        judged = grades.setdefault(qid.strip(), {})
        grade = int(value) if value.is_integer() else value
        changed += did.strip() in judged and judged[did.strip()] != grade
        judged[did.strip()] = grade
    if changed:
        log.warning("%s: %d judgement(s) repeated with another grade; the last one is used", path, changed)
    return grades


def positives_of(grades: dict[str, dict[str, int | float]]) -> dict[str, tuple[str, ...]]:
    """``{query_id: corpus ids with grade > 0}`` of :func:`read_qrels_grades`' result; queries without any left out."""
    positives = {q: tuple(d for d, g in judged.items() if g > 0) for q, judged in grades.items()}
    return {q: ids for q, ids in positives.items() if ids}


def read_qrels(path) -> dict[str, tuple[str, ...]]:
    """BEIR qrels TSV -> ``{query_id: positive corpus ids}`` (grade > 0, file order, no duplicates)."""
    return positives_of(read_qrels_grades(path))


def apply_qrels(questions: list[Question], qrels: dict[str, tuple[str, ...]], source="qrels") -> list[Question]:
    """Questions with positive ids from ``qrels``; those without any positive are left out (logged)."""
    kept = [Question(q.id, q.question, q.answers, qrels[q.id]) for q in questions if q.id in qrels]
    if len(kept) < len(questions):
        log.info("%s: %d of %d questions have no positive in the qrels and are left out",
                 source, len(questions) - len(kept), len(questions))
    unknown = len(set(qrels) - {q.id for q in questions})
    if unknown:
        log.warning("%s: %d query id(s) in the qrels are not among the questions", source, unknown)
    return kept


def _string_field(path, line, obj, key, *, required=True):
    value = obj.get(key)
    if value is None:
        if required:
            raise InputError(path, "missing", line=line, field=key)
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key in ("id", "_id"):
        return str(value)
    if not isinstance(value, str):
        raise InputError(path, f"must be a string, got {type(value).__name__}", line=line, field=key)
    if not value.strip():
        raise InputError(path, "empty", line=line, field=key)
    return value


def _id_list(path, line, value, field) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(path, f"must be a list of ids, got {type(value).__name__}", line=line, field=field)
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
            raise InputError(path, "must be a non-empty string or integer id", line=line, field=f"{field}[{i}]")
    return tuple(dict.fromkeys(str(v) for v in value))


def _records(path) -> Iterator[tuple[int, int, object]]:
    """``(index, line, obj)`` of a JSON file's records; a malformed line is passed on as an error."""
    for index, (line, obj) in enumerate(iter_json_records(path)):
        if not isinstance(obj, (dict, InputError)):
            obj = InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=line)
        yield index, line, obj


def _each_record(path, parse) -> Iterator[tuple[int, Question | InputError]]:
    """``(line, Question)`` per JSON record via ``parse(index, line, obj)``; a bad one yields its InputError."""
    for index, line, obj in _records(path):
        try:
            if isinstance(obj, InputError):
                raise obj
            yield line, parse(index, line, obj)
        except InputError as e:
            yield line, e


def _question_head(path, index: int, line: int, obj: dict) -> tuple[str, str, tuple[str, ...]]:
    """id (default: the record's index), question text and answers, common to JSONL and DPR records."""
    qid = _string_field(path, line, obj, "id", required=False) or str(index)
    question = _string_field(path, line, obj, "question")
    answers = parse_answers(path, line, obj["answers"]) if obj.get("answers") is not None else ()
    return qid, question, answers


def _jsonl_questions(path):
    def parse(index, line, obj):
        pos = obj.get("positive_ids")
        positive_ids = _id_list(path, line, pos, "positive_ids") if pos is not None else ()
        return Question(*_question_head(path, index, line, obj), positive_ids)

    return _each_record(path, parse)


def _beir_questions(path):
    return _each_record(path, lambda index, line, obj: Question(_string_field(path, line, obj, "_id"),
                                                                _string_field(path, line, obj, "text")))


def _dpr_questions(path):
    def parse(index, line, obj):
        head = _question_head(path, index, line, obj)
        ctxs = obj.get("positive_ctxs") or []
        if not isinstance(ctxs, list):
            raise InputError(path, f"must be a list, got {type(ctxs).__name__}", line=line, field="positive_ctxs")
        ids = []
        for i, ctx in enumerate(ctxs):
            pid = next((ctx[k] for k in CTX_ID_KEYS if ctx.get(k) is not None), None) \
                if isinstance(ctx, dict) else None
            if pid is None or isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
                raise InputError(path, f"needs a passage id ({'/'.join(CTX_ID_KEYS)})", line=line,
                                 field=f"positive_ctxs[{i}]")
            ids.append(str(pid))
        return Question(*head, tuple(dict.fromkeys(ids)))

    return _each_record(path, parse)


def parse_answer_list(path, line: int, text: str) -> tuple[str, ...]:
    """DPR QA TSV answer column: a JSON list, else a Python literal list (``ast.literal_eval``).

    Both parsers recurse on nesting, so absurdly nested input (``[[[[...``) is an error of the
    field like any other malformed list, not a crash.
    """
    try:
        value = json.loads(text)
    except JSON_ERRORS:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise InputError(path, f"not a JSON or Python list of strings: {text[:80]!r}",
                             line=line, field="answers") from None
    if isinstance(value, tuple):
        value = list(value)
    return parse_answers(path, line, value)


def _tsv_questions(path):
    for index, (line, row) in enumerate(iter_tsv_rows(path)):
        try:
            if len(row) != 2:
                raise InputError(path, f"expected 2 tab-separated columns (question, answer list), "
                                       f"found {len(row)}", line=line)
            if not row[0].strip():
                raise InputError(path, "empty question", line=line, field="question")
            yield line, Question(str(index), row[0], parse_answer_list(path, line, row[1]))
        except InputError as e:
            yield line, e


__all__ = ["QUESTION_FORMATS", "apply_qrels", "detect_question_format", "parse_answer_list", "read_qrels",
           "positives_of", "read_qrels_grades", "read_questions"]
