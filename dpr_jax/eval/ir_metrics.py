"""Standard IR measures of a run against (graded) relevance judgements: trec_eval's numbers.

nDCG@10, MAP, recall@k, MRR@10 and any other measure `ir-measures <https://ir-measur.es>`_ names are
computed by ir-measures through its pytrec_eval provider, i.e. by trec_eval's own C code, so the
figures are the ones BEIR, pyserini and TREC papers report; dpr-jax adds no formula of its own.
DPR's top-k answer accuracy stays in :mod:`dpr_jax.eval.metrics`.

Conventions, fixed here so results do not depend on the tool's defaults:

* **Relevance**: the qrels' grades (BEIR ``query-id corpus-id score``). nDCG uses the grade as the
  gain (trec_eval's ``ndcg_cut``); AP, recall and RR count grade >= 1 as relevant. Without qrels
  the questions' ``positive_ids`` are grade-1 judgements (binary relevance).
* **Ranking**: the run's own order (hits best first). trec_eval re-sorts by score and breaks ties
  by document id, which would reorder tied hits; each hit is therefore handed to it with the
  score ``len(hits) - rank``, so what is measured is the ranking top-k accuracy also reads.
* **Questions averaged over**: those of the run with at least one relevant judgement (as BEIR
  keeps only queries with a positive); one with no hits counts 0 (trec_eval's ``-c``).
* **RR@k** (MRR@10, MS MARCO's measure): trec_eval's ``recip_rank`` has no cut-off, so it is run on
  the top k hits only, which is ``trec_eval -M k -m recip_rank`` (how pyserini reports MRR@10).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from dpr_jax.errors import DprJaxError

DEFAULT_MEASURES = ("nDCG@10", "MAP", "R@100", "RR@10")


def parse_measures(spec: str | Sequence[str]) -> list[str]:
    """``"nDCG@10,MAP,R@100"`` (or a list) -> the measure names, each checked by ir-measures."""
    import ir_measures

    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not names:
        raise DprJaxError("no measures given (e.g. nDCG@10,MAP,R@100,RR@10)")
    seen = {}
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except Exception as e:  # ir-measures raises ValueError/NameError/SyntaxError for a bad name
            raise DprJaxError(f"unknown IR measure {name!r} ({type(e).__name__}: {e}); "
                              "names are ir-measures', e.g. nDCG@10, MAP, R@100, RR@10, P@5") from None
        if not ir_measures.pytrec_eval.supports(_at_depth(measure)[0]):
            raise DprJaxError(f"measure {name!r} is not one trec_eval computes (ir-measures' pytrec_eval provider)")
        if measure in seen:
            raise DprJaxError(f"measures {seen[measure]!r} and {name!r} are the same ({measure})")
        seen[measure] = name
    return names


def _at_depth(measure):
    """``(measure trec_eval computes, run depth)``: RR@k is recip_rank over the top k (trec_eval -M k)."""
    import ir_measures

    if measure.NAME == "RR" and "cutoff" in measure.params:
        return ir_measures.RR(**{k: v for k, v in measure.params.items() if k != "cutoff"}), measure["cutoff"]
    return measure, None


def qrels_from_positive_ids(entries: Sequence) -> dict[str, dict[str, int]]:
    """Binary judgements (grade 1) from the questions' ``positive_ids``."""
    return {e.question.id: {pid: 1 for pid in e.question.positive_ids} for e in entries if e.question.positive_ids}


def _check_grades(qrels: Mapping[str, Mapping[str, float]], source: str) -> dict[str, dict[str, int]]:
    out = {}
    for qid, judged in qrels.items():
        for did, grade in judged.items():
            if float(grade) != int(grade):
                raise DprJaxError(f"{source}: query {qid!r}, document {did!r}: relevance grade {grade} is not an "
                                  "integer (trec_eval's measures need integer grades)")
        out[str(qid)] = {str(d): int(g) for d, g in judged.items()}
    return out


def evaluate_ir(entries: Sequence, qrels: Mapping[str, Mapping[str, float]] | None = None,
                measures: str | Sequence[str] = DEFAULT_MEASURES, source: str = "qrels") -> dict:
    """IR measures of a run (a list of :class:`~dpr_jax.index.runs.RunEntry`) against ``qrels``.

    ``qrels`` is ``{query_id: {doc_id: grade}}`` (:func:`dpr_jax.data.questions.read_qrels_grades`);
    None takes binary judgements from the questions' positive ids. Returns ``{"measures": {name:
    mean}, "num_judged_questions": n, "relevance": "graded qrels" | "binary (positive_ids)",
    "computed_by": "ir-measures X (pytrec_eval Y)"}``; the means are None when no question of the
    run has a relevant judgement.
    """
    import ir_measures

    names = parse_measures(measures)
    relevance = "graded qrels" if qrels is not None else "binary (positive_ids)"
    qrels = _check_grades(qrels, source) if qrels is not None else qrels_from_positive_ids(entries)
    judged = [e for e in entries if any(g > 0 for g in qrels.get(e.question.id, {}).values())]
    seen: set[str] = set()
    for e in judged:
        if e.question.id in seen:
            raise DprJaxError(f"question id {e.question.id!r} appears twice in the run; each needs its own id")
        seen.add(e.question.id)
    run = {}
    for e in judged:
        if e.hits:
            docs: dict[str, float] = {}
            for rank, hit in enumerate(e.hits):
                docs.setdefault(hit.id, float(len(e.hits) - rank))  # a repeated id keeps its best rank
            run[e.question.id] = docs
    used_qrels = {e.question.id: qrels[e.question.id] for e in judged}
    per_query: dict[str, dict[str, float]] = {name: {} for name in names}
    by_depth: dict[int | None, dict] = {}  # run depth -> {measure trec_eval computes: our name}
    for name in names:
        measure, depth = _at_depth(ir_measures.parse_measure(name))
        by_depth.setdefault(depth, {})[measure] = name
    for depth, wanted in by_depth.items():
        cut = run if depth is None else {q: dict(list(docs.items())[:depth]) for q, docs in run.items()}
        for metric in ir_measures.pytrec_eval.iter_calc(list(wanted), used_qrels, cut):
            per_query[wanted[metric.measure]][metric.query_id] = float(metric.value)
    n = len(judged)
    # a judged question without hits is not in the run trec_eval sees: it counts 0 here (trec_eval -c)
    means = {name: (sum(per_query[name].get(e.question.id, 0.0) for e in judged) / n if n else None)
             for name in names}
    return {"measures": means, "num_judged_questions": n, "relevance": relevance, "computed_by": _provider()}


def _provider() -> str:
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    return f"ir-measures {version('ir-measures')} (pytrec_eval {version('pytrec-eval-terrier')}, trec_eval)"
