"""Dense + sparse fusion, as pyserini's ``HybridSearcher`` does it (Ma et al., 2021, "A Replication
Study of Dense Passage Retriever").

For one question with a dense hit list ``D`` and a sparse (BM25) hit list ``S``:

1. The candidates are the union of the passage ids of ``D`` and ``S``.
2. A candidate missing from a list gets that list's minimum score (so it is not rewarded for
   being absent, but not dropped either).
3. With ``normalization``, each list's scores are centred and scaled by that list's own range:
   ``s' = (s - (min + max) / 2) / (max - min)`` (a list whose scores are all equal maps to 0;
   pyserini would divide by zero there).
4. ``fused = alpha * sparse + dense``, or ``sparse + alpha * dense`` with ``weight_on_dense``.
5. The top ``k`` by fused score are kept (ties keep dense-list order, then sparse-list order).

An empty list contributes min 0 and max 1, as in pyserini. The two runs must hold the same
questions in the same order; each pair is checked by question id and text.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from dpr_jax.errors import DprJaxError
from dpr_jax.index.runs import Hit, RunEntry


def _range(hits: Sequence[Hit]) -> tuple[float, float]:
    if not hits:
        return 0.0, 1.0
    scores = [h.score for h in hits]
    return min(scores), max(scores)


def _normalizer(lo: float, hi: float):
    mid, span = (lo + hi) / 2.0, hi - lo
    if span == 0:
        return lambda s: 0.0
    return lambda s: (s - mid) / span


def fuse_hits(dense: Sequence[Hit], sparse: Sequence[Hit], alpha: float = 1.0, normalization: bool = True,
              weight_on_dense: bool = False, k: int = 100) -> list[Hit]:
    """Fuse the hit lists of one question (see the module docstring); returns new hits, best first."""
    d_lo, d_hi = _range(dense)
    s_lo, s_hi = _range(sparse)
    d_scores = {h.id: h.score for h in dense}
    s_scores = {h.id: h.score for h in sparse}
    info: dict[str, Hit] = {}  # per id: title, text and has_answer from whichever list has them
    for h in list(dense) + list(sparse):
        prev = info.get(h.id)
        info[h.id] = h if prev is None else Hit(
            h.id, 0.0, title=prev.title or h.title, text=prev.text or h.text,
            has_answer=prev.has_answer if prev.has_answer is not None else h.has_answer)
    d_norm = _normalizer(d_lo, d_hi) if normalization else float
    s_norm = _normalizer(s_lo, s_hi) if normalization else float
    fused = []
    for doc_id, h in info.items():  # insertion order: dense order, then sparse-only hits
        d = d_norm(d_scores.get(doc_id, d_lo))
        s = s_norm(s_scores.get(doc_id, s_lo))
        score = s + alpha * d if weight_on_dense else alpha * s + d
        fused.append(Hit(doc_id, float(score), title=h.title, text=h.text, has_answer=h.has_answer))
    fused.sort(key=lambda h: -h.score)  # stable
    return fused[:k]


def fuse(dense_entries: Sequence[RunEntry], sparse_entries: Sequence[RunEntry], alpha: float = 1.0,
         normalization: bool = True, weight_on_dense: bool = False, k: int = 100) -> list[RunEntry]:
    """Fuse two runs question by question (matched by position, checked by id and text)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DprJaxError(f"k must be a positive integer, got {k!r}")
    if len(dense_entries) != len(sparse_entries):
        raise DprJaxError(f"the dense run has {len(dense_entries)} questions and the sparse run "
                          f"{len(sparse_entries)}; fuse runs made from the same question file")
    out = []
    for i, (d, s) in enumerate(zip(dense_entries, sparse_entries)):
        dq, sq = d.question, s.question
        if dq.id != sq.id or (dq.question and sq.question and dq.question != sq.question):
            raise DprJaxError(f"question #{i} differs between the runs: dense {dq.id!r} {dq.question[:60]!r}, "
                              f"sparse {sq.id!r} {sq.question[:60]!r}")
        question = dataclasses.replace(dq, question=dq.question or sq.question, answers=dq.answers or sq.answers,
                                       positive_ids=dq.positive_ids or sq.positive_ids)
        out.append(RunEntry(question, fuse_hits(d.hits, s.hits, alpha, normalization, weight_on_dense, k)))
    return out
