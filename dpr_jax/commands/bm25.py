"""BM25 retrieval for a question file over a passages file (bm25s, pyserini's k1=0.9, b=0.4).

The index is built on first use and cached in ``<passages>.bm25/`` (or --index-dir); for a
``gs://`` passages file the default cache is local (``~/.cache/dpr-jax/bm25/``, keyed by the URL).
It is rebuilt when the passages file (its size and mtime, or its object generation) or the settings
change. The run is written as DPR result JSON with each
hit's title, text and has_answer (or as a TREC run with --trec), ready for ``dpr-jax evaluate``
and ``dpr-jax hybrid``.
"""

from __future__ import annotations

HELP = "retrieve with BM25 (bm25s) and write a run file"


def add_arguments(parser) -> None:
    from dpr_jax.commands.common import positive_int

    parser.add_argument("--passages", required=True, help="passages file (DPR TSV, JSONL or BEIR corpus.jsonl)")
    parser.add_argument("--questions", required=True, help="question file (JSONL, DPR QA TSV, BEIR queries)")
    parser.add_argument("--qrels", help="BEIR qrels TSV giving the positive passage ids")
    parser.add_argument("--k", type=positive_int, default=100, help="hits per question (default 100)")
    parser.add_argument("--out", required=True, help="run file to write")
    parser.add_argument("--index-dir", help="where the BM25 index is cached, local or gs:// (default <passages>.bm25/; "
                             "for a gs:// corpus a local cache)")
    parser.add_argument("--trec", action="store_true", help="write a TREC run instead of DPR JSON")
    parser.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, pyserini's)")
    parser.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, pyserini's)")
    parser.add_argument("--no-text", action="store_true",
                        help="leave passage titles/texts out of the JSON run (much smaller; has_answer is kept)")
    parser.add_argument("--match", choices=("string", "regex"), default="string",
                        help="answer matching for has_answer (regex for CuratedTREC)")


def run(args) -> int:
    import sys

    from dpr_jax.data.questions import read_questions
    from dpr_jax.index.bm25 import open_or_build
    from dpr_jax.index.runs import Hit, RunEntry, attach_passages, write_dpr_run, write_trec_run
    from dpr_jax.storage import check_output_file

    check_output_file(args.out)
    questions = read_questions(args.questions, qrels=args.qrels)
    index = open_or_build(args.passages, args.index_dir, k1=args.k1, b=args.b)
    ids, scores = index.search([q.question for q in questions], args.k)
    # as with Lucene, passages sharing no term with the question (score 0) are not hits
    entries = [RunEntry(q, [Hit(pid, float(s)) for pid, s in zip(row_ids, row_scores) if s > 0])
               for q, row_ids, row_scores in zip(questions, ids, scores)]
    if args.trec:
        write_trec_run(args.out, entries, tag="bm25")
    else:
        write_dpr_run(args.out, attach_passages(entries, args.passages, match=args.match),
                      include_text=not args.no_text)
    print(f"BM25: {len(entries)} questions x {scores.shape[1]} hits over {len(index)} passages "
          f"-> {args.out}", file=sys.stderr)
    return 0
