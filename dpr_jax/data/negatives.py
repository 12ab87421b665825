"""Hard-negative mining: top-ranked passages that are not positives and do not hold an answer.

DPR (Karpukhin et al. 2020, Sec. 3.2/5.2) trains with one "hard negative" per question: a top BM25
passage that does not contain the answer. Its ``hard_negative_ctxs`` are built this way, and the
same recipe with a trained dense model's rankings (ANCE/RocketQA style) gives harder negatives for a
second round. A candidate is kept only if, in rank order,

* its id is not one of the record's positive ids,
* its text is not identical (up to whitespace) to a positive's text (the same paragraph can occur
  under several ids), and
* it does not contain one of the record's answers under DPR's matching
  (:func:`dpr_jax.eval.has_answer.has_answer`; so a "negative" is not secretly a positive).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError
from dpr_jax.eval.has_answer import AnswerMatcher


def _text_key(text: str) -> str:
    return " ".join(text.split())


def select_hard_negatives(record: TrainRecord, ranked_ids: Sequence[str], passages: Mapping[str, Passage],
                          num: int, match: str = "string") -> tuple[Passage, ...]:
    """Up to ``num`` hard negatives for one record, best-ranked first."""
    positive_ids = {p.id for p in record.positives if p.id}
    positive_texts = {_text_key(p.text) for p in record.positives}
    contains_answer = AnswerMatcher(record.answers, match)
    chosen: list[Passage] = []
    chosen_ids: set[str] = set()
    for pid in ranked_ids:
        if len(chosen) >= num:
            break
        if pid in positive_ids or pid in chosen_ids:
            continue
        passage = passages.get(pid)
        if passage is None:
            raise DprJaxError(f"ranked passage id {pid!r} (for {record.source or record.question[:60]!r}) "
                              "is not among the passages given")
        if _text_key(passage.text) in positive_texts or contains_answer(passage.text):
            continue
        chosen.append(passage)
        chosen_ids.add(pid)
    return tuple(chosen)


def mine_hard_negatives(records: Sequence[TrainRecord], ranked_ids_per_record: Sequence[Sequence[str]],
                        passages: Mapping[str, Passage], num: int, match: str = "string",
                        show_progress: bool = True) -> list[TrainRecord]:
    """Records whose ``hard_negatives`` are replaced by up to ``num`` mined ones each.

    ``ranked_ids_per_record[i]`` is the retrieval ranking (best first) for ``records[i].question``;
    ``passages`` must hold every id in them. A record may get fewer than ``num`` negatives when its
    ranking runs out; the caller reports how many did.
    """
    if len(records) != len(ranked_ids_per_record):
        raise ValueError(f"{len(records)} records but {len(ranked_ids_per_record)} rankings")
    if num < 1:
        raise DprJaxError(f"the number of hard negatives must be at least 1, got {num}")
    from tqdm import tqdm

    pairs = tqdm(zip(records, ranked_ids_per_record), total=len(records), desc="Mining hard negatives",
                 unit="q", disable=not show_progress, leave=False)
    return [dataclasses.replace(r, hard_negatives=select_hard_negatives(r, ids, passages, num, match))
            for r, ids in pairs]
