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
    """

    question: str
    answers: tuple[str, ...]
    positives: tuple[Passage, ...]
    negatives: tuple[Passage, ...] = ()
    hard_negatives: tuple[Passage, ...] = ()
    source: str = ""
