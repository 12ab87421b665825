"""The record types every stage exchanges: passages, questions and training examples."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrievable unit of the corpus (DPR: a 100-word Wikipedia block with its title)."""

    id: str
    text: str
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Question:
    """An evaluation question: answers for DPR's answer matching, positive ids for recall/MRR."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    positive_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainRecord:
    """One DPR retriever training example (``positive_ctxs``, ``negative_ctxs``, ``hard_negative_ctxs``).

    ``source`` is ``"file:line"`` (or ``"file:#index"`` for a JSON array) so problems can be reported
    where they are.

    ``*_scores`` are teacher scores (a DPR ctx's ``score``: a retriever's score of that passage for
    this question), parallel to the passage lists, ``None`` for a ctx without one; they are what the
    distillation losses learn from. A score belongs to the (question, passage) pair, not to the
    passage, which is why it lives here and not on :class:`Passage`. An all-``None`` tuple is stored
    as ``()`` ("no scores"), so records compare equal however they were built.
    """

    question: str
    answers: tuple[str, ...]
    positives: tuple[Passage, ...]
    negatives: tuple[Passage, ...] = ()
    hard_negatives: tuple[Passage, ...] = ()
    source: str = ""
    positive_scores: tuple[float | None, ...] = ()
    negative_scores: tuple[float | None, ...] = ()
    hard_negative_scores: tuple[float | None, ...] = ()

    def __post_init__(self):
        for kind, field in CTX_KINDS.items():
            scores = tuple(getattr(self, field))
            if all(s is None for s in scores):
                scores = ()
            elif len(scores) != len(getattr(self, kind)):
                raise ValueError(f"{len(scores)} {field} for {len(getattr(self, kind))} {kind}")
            object.__setattr__(self, field, scores)

    def scores(self, kind: str) -> tuple[float | None, ...]:
        """Teacher scores of ``kind`` (``"positives"``, ``"negatives"``, ``"hard_negatives"``), one per passage."""
        return getattr(self, CTX_KINDS[kind]) or (None,) * len(getattr(self, kind))


CTX_KINDS = {"positives": "positive_scores", "negatives": "negative_scores", "hard_negatives": "hard_negative_scores"}
