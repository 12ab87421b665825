"""Retrieval run files: the ranked passages per question that search, BM25 and hybrid produce.

Two formats are read and written:

* **DPR result JSON** (what facebookresearch/DPR's ``dense_retriever.py`` writes, and what its
  reader and evaluation scripts consume)::

      [{"id": "q1", "question": "...", "answers": ["..."], "positive_ids": ["p7"],
        "ctxs": [{"id": "p7", "title": "...", "text": "...", "score": 81.2, "has_answer": true}, ...]}]

  ``id`` and ``positive_ids`` are dpr-jax additions; plain DPR output without them is read too
  (questions are then numbered by position).
* **TREC run** (``qid Q0 docid rank score tag``, one hit per line), for trec_eval / ir_measures /
  pyserini. It carries no question text or answers, so reading one takes the questions from the
  question file.

In memory a run is a list of :class:`RunEntry`, one per question, hits best first.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Iterable, Sequence

from dpr_jax import storage
from dpr_jax.data.records import Passage, Question
from dpr_jax.data.textfiles import head_text, iter_text_lines, read_json
from dpr_jax.errors import DprJaxError, InputError


@dataclasses.dataclass
class Hit:
    """One retrieved passage. ``has_answer`` is None until answers have been matched."""

    id: str
    score: float
    title: str = ""
    text: str = ""
    has_answer: bool | None = None


@dataclasses.dataclass
class RunEntry:
    """The ranked hits (best first) retrieved for one question."""

    question: Question
    hits: list[Hit]


# ----------------------------------------------------------------------------------------------
# writing


def write_dpr_run(path, entries: Sequence[RunEntry], include_text: bool = True) -> None:
    """Write ``entries`` as DPR result JSON, atomically.

    ``include_text=False`` leaves out each hit's title and text (a 100-hit run over 10k questions
    shrinks from ~1 GB to a few tens of MB); ``has_answer`` is kept, so it still evaluates.
    """
    with storage.atomic_open(path) as f:
        f.write("[\n")
        for i, e in enumerate(entries):
            q = e.question
            obj = {
                "id": q.id,
                "question": q.question,
                "answers": list(q.answers),
                "positive_ids": list(q.positive_ids),
                "ctxs": [
                    ({"id": h.id, "title": h.title, "text": h.text} if include_text else {"id": h.id})
                    | {"score": float(h.score), "has_answer": h.has_answer}
                    for h in e.hits
                ],
            }
            f.write(json.dumps(obj, ensure_ascii=False))
            f.write(",\n" if i + 1 < len(entries) else "\n")
        f.write("]\n")


def write_trec_run(path, entries: Sequence[RunEntry], tag: str = "dpr-jax") -> None:
    """Write ``entries`` as a TREC run (``qid Q0 docid rank score tag``), atomically."""
    if not tag or any(c.isspace() for c in tag):
        raise DprJaxError(f"TREC run tag must be one word, got {tag!r}")
    with storage.atomic_open(path) as f:
        for e in entries:
            qid = e.question.id
            if not qid or any(c.isspace() for c in qid):
                raise DprJaxError(f"question id {qid!r} cannot be written to a TREC run (empty or has spaces)")
            for rank, h in enumerate(e.hits, start=1):
                if not h.id or any(c.isspace() for c in h.id):
                    raise DprJaxError(f"passage id {h.id!r} cannot be written to a TREC run (empty or has spaces)")
                f.write(f"{qid} Q0 {h.id} {rank} {float(h.score):.6f} {tag}\n")


# ----------------------------------------------------------------------------------------------
# reading


def read_run(path, questions: Sequence[Question] | None = None) -> list[RunEntry]:
    """Read a DPR result JSON or TREC run file (detected from its first character).

    For a TREC run, ``questions`` supplies question text, answers and positive ids and fixes the
    order (a question with no line in the run gets no hits); without it entries carry only ids.
    For a JSON run, ``questions`` (matched by id) fills in answers and positive ids the file lacks.
    """
    path = storage.as_path(path)
    if not path.is_file():
        raise InputError(path, "run file not found")
    if head_text(path).lstrip().startswith(("[", "{")):
        entries = _read_dpr_json(path)
        return _merge_questions(path, entries, questions) if questions is not None else entries
    return _read_trec(path, questions)


def _as_str_list(path, value, index: int, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise InputError(path, f"question #{index}: expected a list of strings, got {type(value).__name__}",
                         field=field)
    return tuple(str(v) for v in value)


def _read_dpr_json(path) -> list[RunEntry]:
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(path, "a DPR result file must hold a JSON list of questions")
    if not data:
        raise InputError(path, "no questions in the run (an empty JSON list)")
    entries = []
    for i, obj in enumerate(data):
        where = f"question #{i}"
        if not isinstance(obj, dict):
            raise InputError(path, f"{where}: expected an object, got {type(obj).__name__}")
        if "question" not in obj:
            raise InputError(path, f"{where}: missing", field="question")
        ctxs = obj.get("ctxs")
        if not isinstance(ctxs, list):
            raise InputError(path, f"{where}: expected a list of retrieved passages", field="ctxs")
        hits = []
        for j, c in enumerate(ctxs):
            if not isinstance(c, dict) or "id" not in c:
                raise InputError(path, f"{where}, passage #{j}: expected an object with an id", field="ctxs")
            try:
                score = float(c.get("score"))  # DPR itself writes scores as strings
            except (TypeError, ValueError):
                raise InputError(path, f"{where}, passage #{j}: score {c.get('score')!r} is not a number",
                                 field="score") from None
            if math.isnan(score):
                raise InputError(path, f"{where}, passage #{j}: score is NaN", field="score")
            ha = c.get("has_answer")
            hits.append(Hit(id=str(c["id"]), score=score, title=str(c.get("title") or ""),
                            text=str(c.get("text") or ""), has_answer=None if ha is None else bool(ha)))
        q = Question(
            id=str(obj.get("id", i)),
            question=str(obj["question"]),
            answers=_as_str_list(path, obj.get("answers"), i, "answers"),
            positive_ids=_as_str_list(path, obj.get("positive_ids"), i, "positive_ids"),
        )
        entries.append(RunEntry(q, hits))
    return entries


def _merge_questions(path, entries: list[RunEntry], questions: Sequence[Question]) -> list[RunEntry]:
    by_id = {q.id: q for q in questions}
    out = []
    for e in entries:
        q = by_id.get(e.question.id)
        if q is None:
            raise InputError(path, f"question id {e.question.id!r} is not in the question file")
        merged = dataclasses.replace(
            e.question,
            answers=e.question.answers or q.answers,
            positive_ids=e.question.positive_ids or q.positive_ids,
        )
        out.append(RunEntry(merged, e.hits))
    return out


def _read_trec(path, questions: Sequence[Question] | None) -> list[RunEntry]:
    per_query: dict[str, list[tuple[float, int, str]]] = {}
    for lineno, line in enumerate(iter_text_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InputError(path, f"expected 'qid Q0 docid rank score tag' (6 columns), got {len(parts)}",
                             line=lineno)
        qid, _, docid, rank, score, _ = parts
        try:
            rank_i, score_f = int(rank), float(score)
        except ValueError:
            raise InputError(path, f"rank {rank!r} / score {score!r} are not numbers", line=lineno) from None
        if math.isnan(score_f):
            raise InputError(path, "score is NaN", line=lineno, field="score")
        per_query.setdefault(qid, []).append((score_f, rank_i, docid))
    if not per_query:
        raise InputError(path, "empty run file (neither a DPR JSON list nor TREC lines)")

    def hits_of(qid):
        # trec_eval ranks by score, not by the rank column; the rank breaks ties
        rows = sorted(per_query.get(qid, []), key=lambda r: (-r[0], r[1]))
        return [Hit(id=d, score=s) for s, _, d in rows]

    if questions is None:
        return [RunEntry(Question(id=qid, question=""), hits_of(qid)) for qid in per_query]
    known = {q.id for q in questions}
    unknown = [qid for qid in per_query if qid not in known]
    if unknown:
        raise InputError(path, f"{len(unknown)} query ids are not in the question file, e.g. {unknown[0]!r}")
    return [RunEntry(q, hits_of(q.id)) for q in questions]


# ----------------------------------------------------------------------------------------------
# passages and answers


def fetch_passages(passages_path, ids: Iterable[str], desc: str = "Reading passages") -> dict[str, Passage]:
    """The passages with the given ids, found in one streaming pass over the passages file.

    Memory is proportional to the number of ids asked for, not to the corpus. Raises
    :class:`InputError` if some ids are not in the file (the run and corpus do not belong together).
    """
    from tqdm import tqdm

    from dpr_jax.data.passages import estimate_passage_count, read_passages

    wanted = set(ids)
    found: dict[str, Passage] = {}
    if not wanted:
        return found
    total = estimate_passage_count(passages_path)
    passages = read_passages(passages_path, check_duplicates=False)
    for p in tqdm(passages, total=total, desc=desc, unit="psg", leave=False):
        if p.id in wanted:
            found[p.id] = p
            if len(found) == len(wanted):
                break
    missing = wanted - found.keys()
    if missing:
        example = sorted(missing)[0]
        raise InputError(passages_path, f"{len(missing)} retrieved passage ids are not in this passages file, "
                                        f"e.g. {example!r} (was the run made from another corpus?)")
    return found


def attach_passages(entries: Sequence[RunEntry], passages_path, match: str = "string") -> list[RunEntry]:
    """Fill each hit's title and text from the passages file and compute its ``has_answer``.

    Only the ids that occur in ``entries`` are kept from one streaming pass over the file.
    Returns new entries; the input is not modified.
    """
    from tqdm import tqdm

    from dpr_jax.eval.has_answer import AnswerMatcher

    passages = fetch_passages(passages_path, (h.id for e in entries for h in e.hits))
    out = []
    for e in tqdm(entries, desc="Matching answers", unit="q", leave=False, disable=len(entries) < 1000):
        matcher = AnswerMatcher(e.question.answers, match)
        hits = []
        for h in e.hits:
            p = passages[h.id]
            hits.append(Hit(h.id, h.score, p.title, p.text, matcher(p.text)))
        out.append(RunEntry(e.question, hits))
    return out

