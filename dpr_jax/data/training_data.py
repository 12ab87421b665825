"""DPR retriever training records: reading with validation, and writing.

The input is facebookresearch/DPR's retriever format, either one JSON array (like
``biencoder-nq-train.json``) or JSON lines (one record per line), optionally gzipped::

    {"question": "...", "answers": ["..."],
     "positive_ctxs": [{"title": "...", "text": "...", "passage_id": "..."}],
     "negative_ctxs": [...], "hard_negative_ctxs": [...]}

A ctx's id is read from ``passage_id``, ``id`` or ``psg_id`` (the spellings DPR's files use) and may
be absent (``""``). A ctx's ``score`` (a retriever's score of the passage for the question: BM25 in
DPR's files, whatever ``dpr-jax mine`` used in its output) is read as the teacher score of the
distillation losses; it may be absent or null, and otherwise must be a finite number (a numeric
string is accepted). Other keys such as ``has_answer`` are ignored. ``answers`` may be absent
(empty), but when present must be a list of strings.

Every record carries ``source = "file:line"`` (for a JSON array, the line where the record's ``{``
is), and every problem found - no positive, empty question, missing field, empty ctx text,
non-list answers... - is a :class:`~dpr_jax.data.textfiles.Problem` at that place. With
``on_error="fail"`` the first one raises :class:`~dpr_jax.errors.InputError`; with ``"skip"`` the
bad records are dropped, returned, and summarised in a logged warning: never a silent drop.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Iterable

from dpr_jax import storage
from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.data.textfiles import Problem, iter_json_records
from dpr_jax.errors import InputError

log = logging.getLogger(__name__)

CTX_ID_KEYS = ("passage_id", "id", "psg_id")
_CTX_LISTS = (("positive_ctxs", True), ("negative_ctxs", False), ("hard_negative_ctxs", False))


def parse_ctx(path, line: int, ctx, field: str) -> Passage:
    """One ``*_ctxs`` entry as a :class:`Passage`; raises :class:`InputError` when it is unusable."""
    if not isinstance(ctx, dict):
        raise InputError(path, f"must be an object, got {type(ctx).__name__}", line=line, field=field)
    text = ctx.get("text")
    if text is None:
        raise InputError(path, "missing 'text'", line=line, field=field)
    if not isinstance(text, str):
        raise InputError(path, f"'text' must be a string, got {type(text).__name__}", line=line, field=field)
    if not text.strip():
        raise InputError(path, "empty 'text'", line=line, field=field)
    title = ctx.get("title")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise InputError(path, f"'title' must be a string, got {type(title).__name__}", line=line, field=field)
    pid = next((ctx[k] for k in CTX_ID_KEYS if ctx.get(k) is not None), "")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        raise InputError(path, f"id must be a string or integer, got {type(pid).__name__}", line=line, field=field)
    return Passage(id=str(pid), text=text, title=title)


def parse_score(path, line: int, ctx: dict, field: str) -> float | None:
    """A ctx's ``score`` as a float (None when absent or null); raises :class:`InputError` when unusable."""
    score = ctx.get("score")
    if score is None:
        return None
    if isinstance(score, str):
        try:
            value = float(score)
        except ValueError:
            raise InputError(path, f"'score' {score!r} is not a number", line=line, field=field) from None
    elif isinstance(score, (int, float)) and not isinstance(score, bool):
        value = float(score)
    else:
        raise InputError(path, f"'score' must be a number, got {type(score).__name__}", line=line, field=field)
    if not math.isfinite(value):
        raise InputError(path, f"'score' must be finite, got {score!r}", line=line, field=field)
    return value


def parse_answers(path, line: int, answers, field: str = "answers") -> tuple[str, ...]:
    """A list of answer strings (numbers are accepted and turned into strings)."""
    if not isinstance(answers, list):
        raise InputError(path, f"must be a list of strings, got {type(answers).__name__}", line=line, field=field)
    out = []
    for i, a in enumerate(answers):
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        if not isinstance(a, str):
            raise InputError(path, f"must be a string, got {type(a).__name__}", line=line, field=f"{field}[{i}]")
        out.append(a)
    return tuple(out)


