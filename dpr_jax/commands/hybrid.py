"""Fuse a dense and a sparse run the way pyserini's HybridSearcher does.

Per question: the union of both hit lists; a passage missing from one list gets that list's lowest
score; with normalisation (the default) each list is mapped by ``(s - (min+max)/2) / (max-min)``;
the fused score is ``alpha * sparse + dense`` (``sparse + alpha * dense`` with --weight-on-dense).
Both runs must come from the same question file, in the same order.
"""

from __future__ import annotations

HELP = "fuse dense and BM25 runs (pyserini hybrid)"


def add_arguments(parser) -> None:
    from dpr_jax.commands.common import positive_int

    parser.add_argument("--dense", required=True, help="dense run (DPR JSON or TREC)")
    parser.add_argument("--sparse", required=True, help="sparse run, e.g. from `dpr-jax bm25`")
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of the sparse scores (default 1.0)")
    parser.add_argument("--no-normalize", dest="normalize", action="store_false",
                        help="fuse raw scores instead of min/max-normalised ones")
    parser.add_argument("--weight-on-dense", action="store_true", help="alpha weights the dense scores instead")
    parser.add_argument("--k", type=positive_int, default=100, help="hits kept per question (default 100)")
    parser.add_argument("--questions", help="question file (needed when a run is in TREC format)")
    parser.add_argument("--qrels", help="BEIR qrels for --questions")
    parser.add_argument("--no-text", action="store_true", help="leave passage titles/texts out of the JSON run")
    parser.add_argument("--out", required=True, help="fused run (DPR JSON; .trec/.txt extension writes TREC)")


def run(args) -> int:
    import sys
    from dpr_jax import storage
    from dpr_jax.index.hybrid import fuse
    from dpr_jax.index.runs import read_run, write_dpr_run, write_trec_run
    from dpr_jax.storage import check_output_file

    check_output_file(args.out)
    questions = None
    if args.questions:
        from dpr_jax.data.questions import read_questions

        questions = read_questions(args.questions, qrels=args.qrels)
    dense = read_run(args.dense, questions)
    sparse = read_run(args.sparse, questions)
    fused = fuse(dense, sparse, alpha=args.alpha, normalization=args.normalize,
                 weight_on_dense=args.weight_on_dense, k=args.k)
    if storage.as_path(args.out).suffix in (".trec", ".txt"):
        write_trec_run(args.out, fused, tag="hybrid")
    else:
        write_dpr_run(args.out, fused, include_text=not args.no_text)
    print(f"hybrid: fused {len(fused)} questions (alpha={args.alpha}) -> {args.out}", file=sys.stderr)
    return 0
