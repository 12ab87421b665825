"""Evaluate a run: DPR top-k retrieval accuracy, recall@k and MRR@10, and trec_eval's IR measures.

Top-k accuracy uses each hit's stored ``has_answer`` or, when absent, DPR's answer matching on the
hit's text. A TREC run carries neither: give --questions (answers, positive ids) and --passages
(texts). --passages also re-matches answers for a JSON run (e.g. with another --match).

With --qrels (BEIR ``query-id corpus-id score``, graded), nDCG@10, MAP, R@100 and RR@10 (or the
ir-measures names given to --measures) are computed by trec_eval (ir-measures' pytrec_eval
provider) against the graded judgements, over the questions with a relevant one:

  dpr-jax evaluate --run run.trec --questions queries.jsonl --qrels qrels/test.tsv \\
      --measures nDCG@10,MAP,R@100,RR@10 --out metrics.json

--measures without --qrels uses the questions' positive ids as binary judgements.
"""

from __future__ import annotations

HELP = "top-k accuracy, recall, MRR@10 and trec_eval measures (nDCG@10, MAP) of a run file"


def _parse_ks(text: str) -> list[int]:
    import argparse

    from dpr_jax.commands.common import positive_int

    ks = [positive_int(x) for x in text.split(",") if x.strip()]
    if not ks:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return ks


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="run file (DPR result JSON or TREC)")
    parser.add_argument("--questions", help="question file (required for TREC runs and with --qrels)")
    parser.add_argument("--qrels", help="BEIR qrels TSV for --questions: positive ids and graded relevance")
    parser.add_argument("--measures", help="trec_eval measures, ir-measures names (default with --qrels: "
                                           "nDCG@10,MAP,R@100,RR@10)")
    parser.add_argument("--passages", help="passages file, to fill in hit texts and recompute has_answer")
    parser.add_argument("--k", type=_parse_ks, default=[1, 5, 20, 100], help="cut-offs (default 1,5,20,100)")
    parser.add_argument("--match", choices=("string", "regex"), default="string",
                        help="answer matching (regex for CuratedTREC)")
    parser.add_argument("--name", help="row name in the table (default: the run file's name)")
    parser.add_argument("--out", help="write the metrics as JSON here")


def run(args) -> int:
    from dpr_jax import storage
    from dpr_jax.api import evaluate
    from dpr_jax.eval.metrics import format_table

    metrics = evaluate(args.run, args.questions, qrels=args.qrels, passages=args.passages, ks=args.k,
                       match=args.match, measures=args.measures, out=args.out)
    ir = metrics.get("ir_measures")
    measures = list(ir["measures"]) if ir else []
    name = args.name or storage.as_path(args.run).name
    print(format_table({name: metrics}, ks=args.k, measures=measures))
    print(f"\n{metrics['num_questions']} questions, {metrics['num_with_positive_ids']} with positive ids")
    if ir:
        print(f"{', '.join(measures)}: {ir['relevance']}, {ir['num_judged_questions']} judged questions, "
              f"by {ir['computed_by']}")
    return 0
