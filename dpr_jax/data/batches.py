"""Tokenised training batches whose content is a pure function of (seed, step).

Global batch ``s`` of a run is made of records ``perm[e][k*B : (k+1)*B]`` where ``e = s // steps_per_epoch``,
``k = s % steps_per_epoch`` and ``perm[e]`` is a permutation drawn from ``(seed, e)`` (the last
partial batch of an epoch is dropped, as DPR does). Everything random about one example - which
positive (``shuffle_positives``), the order of its negatives, the random corpus negatives - is drawn
from ``(seed, s, row)``. So any process can build any batch, or just its own rows of it, without
state: a resumed run sees exactly the batches an uninterrupted run would, and one process of a
multi-host run sees exactly its share of what a single process would.

Each question gets a group of ``G = 1 + hard_negatives + random_negatives`` passages, positive first:

* the positive: the first of ``positives`` (or a random one with ``shuffle_positives``);
* ``hard_negatives`` taken from the record's ``hard_negatives`` (shuffled when ``shuffle``), falling
  back to its ``negatives`` and, when a record has too few of either, to random passages so shapes
  stay fixed;
* ``random_negatives`` random passages.

A random passage is the first positive of a record drawn uniformly from all training records
(with the same ``(seed, s, row)`` generator). Until issue 8 it was drawn uniformly from every
distinct passage of the file, a pool that every host had to build by reading the whole file; the
new rule needs only the drawn record, so it is the same whether one process or many build the
batch, and no host holds the file (:mod:`dpr_jax.data.host_local`).

The records may be a list or a lazy sequence (:class:`~dpr_jax.data.lazy_records.LazyRecords`):
only the records of the rows a process builds (and those its random passages come from) are read.
What must be known about *all* records - the most positives any has, where teacher scores are
missing - is a :class:`RecordStats`, which a multi-host run gathers share by share.

Two more arrays travel with each batch, for the loss (:mod:`dpr_jax.train.loss`):

* ``passage_ids [b, G]`` and ``gold_ids [b, M]``: int32 hashes (:func:`passage_hash`) of the group's
  passages and of *every* positive of the question (``M`` = the most positives any record has; a
  shorter list is padded by repeating its sampled positive), so the loss can remove a question's
  gold passages wherever else they appear in the batch (false-negative masking);
* ``teacher_scores [b, G]`` float32: each group passage's teacher score from its record's ctx
  ``score`` (:class:`~dpr_jax.data.records.TrainRecord`), NaN where there is none. Random
  passages have no teacher score for this question, so they are always NaN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Sequence

import numpy as np

from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError

_EPOCH_STREAM, _EXAMPLE_STREAM = 1, 2


def passage_key(p: Passage) -> str:
    """A passage's identity: its id, or its title and text when it has none."""
    return f"id:{p.id}" if p.id else f"text:{p.title}\x00{p.text}"


