"""Teacher scores for mining: a retriever's ranking, and its score of given passages on the same scale.

``dpr-jax mine`` keeps each question's best-ranked passages as hard negatives and writes the
retriever's score on every ctx it keeps - the positives' too, since the distillation losses
(:mod:`dpr_jax.train.loss`) compare the teacher's score of the positive with those of the negatives.
A positive is often outside the top ``depth``, so each teacher here also scores given passages for
a question, exactly as its ranking would have:

* BM25: bm25s' own score vector of the question (:meth:`~dpr_jax.index.bm25.BM25Index.passage_scores`)
  read at the passage's row. A passage that is not in the corpus (by id) gets no score (``None``):
  its BM25 score depends on corpus statistics it was never counted in.
* dense: ``q · p`` with the question vector of the ranking, and the passage vector stored in the
  index when its id is there (so the score search would give), else the model's encoding of its
  title and text (at the index's ``max_length``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Sequence

import numpy as np

from dpr_jax.data.records import Passage


@dataclasses.dataclass(frozen=True)
class Rankings:
    """Per question: ranked passage ids and their scores (best first), and the scores of the given passages."""

    ids: list[list[str]]
    scores: list[list[float]]
    given_scores: list[list[float | None]]


def _from_ranking(ids: Sequence[str], scores: Sequence[float], given: Sequence[Passage]) -> list[float | None]:
    """Scores of the given passages found (by id) in a ranking; None for the others."""
    at = dict(zip(ids, scores))
    return [at.get(p.id) if p.id else None for p in given]


def bm25_rankings(passages_path, questions: Sequence[str], depth: int, given: Sequence[Sequence[Passage]], *,
                  index_dir=None, progress: bool = True) -> Rankings:
    """BM25 top-``depth`` (hits with score 0, no term in common, are dropped as Lucene would) and given scores."""
    from dpr_jax.index.bm25 import open_or_build

    index = open_or_build(passages_path, index_dir, show_progress=progress)
    ids, scores = index.search(list(questions), depth, show_progress=progress)
    kept = [[(pid, float(s)) for pid, s in zip(row, row_scores) if s > 0] for row, row_scores in zip(ids, scores)]
    ranked_ids = [[pid for pid, _ in row] for row in kept]
    ranked_scores = [[s for _, s in row] for row in kept]
    given_scores = [_from_ranking(i, s, g) for i, s, g in zip(ranked_ids, ranked_scores, given)]
    missing = [n for n, row in enumerate(given_scores) if any(s is None and p.id for s, p in zip(row, given[n]))]
    if missing:
        computed = index.passage_scores([questions[n] for n in missing], [[p.id for p in given[n]] for n in missing])
        for n, row in zip(missing, computed):
            given_scores[n] = [s if s is not None else c for s, c in zip(given_scores[n], row)]
    return Rankings(ranked_ids, ranked_scores, given_scores)


def dense_rankings(loaded, index_dir, questions: Sequence[str], depth: int, given: Sequence[Sequence[Passage]], *,
                   question_max_length: int = 64, batch_size: int = 128, progress: bool = True) -> Rankings:
    """Dense top-``depth`` of a loaded model over the index, and the given passages' scores."""
    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.index.retrieve import encode_question_texts, open_index_for, search_vectors
    from dpr_jax.index.truncate import truncate_vectors

    index = open_index_for(loaded, index_dir, progress=progress)
    q = encode_question_texts(loaded, questions, batch_size=batch_size, max_length=question_max_length,
                              progress=progress, dim=index.dim)  # an index encoded with --dim: cut alike
    ids, scores = search_vectors(index, q, depth, progress=progress)
    ranked_scores = [[float(s) for s in row] for row in np.asarray(scores)]
    given_scores = [_from_ranking(i, s, g) for i, s, g in zip(ids, ranked_scores, given)]

    todo = [(n, k) for n, row in enumerate(given_scores) for k, s in enumerate(row) if s is None]
    if todo:
        rows = index.rows_of({given[n][k].id for n, k in todo if given[n][k].id})
        stored = dict(zip(rows, index.vectors_at(list(rows.values())))) if rows else {}
        encode = list({(p.title, p.text) for p in (given[n][k] for n, k in todo) if p.id not in stored})
        if encode:
            if progress:
                print(f"encoding {len(encode)} positives that are not in {index_dir}", file=sys.stderr)
            encoder = TextEncoder(loaded, batch_size=batch_size, max_length=int(index.meta.get("max_length", 256)))
            vectors = truncate_vectors(encoder.encode_passages([t for t, _ in encode], [x for _, x in encode]),
                                       index.dim, bool(loaded.encoder_config.normalize))  # as the index's
            encoded = dict(zip(encode, vectors))
        for n, k in todo:
            p = given[n][k]
            vector = stored[p.id] if p.id in stored else encoded[(p.title, p.text)]
            given_scores[n][k] = float(np.dot(q[n], vector))
    return Rankings(ids, ranked_scores, given_scores)
