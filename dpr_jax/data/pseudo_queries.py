"""Pseudo-queries from a corpus alone: training records for corpus-only training, no generator model.

Three ways to draw a query from a passage (``unit``):

* ``"sentence"``: one of its sentences (Inverse Cloze Task, Lee et al. 2019);
* ``"span"``: a contiguous run of ``min_words..max_words`` words from inside one of its sentences (the
  short, keyword-like queries SPAR's lexical model Λ is trained on, Chen et al. 2021);
* ``"crop"``: two independent random crops of the passage, ``crop_ratio`` of its words each, one the
  query and the other its positive (Contriever's cropping, Izacard et al. 2021).

and two ways to say which passages answer it (``label``):

* ``"source"``: its own passage is the positive (ICT / cropping). With ``remove_sentence=r`` the
  query's sentence is cut out of that positive with probability ``r`` (ICT keeps it 10% of the time,
  ``r = 0.9``), so the model must match meaning, not the copied words;
* ``"bm25"`` (SPAR's recipe): a retriever (BM25) ranks the corpus for the query; the top
  ``positives`` ranks are positives, ranks ``negatives_from..depth`` hard negatives, and every ctx
  carries the retriever's score as its teacher score (``ctxs[].score``) for the distillation losses.
  The query's own passage plays no special part: a lexical model learns to rank as BM25 does.

The sampling here is pure: the ranking is given by the caller (``dpr-jax data pseudo-queries`` asks
:mod:`dpr_jax.index.teacher` for BM25's, the same code ``dpr-jax mine`` uses). Every random choice
about a passage comes from ``(seed, passage id)``, so a passage gets the same queries whatever the
order or the subset of the corpus it is read with. The output is ordinary DPR training records
(:class:`~dpr_jax.data.records.TrainRecord`, no answers), read by the trainer like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError

UNITS = ("sentence", "span", "crop")
LABELS = ("source", "bm25")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


@dataclasses.dataclass(frozen=True)
class PseudoQuerySpec:
    """How queries are drawn (see the module docstring)."""

    unit: str = "span"
    per_passage: int = 0  # queries per passage; 0: one per eligible sentence (sentence/span), 2 (crop)
    min_words: int = 6  # span: shortest span; sentence: shortest sentence used; crop: shortest crop
    max_words: int = 14  # span: longest span
    crop_ratio: tuple[float, float] = (0.1, 0.5)  # crop: each crop's share of the passage's words
    remove_sentence: float = 0.0  # label=source, unit=sentence/span: probability of cutting the sentence out
    seed: int = 0

    def __post_init__(self):
        if self.unit not in UNITS:
            raise DprJaxError(f"pseudo-query unit must be one of {', '.join(UNITS)}, not {self.unit!r}")
        if self.per_passage < 0:
            raise DprJaxError(f"queries per passage must be >= 0, got {self.per_passage}")
        if not 1 <= self.min_words <= self.max_words:
            raise DprJaxError(f"need 1 <= min words <= max words, got {self.min_words}..{self.max_words}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi <= 1:
            raise DprJaxError(f"crop ratio must satisfy 0 < low <= high <= 1, got {self.crop_ratio}")
        if not 0 <= self.remove_sentence <= 1:
            raise DprJaxError(f"remove-sentence probability must be in [0, 1], got {self.remove_sentence}")
        if self.remove_sentence and self.unit == "crop":
            raise DprJaxError("sentence removal applies to sentence/span queries, not to crops")


@dataclasses.dataclass(frozen=True)
class PseudoQuery:
    """A query drawn from passage ``source``; ``context`` is the source passage as its positive
    (the sentence removed, or the second crop) for ``label="source"``."""

    query: str
    source: Passage
    context: Passage
    removed: bool = False


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!`` or ``?`` (and closing quotes/brackets) before whitespace."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def passage_rng(seed: int, passage_id: str) -> np.random.Generator:
    """The random stream of one passage: a pure function of ``(seed, passage id)``."""
    digest = hashlib.blake2b(passage_id.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest, "little")])


def _crop(words: list[str], rng: np.random.Generator, spec: PseudoQuerySpec) -> str:
    lo, hi = spec.crop_ratio
    n = int(round(len(words) * rng.uniform(lo, hi)))
    n = min(len(words), max(n, spec.min_words))
    start = int(rng.integers(0, len(words) - n + 1))
    return " ".join(words[start:start + n])


def queries_of(passage: Passage, spec: PseudoQuerySpec) -> list[PseudoQuery]:
    """The pseudo-queries of one passage (possibly none: too short, no eligible sentence)."""
    rng = passage_rng(spec.seed, passage.id)
    if spec.unit == "crop":
        words = passage.text.split()
        if len(words) < spec.min_words:
            return []
        out = []
        for _ in range(spec.per_passage or 2):
            query, other = _crop(words, rng, spec), _crop(words, rng, spec)
            out.append(PseudoQuery(query, passage, dataclasses.replace(passage, text=other)))
        return out
    sentences = split_sentences(passage.text)
    eligible = [i for i, s in enumerate(sentences) if len(s.split()) >= spec.min_words]
    if not eligible:
        return []
    if spec.per_passage:
        chosen = [eligible[int(k)] for k in rng.integers(0, len(eligible), size=spec.per_passage)]
    else:
        chosen = eligible
    out = []
    for i in chosen:
        words = sentences[i].split()
        if spec.unit == "span":
            n = int(rng.integers(spec.min_words, spec.max_words + 1))
            if len(words) > n:
                start = int(rng.integers(0, len(words) - n + 1))
                words = words[start:start + n]
        query = " ".join(words)
        context, removed = passage, False
        if spec.remove_sentence and len(sentences) > 1 and rng.random() < spec.remove_sentence:
            context = dataclasses.replace(passage, text=" ".join(s for k, s in enumerate(sentences) if k != i))
            removed = True
        out.append(PseudoQuery(query, passage, context, removed))
    return out


def sample_pseudo_queries(passages: Iterable[Passage], spec: PseudoQuerySpec,
                          exclude_ids: frozenset[str] | set[str] = frozenset()) -> list[PseudoQuery]:
    """Every passage's pseudo-queries, in passage order; passages in ``exclude_ids`` give none."""
    return [q for p in passages if p.id not in exclude_ids for q in queries_of(p, spec)]


