"""Retrieval evaluation during training: top-k accuracy of the current parameters on held-out questions.

Every ``eval.every`` steps the eval corpus (small: e.g. the 2,067 SQuAD dev paragraphs) is encoded in
memory with the parameters being trained, the eval questions likewise, and each question's top-k
passages are found by exact inner-product search (:func:`dpr_jax.index.search.exact_search`).
DPR's top-k accuracy (an answer string in one of the top k passages, :mod:`dpr_jax.eval.metrics`)
and, when the questions carry gold passage ids, MRR@10 go into ``metrics.jsonl`` as
``eval_top1``, ``eval_top5``, ``eval_top20``, ``eval_mrr10``.

Encoding runs over the training mesh (every process feeds its share of each batch and the vectors
are gathered), so every process computes the same metrics; only process 0 writes them.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from dpr_jax.data.records import Passage, Question
from dpr_jax.distributed import process_slice
from dpr_jax.mesh import global_batch, round_up_to_devices


def _gather(x) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class RetrievalEvaluator:
    """Encodes a fixed question set and corpus with given parameters and scores the retrieval."""

    def __init__(self, questions: Sequence[Question], passages: Sequence[Passage], tokenizer, fmodel, mesh, *,
                 question_max_length: int, passage_max_length: int, batch_size: int = 64,
                 top_k: Sequence[int] = (1, 5, 20), match: str = "string"):
        self.questions = list(questions)
        self.passages = list(passages)
        self.top_k = sorted({int(k) for k in top_k})
        self.match = match
        self.mesh = mesh
        self.batch_size = round_up_to_devices(batch_size, mesh)
        self._q_inputs = tokenizer.questions([q.question for q in self.questions], question_max_length,
                                             pad_to=question_max_length)
        self._p_inputs = tokenizer.passages([p.title for p in self.passages], [p.text for p in self.passages],
                                            passage_max_length, pad_to=passage_max_length)
        self._encode = {side: jax.jit(lambda params, batch, side=side: fmodel.encode(params, side, batch))
                        for side in ("question", "passage")}

    def _vectors(self, params, side: str, inputs: dict) -> np.ndarray:
        n = len(next(iter(inputs.values())))
        out = []
        for start in range(0, n, self.batch_size):
            rows = {k: v[start:start + self.batch_size] for k, v in inputs.items()}
            m = len(rows["input_ids"])
            if m < self.batch_size:  # pad the last batch with copies of its first row (one shape)
                rows = {k: np.concatenate([v, np.repeat(v[:1], self.batch_size - m, axis=0)]) for k, v in rows.items()}
            mine = process_slice(self.batch_size)
            local = {k: v[mine] for k, v in rows.items()}
            out.append(_gather(self._encode[side](params, global_batch(local, self.mesh)))[:m])
        return np.concatenate(out)

    def __call__(self, params) -> dict:
        """``{"eval_top1": ..., "eval_top5": ..., "eval_mrr10": ...}`` (fractions) for ``params``."""
        from dpr_jax.eval.metrics import evaluate_run
        from dpr_jax.index.runs import Hit, RunEntry
        from dpr_jax.index.search import exact_search

        q = self._vectors(params, "question", self._q_inputs)
        p = self._vectors(params, "passage", self._p_inputs)
        scores, rows = exact_search(q, p, max(*self.top_k, 10))  # 10: MRR@10 needs ten hits
        entries = [RunEntry(question, [Hit(id=self.passages[r].id, score=float(s), title=self.passages[r].title,
                                           text=self.passages[r].text) for s, r in zip(srow, rrow)])
                   for question, srow, rrow in zip(self.questions, scores, rows)]
        result = evaluate_run(entries, ks=self.top_k, match=self.match)
        out = {f"eval_top{k}": float(v) for k, v in result["top_k_accuracy"].items()}
        if result.get("mrr@10") is not None:
            out["eval_mrr10"] = float(result["mrr@10"])
        return out
