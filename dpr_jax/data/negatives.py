"""Hard-negative mining: top-ranked passages that are not positives and do not hold an answer.

DPR (Karpukhin et al. 2020, Sec. 3.2/5.2) trains with one "hard negative" per question: a top BM25
passage that does not contain the answer. Its ``hard_negative_ctxs`` are built this way, and the
same recipe with a trained dense model's rankings (ANCE/RocketQA style) gives harder negatives for a
second round. A candidate is kept only if, in rank order,

* its id is not the id of any of the record's positives (every ``positive_ctxs`` entry),
* its text is not the text of any positive up to Unicode normalisation (NFKC), case and whitespace
  (the same paragraph can occur under several ids, or re-encoded by another tool), and
* it does not contain one of the record's answers under DPR's matching
  (:func:`dpr_jax.eval.has_answer.has_answer`; so a "negative" is not secretly a positive).

When the ranking's scores are given, each kept negative carries its score as the record's teacher
score (``hard_negative_scores``), for the distillation losses.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Mapping, Sequence

from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError
from dpr_jax.eval.has_answer import AnswerMatcher


def _text_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def select_hard_negatives(record: TrainRecord, ranked_ids: Sequence[str], passages: Mapping[str, Passage],
                          num: int, match: str = "string") -> list[int]:
    """Positions in ``ranked_ids`` of up to ``num`` hard negatives for one record, best-ranked first."""
    positive_ids = {p.id for p in record.positives if p.id}
    positive_texts = {_text_key(p.text) for p in record.positives}
    contains_answer = AnswerMatcher(record.answers, match)
    chosen: list[int] = []
    chosen_ids: set[str] = set()
    for rank, pid in enumerate(ranked_ids):
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
        chosen.append(rank)
        chosen_ids.add(pid)
    return chosen


def mine_hard_negatives(records: Sequence[TrainRecord], ranked_ids_per_record: Sequence[Sequence[str]],
                        passages: Mapping[str, Passage], num: int, match: str = "string",
                        show_progress: bool = True,
                        ranked_scores_per_record: Sequence[Sequence[float]] | None = None) -> list[TrainRecord]:
    """Records whose ``hard_negatives`` (and their teacher scores) are replaced by up to ``num`` mined ones each.

    ``ranked_ids_per_record[i]`` is the retrieval ranking (best first) for ``records[i].question``,
    ``ranked_scores_per_record[i]`` its scores (None: the mined negatives get no scores);
    ``passages`` must hold every id in them. A record may get fewer than ``num`` negatives when its
    ranking runs out; the caller reports how many did.
    """
    if len(records) != len(ranked_ids_per_record):
        raise ValueError(f"{len(records)} records but {len(ranked_ids_per_record)} rankings")
    if num < 1:
        raise DprJaxError(f"the number of hard negatives must be at least 1, got {num}")
    from tqdm import tqdm

    if ranked_scores_per_record is None:
        ranked_scores_per_record = [None] * len(records)
    out = []
    for r, ids, scores in tqdm(zip(records, ranked_ids_per_record, ranked_scores_per_record), total=len(records),
                               desc="Mining hard negatives", unit="q", disable=not show_progress, leave=False):
        chosen = select_hard_negatives(r, ids, passages, num, match)
        out.append(dataclasses.replace(r, hard_negatives=tuple(passages[ids[k]] for k in chosen),
                                       hard_negative_scores=() if scores is None else
                                       tuple(float(scores[k]) for k in chosen)))
    return out