def source_records(queries: Sequence[PseudoQuery]) -> list[TrainRecord]:
    """ICT / cropping records: each query's positive is its own passage (as ``context``), no negatives."""
    return [TrainRecord(question=q.query, answers=(), positives=(q.context,)) for q in queries]


def ranked_records(queries: Sequence[str], ranked_ids: Sequence[Sequence[str]],
                   ranked_scores: Sequence[Sequence[float]], passages: Mapping[str, Passage], *,
                   positives: int = 1, negatives_from: int = 4, depth: int = 30,
                   exclude_ids: frozenset[str] | set[str] = frozenset()) -> tuple[list[TrainRecord], int]:
    """SPAR's labels from a ranking (best first, with scores): ``(records, queries dropped)``.

    ``queries`` are query texts (pseudo-queries' ``query``, or any questions to label with the ranking).

    Ranks are 1-based: ranks ``1..positives`` are positives, ``negatives_from..depth`` hard negatives,
    each with its ranking score as teacher score. Ids in ``exclude_ids`` are skipped (the ranks are
    of what remains). A query whose ranking has fewer than ``positives`` passages is dropped.
    """
    if not 1 <= positives < negatives_from <= depth:
        raise DprJaxError(f"need 1 <= positives < negatives-from <= depth, got {positives}, {negatives_from}, "
                          f"{depth}")
    if len(queries) != len(ranked_ids) or len(queries) != len(ranked_scores):
        raise ValueError(f"{len(queries)} queries but {len(ranked_ids)} rankings")
    records, dropped = [], 0
    for q, ids, scores in zip(queries, ranked_ids, ranked_scores):
        kept = [(pid, float(s)) for pid, s in zip(ids, scores) if pid not in exclude_ids][:depth]
        if len(kept) < positives:
            dropped += 1
            continue
        pos, neg = kept[:positives], kept[negatives_from - 1:]
        records.append(TrainRecord(
            question=q, answers=(), positives=tuple(passages[pid] for pid, _ in pos),
            hard_negatives=tuple(passages[pid] for pid, _ in neg),
            positive_scores=tuple(s for _, s in pos), hard_negative_scores=tuple(s for _, s in neg)))
    return records, dropped


__all__ = ["LABELS", "UNITS", "PseudoQuery", "PseudoQuerySpec", "passage_rng", "queries_of", "ranked_records",
           "sample_pseudo_queries", "source_records", "split_sentences"]
