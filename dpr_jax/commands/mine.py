"""Mine hard negatives for a DPR training file from BM25 or dense rankings.

For each training question the top --depth passages are retrieved; the best --num that are not
positives (by id or identical text) and do not contain an answer (DPR's has_answer) replace the
record's ``hard_negative_ctxs``. --method bm25 uses the cached BM25 index of --passages; --method
dense uses any dense model (--model: a dpr-jax run, an HF directory or hub name) and its encoded
corpus (--index), e.g. for a second training round with harder negatives.

Every kept negative and every positive gets the retriever's ``score`` for the question (positives
outside the ranking are scored as the ranking would have: :mod:`dpr_jax.index.teacher`): the teacher
scores of ``--config.train.loss=kl`` / ``margin_mse``. Other ctx lists are written as they were.
"""

from __future__ import annotations

HELP = "mine BM25 or dense hard negatives into a training file"


def add_arguments(parser) -> None:
    from dpr_jax.commands.common import add_model_arguments, positive_int

    parser.add_argument("--passages", required=True, help="passages file the negatives are drawn from")
    parser.add_argument("--train", required=True, help="DPR retriever training file (JSON or JSONL)")
    parser.add_argument("--out", required=True, help="training file to write (JSON lines)")
    parser.add_argument("--method", choices=("bm25", "dense"), default="bm25")
    add_model_arguments(parser, default_max_length=64, required=False,
                        model_help="dense: the model that ranks (HF directory or hub name, run directory, export)")
    parser.add_argument("--index", help="dense: encoded corpus directory (from `dpr-jax encode`)")
    parser.add_argument("--index-dir", help="bm25: index cache directory (default <passages>.bm25/; for a gs:// corpus a local cache)")
    parser.add_argument("--num", type=positive_int, default=30, help="hard negatives per question (default 30)")
    parser.add_argument("--depth", type=positive_int, default=100, help="passages retrieved per question (default 100)")
    parser.add_argument("--match", choices=("string", "regex"), default="string", help="answer matching")
    parser.add_argument("--skip-bad-records", action="store_true",
                        help="drop invalid training records (reported) instead of stopping at the first")


def run(args) -> int:
    import dataclasses
    import sys

    from dpr_jax.data.negatives import mine_hard_negatives
    from dpr_jax.data.training_data import read_training_records, write_training_records
    from dpr_jax.errors import DprJaxError
    from dpr_jax.index import teacher
    from dpr_jax.index.runs import fetch_passages
    from dpr_jax.storage import check_output_file

    check_output_file(args.out)
    if args.num < 1 or args.depth < args.num:
        raise DprJaxError(f"need 1 <= --num <= --depth, got --num {args.num} --depth {args.depth}")
    if args.method == "dense" and (not args.model or not args.index):
        raise DprJaxError("--method dense needs --model and --index")
    records, problems = read_training_records(args.train, on_error="skip" if args.skip_bad_records else "fail")
    queries = [r.question for r in records]
    positives = [r.positives for r in records]
    if args.method == "bm25":
        rankings = teacher.bm25_rankings(args.passages, queries, args.depth, positives, index_dir=args.index_dir)
    else:
        from dpr_jax.commands.common import load_model_from_args

        rankings = teacher.dense_rankings(load_model_from_args(args), args.index, queries, args.depth, positives,
                                          question_max_length=args.max_length, batch_size=args.batch_size)
    passages = fetch_passages(args.passages, {pid for row in rankings.ids for pid in row})
    mined = mine_hard_negatives(records, rankings.ids, passages, args.num, match=args.match,
                                ranked_scores_per_record=rankings.scores)
    mined = [dataclasses.replace(r, positive_scores=tuple(s)) for r, s in zip(mined, rankings.given_scores)]
    write_training_records(args.out, mined)
    short = sum(1 for r in mined if len(r.hard_negatives) < args.num)
    none = sum(1 for r in mined if not r.hard_negatives)
    unscored = sum(s is None for row in rankings.given_scores for s in row)
    print(f"mined {args.method} hard negatives for {len(mined)} records -> {args.out} "
          f"({short} with fewer than {args.num}, {none} with none"
          + (f"; {unscored} positives without a score: not in the corpus by id" if unscored else "")
          + (f"; {len(problems)} bad records skipped" if problems else "") + ")", file=sys.stderr)
    return 0
