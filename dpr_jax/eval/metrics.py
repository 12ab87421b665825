"""Retrieval metrics over a run: DPR top-k accuracy, recall@k and MRR@10 against positive ids.

* **Top-k accuracy** (DPR, Karpukhin et al. 2020, Table 2): the fraction of questions for which at
  least one of the top-k passages contains a gold answer (:mod:`dpr_jax.eval.has_answer`). All
  questions count; one with no hits or no answers is a miss. DPR's own measure, computed here.
* **Recall@k**: over questions that have positive passage ids (SQuAD paragraphs, BEIR qrels), the
  mean of ``|positives ∩ top-k| / |positives|`` (trec_eval's ``recall_k``).
* **MRR@10**: over the same questions, the mean reciprocal rank of the first positive id within the
  top 10 (0 when there is none), as MS MARCO reports it.

Recall and MRR are trec_eval's, through :mod:`dpr_jax.eval.ir_metrics` with the positive ids as
binary judgements; graded qrels and other measures (nDCG@10, MAP) come from the same module.
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
    from dpr_jax.eval.ir_metrics import evaluate_ir

    n = len(entries)
    first_answer_rank = []  # 0-based rank of the first answer-bearing hit, or None
    for e in entries:
        flags = _answer_flags(e, match)
        first_answer_rank.append(next((i for i, f in enumerate(flags) if f), None))

    def frac(k):
        return sum(1 for r in first_answer_rank if r is not None and r < k) / n if n else 0.0

    n_pos = sum(1 for e in entries if e.question.positive_ids)
    ir = evaluate_ir(entries, None, [f"R@{k}" for k in ks] + [f"RR@{MRR_DEPTH}"])["measures"] if n_pos else None
    return {
        "num_questions": n,
        "num_with_positive_ids": n_pos,
        "top_k_accuracy": {str(k): frac(k) for k in ks},
        "recall": {str(k): ir[f"R@{k}"] for k in ks} if n_pos else None,
        f"mrr@{MRR_DEPTH}": ir[f"RR@{MRR_DEPTH}"] if n_pos else None,
    }


def format_table(rows: Mapping[str, dict], ks: Sequence[int] = DEFAULT_KS, measures: Sequence[str] = ()) -> str:
    """A Markdown table, one row per method: top-k accuracy (%) for each k, MRR@10, then ``measures``.

    ``measures`` are IR measures a row holds under ``"ir_measures"`` (from
    :func:`dpr_jax.eval.ir_metrics.evaluate_ir`). A k the metrics were not computed for, or a value
    that does not exist (no positive ids, no judged questions), shows as ``-``.
    """
    header = ["Method"] + [f"Top-{k}" for k in ks] + [f"MRR@{MRR_DEPTH}"] + list(measures)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in rows.items():
        acc = m.get("top_k_accuracy") or {}
        cells = [str(name)]
        cells += [f"{100 * acc[str(k)]:.1f}" if str(k) in acc else "-" for k in ks]
        mrr = m.get(f"mrr@{MRR_DEPTH}")
        cells.append(f"{mrr:.3f}" if mrr is not None else "-")
        ir = (m.get("ir_measures") or {}).get("measures", {})
        cells += [f"{ir[k]:.4f}" if ir.get(k) is not None else "-" for k in measures]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
