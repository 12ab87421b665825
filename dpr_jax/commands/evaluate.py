"""Evaluate a run: DPR top-k retrieval accuracy, recall@k and MRR@10, printed as a Markdown table.

Top-k accuracy uses each hit's stored ``has_answer`` or, when absent, DPR's answer matching on the
hit's text. A TREC run carries neither: give --questions (answers, positive ids) and --passages
(texts). --passages also re-matches answers for a JSON run (e.g. with another --match).
"""

from __future__ import annotations

HELP = "top-k accuracy, recall and MRR@10 of a run file"


def _parse_ks(text: str) -> list[int]:
    import argparse

    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return ks


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="run file (DPR result JSON or TREC)")
    parser.add_argument("--questions", help="question file (required for TREC runs)")
    parser.add_argument("--qrels", help="BEIR qrels for --questions")
    parser.add_argument("--passages", help="passages file, to fill in hit texts and recompute has_answer")
    parser.add_argument("--k", type=_parse_ks, default=[1, 5, 20, 100], help="cut-offs (default 1,5,20,100)")
    parser.add_argument("--match", choices=("string", "regex"), default="string",
                        help="answer matching (regex for CuratedTREC)")
    parser.add_argument("--name", help="row name in the table (default: the run file's name)")
    parser.add_argument("--out", help="write the metrics as JSON here")


def run(args) -> int:
    from dpr_jax import storage
    from dpr_jax.errors import DprJaxError
    from dpr_jax.eval.metrics import evaluate_run, format_table
    from dpr_jax.index.runs import attach_passages, read_run

    questions = None
    if args.questions:
        from dpr_jax.data.questions import read_questions

        questions = read_questions(args.questions, qrels=args.qrels)
    entries = read_run(args.run, questions)
    if args.passages:
        entries = attach_passages(entries, args.passages, match=args.match)
    elif any(h.has_answer is None and not h.text for e in entries for h in e.hits):
        raise DprJaxError(f"{args.run}: some hits have neither has_answer nor text; "
                          "pass --passages (and --questions for a TREC run)")
    if not any(e.question.answers or e.question.positive_ids for e in entries):
        raise DprJaxError(f"{args.run}: no question has answers or positive ids to evaluate against"
                          + ("" if questions else "; pass --questions"))
    metrics = evaluate_run(entries, ks=args.k, match=args.match)
    name = args.name or storage.as_path(args.run).name
    print(format_table({name: metrics}, ks=args.k))
    print(f"\n{metrics['num_questions']} questions, {metrics['num_with_positive_ids']} with positive ids")
    if args.out:
        storage.write_json(args.out, metrics | {"run": str(args.run), "match": args.match})
    return 0