def parse_training_record(path, line: int, obj) -> TrainRecord:
    """Validate one DPR retriever record; raises :class:`InputError` naming the field."""
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=line)
    question = obj.get("question")
    if question is None:
        raise InputError(path, "missing", line=line, field="question")
    if not isinstance(question, str):
        raise InputError(path, f"must be a string, got {type(question).__name__}", line=line, field="question")
    if not question.strip():
        raise InputError(path, "empty question", line=line, field="question")
    answers = parse_answers(path, line, obj["answers"]) if obj.get("answers") is not None else ()
    ctx_lists, score_lists = {}, {}
    for key, required in _CTX_LISTS:
        value = obj.get(key)
        if value is None:
            if required:
                raise InputError(path, "missing (every record needs at least one positive)", line=line, field=key)
            value = []
        if not isinstance(value, list):
            raise InputError(path, f"must be a list, got {type(value).__name__}", line=line, field=key)
        if required and not value:
            raise InputError(path, "no positive passage", line=line, field=key)
        ctx_lists[key] = tuple(parse_ctx(path, line, c, f"{key}[{i}]") for i, c in enumerate(value))
        score_lists[key] = tuple(parse_score(path, line, c, f"{key}[{i}]") for i, c in enumerate(value))
    return TrainRecord(question=question, answers=answers, positives=ctx_lists["positive_ctxs"],
                       negatives=ctx_lists["negative_ctxs"], hard_negatives=ctx_lists["hard_negative_ctxs"],
                       source=f"{path}:{line}", positive_scores=score_lists["positive_ctxs"],
                       negative_scores=score_lists["negative_ctxs"],
                       hard_negative_scores=score_lists["hard_negative_ctxs"])


def read_training_records(path, *, on_error: str = "fail") -> tuple[list[TrainRecord], list[Problem]]:
    """Read and validate a DPR retriever training file (JSON array or JSON lines, ``.gz`` allowed).

    ``on_error="fail"`` raises :class:`InputError` at the first bad record; ``"skip"`` drops bad
    records, logs a warning with their count and first locations, and returns them as problems.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    records: list[TrainRecord] = []
    problems: list[Problem] = []
    for line, obj in iter_json_records(path):
        try:
            if isinstance(obj, InputError):
                raise obj
            records.append(parse_training_record(path, line, obj))
        except InputError as e:
            if on_error == "fail":
                raise
            problems.append(Problem.from_error(e))
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        log.warning("skipped %d bad training record(s) of %d in %s (kept %d): %s%s", len(problems),
                    len(problems) + len(records), path, len(records), shown,
                    " ..." if len(problems) > 3 else "")
    if not records and not problems:
        raise InputError(path, "no training records in file")
    return records, problems


def ctx_to_dict(p: Passage, score: float | None = None) -> dict:
    """A passage as a DPR ctx object (with its teacher ``score`` when there is one)."""
    out = {"title": p.title, "text": p.text, "passage_id": p.id}
    if score is not None:
        out["score"] = float(score)
    return out


def train_record_to_dict(rec: TrainRecord, *, record_id: str | None = None) -> dict:
    """A record in DPR's retriever form (``id`` first when given)."""
    out = {} if record_id is None else {"id": record_id}
    out.update(question=rec.question, answers=list(rec.answers),
               **{key: [ctx_to_dict(p, s) for p, s in zip(getattr(rec, kind), rec.scores(kind))]
                  for key, kind in (("positive_ctxs", "positives"), ("negative_ctxs", "negatives"),
                                    ("hard_negative_ctxs", "hard_negatives"))})
    return out


def write_training_records(path, records: Iterable[TrainRecord], *, ids: Iterable[str] | None = None) -> int:
    """Write records as DPR retriever JSON lines, atomically; returns how many were written.

    ``ids``, when given, is a parallel sequence of record ids stored as ``"id"`` (e.g. SQuAD's
    question ids); the readers ignore it.
    """
    ids_iter = iter(ids) if ids is not None else None
    n = 0
    with storage.atomic_open(path) as f:
        for rec in records:
            rid = next(ids_iter) if ids_iter is not None else None
            f.write(json.dumps(train_record_to_dict(rec, record_id=rid), ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


__all__ = ["CTX_ID_KEYS", "ctx_to_dict", "parse_answers", "parse_ctx", "parse_score",
           "parse_training_record", "read_training_records", "train_record_to_dict", "write_training_records"]
