"""Retrieval metrics over a run: DPR top-k accuracy, recall@k and MRR@10 against positive ids.

* **Top-k accuracy** (DPR, Karpukhin et al. 2020, Table 2): the fraction of questions for which at
  least one of the top-k passages contains a gold answer (:mod:`dpr_jax.eval.has_answer`). All
  questions count; one with no hits or no answers is a miss.
* **Recall@k**: over questions that have positive passage ids (SQuAD paragraphs, BEIR qrels), the
  mean of ``|positives ∩ top-k| / |positives|``.
* **MRR@10**: over the same questions, the mean reciprocal rank of the first positive id within the
  top 10 (0 when there is none), as MS MARCO reports it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from dpr_jax.eval.has_answer import AnswerMatcher

DEFAULT_KS = (1, 5, 20, 100)
MRR_DEPTH = 10


def _answer_flags(entry, match: str) -> list[bool]:
    """has_answer of each hit: the stored flag when present, else DPR matching on the hit's text."""
    flags = []
    matcher = None
    for h in entry.hits:
        if h.has_answer is not None:
            flags.append(bool(h.has_answer))
        else:
            if matcher is None:
                matcher = AnswerMatcher(entry.question.answers, match)
            flags.append(matcher(h.text))
    return flags


def evaluate_run(entries: Sequence, ks: Sequence[int] = DEFAULT_KS, match: str = "string") -> dict:
    """Metrics of a run (a list of :class:`~dpr_jax.index.runs.RunEntry`).

    Returns ``{"num_questions", "num_with_positive_ids", "top_k_accuracy": {"k": frac},
    "recall": {"k": mean} , "mrr@10": mean}``; recall and MRR are ``None`` when no question has
    positive ids. Hits without a ``has_answer`` flag are matched from their text, so a run whose
    hits carry neither must first go through :func:`~dpr_jax.index.runs.attach_passages`.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    n = len(entries)
    first_answer_rank = []  # 0-based rank of the first answer-bearing hit, or None
    recall_sums = {k: 0.0 for k in ks}
    rr_sum = 0.0
    n_pos = 0
    for e in entries:
        flags = _answer_flags(e, match)
        first_answer_rank.append(next((i for i, f in enumerate(flags) if f), None))
        positives = set(e.question.positive_ids)
        if not positives:
            continue
        n_pos += 1
        ids = [h.id for h in e.hits]
        for k in ks:
            recall_sums[k] += len(positives.intersection(ids[:k])) / len(positives)
        rank = next((i for i, d in enumerate(ids[:MRR_DEPTH]) if d in positives), None)
        if rank is not None:
            rr_sum += 1.0 / (rank + 1)

    def frac(k):
        return sum(1 for r in first_answer_rank if r is not None and r < k) / n if n else 0.0

    return {
        "num_questions": n,
        "num_with_positive_ids": n_pos,
        "top_k_accuracy": {str(k): frac(k) for k in ks},
        "recall": {str(k): recall_sums[k] / n_pos for k in ks} if n_pos else None,
        f"mrr@{MRR_DEPTH}": rr_sum / n_pos if n_pos else None,
    }


def format_table(rows: Mapping[str, dict], ks: Sequence[int] = DEFAULT_KS) -> str:
    """A Markdown table, one row per method: top-k accuracy (%) for each k, then MRR@10.

    A k the metrics were not computed for, or an MRR that does not exist (no positive ids), shows
    as ``-``.
    """
    header = ["Method"] + [f"Top-{k}" for k in ks] + [f"MRR@{MRR_DEPTH}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in rows.items():
        acc = m.get("top_k_accuracy", {})
        cells = [str(name)]
        cells += [f"{100 * acc[str(k)]:.1f}" if str(k) in acc else "-" for k in ks]
        mrr = m.get(f"mrr@{MRR_DEPTH}")
        cells.append(f"{mrr:.3f}" if mrr is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