def passage_hash(p: Passage) -> int:
    """A stable 32-bit signed hash of :func:`passage_key` (same in every process and run)."""
    digest = hashlib.blake2b(passage_key(p).encode("utf-8"), digest_size=4).digest()
    return int(np.frombuffer(digest, dtype="<i4")[0])


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Shape and sampling of the training batches."""

    global_batch_size: int
    question_max_length: int = 64
    passage_max_length: int = 256
    hard_negatives: int = 1
    random_negatives: int = 0
    shuffle: bool = True
    shuffle_positives: bool = False
    seed: int = 0

    @property
    def group_size(self) -> int:
        return 1 + self.hard_negatives + self.random_negatives


@dataclasses.dataclass(frozen=True)
class Example:
    """One question with its passage group (positive first), before tokenisation.

    ``scores`` are the group's teacher scores (NaN: none); ``gold`` is every positive of the record.
    """

    question: str
    passages: tuple[Passage, ...]
    scores: tuple[float, ...] = ()
    gold: tuple[Passage, ...] = ()


@dataclasses.dataclass
class RecordStats:
    """What the batches and the loss checks must know about *all* training records.

    Computed record by record (:meth:`add`), so each process of a multi-host run can compute it
    over its share of the file and the shares can be merged (:meth:`merge`, in process order)
    without any host reading every record. The teacher-score counts follow the sampler's rules
    (``spec``): which positives and negatives a record's groups can draw.
    """

    records: int = 0
    max_positives: int = 0
    no_positive_score: int = 0  # records whose drawable positive has no teacher score
    first_no_positive_score: str = ""  # the first such record's source
    partly_scored: int = 0  # records whose groups can hold a negative without a teacher score
    placeholder_scores_only: bool = True  # every positive score is 1000 (DPR's placeholder), none missing

    def add(self, r: TrainRecord, spec: BatchSpec) -> None:
        self.records += 1
        self.max_positives = max(self.max_positives, len(r.positives))
        pos = r.scores("positives")
        if any(s is None for s in (pos if spec.shuffle_positives and spec.shuffle else pos[:1])):
            if not self.no_positive_score:
                self.first_no_positive_score = r.source
            self.no_positive_score += 1
        seq = list(r.scores("hard_negatives"))
        if len(seq) < spec.hard_negatives:
            seq += r.scores("negatives")
        drawable = seq if spec.shuffle else seq[:spec.hard_negatives]
        if spec.random_negatives or len(seq) < spec.hard_negatives or any(s is None for s in drawable):
            self.partly_scored += 1
        self.placeholder_scores_only = self.placeholder_scores_only and all(s == 1000.0 for s in pos)

    @classmethod
    def of(cls, records, spec: BatchSpec) -> "RecordStats":
        stats = cls()
        for r in records:
            stats.add(r, spec)
        return stats

    @classmethod
    def merge(cls, parts: Sequence["RecordStats"]) -> "RecordStats":
        """The statistics of the concatenated shares (``parts`` in share order)."""
        first = next((p.first_no_positive_score for p in parts if p.no_positive_score), "")
        return cls(records=sum(p.records for p in parts), max_positives=max((p.max_positives for p in parts), default=0),
                   no_positive_score=sum(p.no_positive_score for p in parts), first_no_positive_score=first,
                   partly_scored=sum(p.partly_scored for p in parts),
                   placeholder_scores_only=all(p.placeholder_scores_only for p in parts))


class TrainBatches:
    """Deterministic training batches over a sequence of records (see the module docstring).

    ``stats`` are the records' :class:`RecordStats` for ``spec``; computed here (reading every
    record) when not given.
    """

    def __init__(self, records: Sequence[TrainRecord], tokenizer, spec: BatchSpec,
                 stats: RecordStats | None = None):
        if spec.global_batch_size < 1:
            raise DprJaxError(f"batch size must be positive, got {spec.global_batch_size}")
        if spec.hard_negatives < 0 or spec.random_negatives < 0:
            raise DprJaxError("the numbers of hard and random negatives must be >= 0")
        if len(records) < spec.global_batch_size:
            raise DprJaxError(f"{len(records)} training records are fewer than one global batch "
                              f"({spec.global_batch_size}); lower the batch size")
        self.records = records
        self.tokenizer = tokenizer
        self.spec = spec
        self.steps_per_epoch = len(self.records) // spec.global_batch_size
        self.stats = RecordStats.of(records, spec) if stats is None else stats
        if self.stats.records != len(records):
            raise ValueError(f"statistics of {self.stats.records} records given for {len(records)} records")
        self._perm_cache: tuple[int, np.ndarray] | None = None

    @property
    def group_size(self) -> int:
        return self.spec.group_size

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            n = len(self.records)
            perm = (np.random.default_rng([self.spec.seed, _EPOCH_STREAM, epoch]).permutation(n)
                    if self.spec.shuffle else np.arange(n))
            self._perm_cache = (epoch, perm)
        return self._perm_cache[1]

    def record_indices(self, step: int) -> np.ndarray:
        """Indices (into ``records``) of the global batch of ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        b = self.spec.global_batch_size
        return self._permutation(epoch)[k * b:(k + 1) * b]

    def example(self, step: int, row: int) -> Example:
        """Row ``row`` of global batch ``step``: the question and its passage group."""
        spec = self.spec
        record = self.records[self.record_indices(step)[row]]
        rng = np.random.default_rng([spec.seed, _EXAMPLE_STREAM, step, row])
        nan = lambda s: math.nan if s is None else s  # noqa: E731
        positives = record.positives
        k = int(rng.integers(len(positives))) if spec.shuffle_positives and spec.shuffle else 0
        chosen = [(positives[k], nan(record.scores("positives")[k]))]
        for kind in ("hard_negatives", "negatives"):
            candidates = getattr(record, kind)
            if len(chosen) > spec.hard_negatives:
                break
            order = rng.permutation(len(candidates)) if spec.shuffle else range(len(candidates))
            scores = record.scores(kind)
            chosen += [(candidates[i], nan(scores[i])) for i in order][:spec.hard_negatives + 1 - len(chosen)]
        missing = spec.hard_negatives + 1 - len(chosen) + spec.random_negatives
        if missing:
            chosen += [(self.records[int(i)].positives[0], math.nan)
                       for i in rng.integers(len(self.records), size=missing)]
        return Example(record.question, tuple(p for p, _ in chosen), tuple(s for _, s in chosen), positives)

    def examples(self, step: int, rows: slice | None = None) -> list[Example]:
        rows = range(self.spec.global_batch_size)[rows or slice(None)]
        return [self.example(step, r) for r in rows]

    def batch(self, step: int, rows: slice | None = None) -> dict:
        """Tokenised arrays of global batch ``step`` (only ``rows`` of it: this process's share).

        ``{"questions": {input_ids, attention_mask, token_type_ids} [b, Lq],
        "passages": {...} [b, G, Lp], "passage_ids": [b, G], "gold_ids": [b, M],
        "teacher_scores": [b, G]}``: token arrays int32 padded to the max lengths, ids int32 hashes,
        teacher scores float32 (NaN: none).
        """
        spec = self.spec
        examples = self.examples(step, rows)
        b, g = len(examples), self.group_size
        questions = self.tokenizer.questions([e.question for e in examples], spec.question_max_length,
                                             pad_to=spec.question_max_length)
        flat = [p for e in examples for p in e.passages]
        passages = self.tokenizer.passages([p.title for p in flat], [p.text for p in flat],
                                           spec.passage_max_length, pad_to=spec.passage_max_length)
        passages = {k: v.reshape(b, g, -1) for k, v in passages.items()}
        ids = np.array([passage_hash(p) for p in flat], dtype=np.int32).reshape(b, g)
        gold = np.repeat(ids[:, :1], self.stats.max_positives, axis=1)  # padding: the sampled positive again
        for row, e in enumerate(examples):
            gold[row, :len(e.gold)] = [passage_hash(p) for p in e.gold]
        scores = np.array([e.scores for e in examples], dtype=np.float32).reshape(b, g)
        return {"questions": questions, "passages": passages, "passage_ids": ids, "gold_ids": gold,
                "teacher_scores": scores}
