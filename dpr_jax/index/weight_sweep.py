"""Choose the lexical weight ``w`` of a concatenated index on held-out training questions.

A concatenated model scores ``q_dense·p_dense + w · q_lex·p_lex`` (:mod:`dpr_jax.models.concat`).
``w`` must be chosen on questions the final evaluation never sees - a dev slice of the *training*
articles (``dpr-jax data squad --dev-articles N``) - and this module does the sweep: with both
parts' question vectors and corpus vectors in memory, the score matrices ``S_dense = Q_d P_dᵀ`` and
``S_lex = Q_l P_lᵀ`` are computed once per chunk of questions, and each candidate ``w`` ranks by
``S_dense + w S_lex`` exactly as the concatenated index would (the same inner product, split in two).
Every ranking is scored with :func:`dpr_jax.eval.metrics.evaluate_run` (DPR top-k accuracy, MRR@10),
answers matched once per (question, passage) and reused across weights.

Memory is ``chunk × corpus`` floats per score matrix, so this is meant for a dev corpus up to about
a million passages (the SQuAD one has 2,067).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dpr_jax.data.records import Passage, Question
from dpr_jax.errors import DprJaxError
from dpr_jax.eval.has_answer import AnswerMatcher
from dpr_jax.eval.metrics import evaluate_run
from dpr_jax.index.runs import Hit, RunEntry

DEFAULT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
METRICS = ("mrr@10", "top1", "top5", "top20", "top100")


def metric_value(metrics: dict, name: str) -> float:
    """``mrr@10`` or ``topK`` (DPR top-k accuracy) from an :func:`evaluate_run` result."""
    if name == "mrr@10":
        value = metrics.get("mrr@10")
        if value is None:
            raise DprJaxError("mrr@10 needs questions with positive ids; choose --metric topK")
        return float(value)
    return float(metrics["top_k_accuracy"][name[3:]])


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the ``k`` largest scores, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def sweep(dense_q: np.ndarray, lexical_q: np.ndarray, dense_p: np.ndarray, lexical_p: np.ndarray,
          ids: Sequence[str], questions: Sequence[Question], passages: Mapping[str, Passage],
          weights: Sequence[float] = DEFAULT_WEIGHTS, *, k: int = 100, ks: Sequence[int] = (1, 5, 20, 100),
          match: str = "string", chunk: int = 256) -> list[dict]:
    """Metrics of ``S_dense + w S_lex`` rankings for every ``w`` in ``weights``: ``[{"weight", **metrics}]``.

    ``*_q`` are ``[n_questions, d]`` question vectors, ``*_p`` ``[n_passages, d]`` corpus vectors in the
    order of ``ids``; ``passages`` maps those ids to passages (for answer matching).
    """
    n, n_p = len(questions), len(ids)
    if dense_q.shape[0] != n or lexical_q.shape[0] != n:
        raise ValueError("one question vector per question and part")
    if dense_p.shape[0] != n_p or lexical_p.shape[0] != n_p:
        raise ValueError("one passage vector per id and part")
    if not weights:
        raise DprJaxError("no weights to try")
    rows = {w: [] for w in weights}
    for start in range(0, n, chunk):
        s_dense = dense_q[start:start + chunk].astype(np.float32) @ dense_p.astype(np.float32).T
        s_lex = lexical_q[start:start + chunk].astype(np.float32) @ lexical_p.astype(np.float32).T
        for w in weights:
            scores = s_dense + np.float32(w) * s_lex
            best = top_k(scores, k)
            rows[w].append((best, np.take_along_axis(scores, best, axis=1)))
    matchers: dict[int, AnswerMatcher] = {}
    flags: dict[tuple[int, int], bool] = {}

    def has_answer(qi: int, row: int) -> bool:
        key = (qi, row)
        if key not in flags:
            matcher = matchers.get(qi) or matchers.setdefault(qi, AnswerMatcher(questions[qi].answers, match))
            flags[key] = matcher(passages[ids[row]].text)
        return flags[key]

    results = []
    for w in weights:
        entries = []
        top = np.concatenate([r for r, _ in rows[w]])
        sc = np.concatenate([s for _, s in rows[w]])
        for qi, q in enumerate(questions):
            entries.append(RunEntry(q, [Hit(ids[r], float(s), has_answer=has_answer(qi, int(r)))
                                        for r, s in zip(top[qi], sc[qi])]))
        results.append({"weight": float(w), **evaluate_run(entries, ks=ks, match=match)})
    return results


def best_weight(results: Sequence[dict], metric: str) -> dict:
    """The sweep row with the highest ``metric`` (ties: the smallest weight, the least lexical)."""
    return max(results, key=lambda r: (metric_value(r, metric), -r["weight"]))


__all__ = ["DEFAULT_WEIGHTS", "METRICS", "best_weight", "metric_value", "sweep", "top_k"]
