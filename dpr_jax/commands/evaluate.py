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
    from dpr_jax.errors import DprJaxError
    from dpr_jax.eval.ir_metrics import DEFAULT_MEASURES, evaluate_ir, parse_measures
    from dpr_jax.eval.metrics import evaluate_run, format_table
    from dpr_jax.index.runs import attach_passages, read_run
    from dpr_jax.storage import check_output_file

    if args.out:
        check_output_file(args.out)
    if args.qrels and not args.questions:
        raise DprJaxError("--qrels needs --questions (the queries the qrels judge, e.g. BEIR queries.jsonl)")
    measures = parse_measures(args.measures) if args.measures else (list(DEFAULT_MEASURES) if args.qrels else [])
    questions, grades = None, None
    if args.questions:
        from dpr_jax.data.questions import read_questions

        questions = read_questions(args.questions)
    entries = read_run(args.run, questions)
    if args.qrels:  # as in BEIR, only the questions with a relevant judgement are evaluated
        from dpr_jax.data.questions import apply_qrels, positives_of, read_qrels_grades
        from dpr_jax.index.runs import RunEntry

        grades = read_qrels_grades(args.qrels)
        judged = {q.id: q for q in apply_qrels(questions, positives_of(grades), args.qrels)}
        entries = [RunEntry(judged[e.question.id], e.hits) for e in entries if e.question.id in judged]
        if not entries:
            raise DprJaxError(f"{args.qrels}: no question of {args.run} has a relevant judgement")
    with_answers = any(e.question.answers for e in entries)
    if args.passages:
        entries = attach_passages(entries, args.passages, match=args.match)
    elif with_answers and any(h.has_answer is None and not h.text for e in entries for h in e.hits):
        raise DprJaxError(f"{args.run}: some hits have neither has_answer nor text; "
                          "pass --passages (and --questions for a TREC run)")
    if not any(e.question.answers or e.question.positive_ids for e in entries):
        raise DprJaxError(f"{args.run}: no question has answers or positive ids to evaluate against"
                          + ("" if questions else "; pass --questions"))
    metrics = evaluate_run(entries, ks=args.k, match=args.match)
    if not with_answers:  # BEIR-style questions: answer accuracy does not exist, it is not 0
        metrics["top_k_accuracy"] = None
    if measures:
        metrics["ir_measures"] = evaluate_ir(entries, grades, measures, source=args.qrels or "positive ids")
    name = args.name or storage.as_path(args.run).name
    print(format_table({name: metrics}, ks=args.k, measures=measures))
    print(f"\n{metrics['num_questions']} questions, {metrics['num_with_positive_ids']} with positive ids")
    if measures:
        ir = metrics["ir_measures"]
        print(f"{', '.join(measures)}: {ir['relevance']}, {ir['num_judged_questions']} judged questions, "
              f"by {ir['computed_by']}")
    if args.out:
        storage.write_json(args.out, metrics | {"run": str(args.run), "match": args.match})
    return 0
