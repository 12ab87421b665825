"""Prepare and check input data.

  dpr-jax data squad --out data/squad           # SQuAD v1.1 dev -> passages/train/eval benchmark
  dpr-jax data validate corpus.tsv --kind passages
  dpr-jax data validate queries.jsonl --kind questions --qrels qrels/test.tsv
  dpr-jax data validate biencoder-nq-train.json --kind train
  dpr-jax data pseudo-queries --passages passages.jsonl --out pseudo.jsonl --unit span --label bm25

`validate` reads the whole file, prints counts and every problem with its file:line, and exits
with status 1 when there is any problem.
"""

from __future__ import annotations

import sys

HELP = "prepare the SQuAD benchmark, validate files, make pseudo-query training records from a corpus"

_MAX_SHOWN = 50


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    sq = sub.add_parser("squad", help="build the SQuAD retrieval benchmark (passages, train, eval, split)",
                        description="Split the SQuAD v1.1 dev set by article into a corpus of all "
                                    "paragraphs, DPR training records and eval questions.")
    sq.add_argument("--squad", metavar="FILE",
                    help="SQuAD v1.1 dev JSON (default: $DPR_JAX_DATA/squad/dev-v1.1.json or the shared "
                         "data directory)")
    sq.add_argument("--out", metavar="DIR", required=True, help="output directory")
    sq.add_argument("--eval-articles", metavar="A,B,...",
                    help="comma-separated eval article titles (default: the 12 benchmark articles); "
                         "titles containing commas such as Jacksonville,_Florida are recognised")
    sq.add_argument("--dev-articles", type=int, default=0, metavar="N",
                    help="move N training articles' questions to dev.jsonl (for tuning; default 0)")
    sq.add_argument("--heldout-articles", type=int, default=0, metavar="N",
                    help="move N training articles' questions and paragraphs to heldout/ (a check on articles "
                         "no training saw; default 0)")
    sq.add_argument("--seed", type=int, default=0, help="seed of the dev/held-out article draw")
    sq.add_argument("--download", action="store_true",
                    help="download the file (checksum-verified) when it is missing")
    sq.set_defaults(_data_run=_run_squad)

    pq = sub.add_parser(
        "pseudo-queries", help="training records from a corpus alone: sentences/spans/crops as queries",
        description="Draw pseudo-queries from passages (ICT sentences, SPAR-style spans, Contriever crops) and "
                    "label them with their own passage (ICT, cropping) or with BM25's ranking (SPAR: top ranks "
                    "positive, lower ranks hard negatives, BM25 scores as teacher scores). Output: DPR "
                    "training records (JSON lines). Deterministic for a given --seed.")
    pq.add_argument("--passages", required=True, help="the corpus: queries are drawn from it, BM25 ranks it")
    pq.add_argument("--out", required=True, help="training records to write (JSON lines)")
    pq.add_argument("--unit", choices=("sentence", "span", "crop"), default="span",
                    help="a whole sentence, a word span inside a sentence (default), or two random crops")
    pq.add_argument("--label", choices=("bm25", "source"), default="bm25",
                    help="bm25: BM25's ranking (default); source: the query's own passage (ICT, cropping)")
    pq.add_argument("--per-passage", type=int, default=0,
                    help="queries per passage (default 0: one per sentence; crops: 2)")
    pq.add_argument("--min-words", type=int, default=6, help="shortest span/sentence/crop in words (default 6)")
    pq.add_argument("--max-words", type=int, default=14, help="longest span in words (default 14)")
    pq.add_argument("--crop-ratio", default="0.1,0.5", help="crop: share of the passage's words, LOW,HIGH")
    pq.add_argument("--remove-sentence", type=float, default=0.0, metavar="P",
                    help="source label: cut the query's sentence out of its passage with probability P (ICT: 0.9)")
    pq.add_argument("--positives", type=int, default=1, help="bm25: ranks 1..N are positives (default 1)")
    pq.add_argument("--negatives-from", type=int, default=4, help="bm25: first hard-negative rank (default 4)")
    pq.add_argument("--depth", type=int, default=30, help="bm25: last hard-negative rank (default 30)")
    pq.add_argument("--exclude", metavar="PASSAGES",
                    help="passages (any passages file) to keep out: no queries from them, never a label")
    pq.add_argument("--questions", metavar="FILE",
                    help="bm25: label these questions (any questions file) instead of drawing queries from passages")
    pq.add_argument("--max-queries", type=int, default=0, help="keep a seeded random N of the queries (0: all)")
    pq.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    pq.add_argument("--index-dir", help="bm25: index cache directory (default <passages>.bm25/)")
    pq.set_defaults(_data_run=_run_pseudo_queries)

    va = sub.add_parser("validate", help="read a whole file and report every problem (exit 1 if any)")
    va.add_argument("file", metavar="FILE")
    va.add_argument("--kind", choices=("passages", "questions", "train"), required=True)
    va.add_argument("--format", dest="fmt", default=None,
                    help="passages: tsv|jsonl|beir; questions: jsonl|tsv|beir|dpr (default: detected)")
    va.add_argument("--qrels", metavar="FILE", help="questions only: BEIR qrels TSV giving positive ids")
    va.set_defaults(_data_run=_run_validate)


def run(args) -> int:
    return args._data_run(args)


def _run_squad(args) -> int:
    from dpr_jax import settings, storage
    from dpr_jax.data.squad import DEFAULT_EVAL_ARTICLES, fetch_squad_dev, prepare_squad
    from dpr_jax.errors import DprJaxError
    from dpr_jax.storage import check_output_dir

    check_output_dir(args.out)
    squad = storage.as_path(args.squad) if args.squad else settings.squad_dev_path()
    if not squad.exists():
        if not args.download:
            raise DprJaxError(
                f"SQuAD v1.1 dev set not found at {squad}. Put dev-v1.1.json there, or set DPR_JAX_DATA to a "
                f"directory containing squad/dev-v1.1.json, or pass --squad FILE, or add --download to fetch "
                f"it from {settings.SQUAD_DEV_URL}")
        print(f"downloading {settings.SQUAD_DEV_URL} -> {squad}", file=sys.stderr)
        fetch_squad_dev(squad)
    split = prepare_squad(squad, args.out, eval_articles=args.eval_articles or DEFAULT_EVAL_ARTICLES,
                          dev_articles=args.dev_articles, heldout_articles=args.heldout_articles, seed=args.seed)
    c = split["counts"]
    extra = "".join(f", {name}" for name, key in (("dev.jsonl", "dev_articles"), ("heldout/", "heldout_articles"))
                    if key in c)
    print(f"wrote {args.out}/passages.jsonl, train.jsonl, eval.jsonl{extra}, split.json")
    slices = "".join(f", {c[key]} {name}" for name, key in (("dev", "dev_articles"), ("held out", "heldout_articles"))
                     if key in c)
    print(f"articles: {c['articles']} ({c['train_articles']} train, {c['eval_articles']} eval{slices})")
    print(f"passages: {c['passages']}")
    print(f"train questions: {c['train_questions']}")
    print(f"eval questions: {c['eval_questions']}")
    for name, key in (("dev questions", "dev_questions"), ("held-out questions", "heldout_questions"),
                      ("held-out passages", "heldout_passages")):
        if key in c:
            print(f"{name}: {c[key]}")
    return 0


def _run_pseudo_queries(args) -> int:
    import numpy as np

    from dpr_jax.data.passages import read_passages
    from dpr_jax.data.pseudo_queries import PseudoQuerySpec, ranked_records, sample_pseudo_queries, source_records
    from dpr_jax.data.training_data import write_training_records
    from dpr_jax.errors import DprJaxError

    try:
        crop_ratio = tuple(float(x) for x in args.crop_ratio.split(","))
    except ValueError:
        crop_ratio = ()
    if len(crop_ratio) != 2:
        raise DprJaxError(f"--crop-ratio must be LOW,HIGH (e.g. 0.1,0.5), not {args.crop_ratio!r}")
    if args.label == "bm25" and args.remove_sentence:
        raise DprJaxError("--remove-sentence needs --label source: BM25 labels score the corpus passages as they "
                          "are, so a positive with its sentence cut out would not match its teacher score")
    if args.label == "bm25" and args.unit == "crop":
        raise DprJaxError("crops are labelled by their own passage (the other crop): use --label source")
    if args.max_queries < 0:
        raise DprJaxError("--max-queries must be >= 0")
    spec = PseudoQuerySpec(unit=args.unit, per_passage=args.per_passage, min_words=args.min_words,
                           max_words=args.max_words, crop_ratio=crop_ratio, remove_sentence=args.remove_sentence,
                           seed=args.seed)
    if args.questions and args.label != "bm25":
        raise DprJaxError("--questions are labelled by BM25's ranking: use --label bm25")
    exclude = frozenset(p.id for p in read_passages(args.exclude)) if args.exclude else frozenset()
    passages = {p.id: p for p in read_passages(args.passages)}
    if args.questions:
        from dpr_jax.data.questions import read_questions
        from dpr_jax.data.pseudo_queries import PseudoQuery
        from dpr_jax.data.records import Passage

        nowhere = Passage(id="", text="")
        queries = [PseudoQuery(q.question, nowhere, nowhere) for q in read_questions(args.questions)]
    else:
        queries = sample_pseudo_queries(passages.values(), spec, exclude)
    if args.max_queries and len(queries) > args.max_queries:
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(queries))[:args.max_queries])
        queries = [queries[i] for i in keep]
    if not queries:
        raise DprJaxError(f"{args.passages}: no passage gave a pseudo-query (passages too short for "
                          f"--min-words {args.min_words}?)")
    dropped = 0
    if args.label == "source":
        records = source_records(queries)
    else:
        from dpr_jax.index import teacher

        if not 1 <= args.positives < args.negatives_from <= args.depth:
            raise DprJaxError("need 1 <= --positives < --negatives-from <= --depth")
        rankings = teacher.bm25_rankings(args.passages, [q.query for q in queries],
                                         min(args.depth + len(exclude), len(passages)), [()] * len(queries),
                                         index_dir=args.index_dir)
        records, dropped = ranked_records([q.query for q in queries], rankings.ids, rankings.scores, passages,
                                          positives=args.positives, negatives_from=args.negatives_from,
                                          depth=args.depth, exclude_ids=exclude)
        if not args.questions:
            own = sum(1 for q, ids in zip(queries, rankings.ids)
                      if [i for i in ids if i not in exclude][:1] == [q.source.id])
            print(f"BM25 ranks the query's own passage first for {own} of {len(queries)} queries "
                  f"({100 * own / len(queries):.1f}%)", file=sys.stderr)
    write_training_records(args.out, records)
    removed = sum(q.removed for q in queries)
    origin = f"the questions of {args.questions}" if args.questions else \
        f"{len(passages) - len(exclude & passages.keys())} passages"
    print(f"{args.out}: {len(records)} records from {origin} "
          f"({args.unit}, labels: {args.label}"
          + (f"; sentence removed from {removed}" if args.remove_sentence else "")
          + (f"; {dropped} queries with no BM25 match dropped" if dropped else "")
          + (f"; {len(exclude & passages.keys())} passages excluded" if exclude else "") + ")", file=sys.stderr)
    return 0


def _report(problems) -> int:
    if not problems:
        print("no problems found")
        return 0
    print(f"{len(problems)} problem(s):")
    for p in problems[:_MAX_SHOWN]:
        print(f"  {p}")
    if len(problems) > _MAX_SHOWN:
        print(f"  ... and {len(problems) - _MAX_SHOWN} more")
    return 1


def _run_validate(args) -> int:
    from dpr_jax.errors import DprJaxError

    if args.qrels and args.kind != "questions":
        raise DprJaxError("--qrels only applies to --kind questions")
    if args.fmt and args.kind == "train":
        raise DprJaxError("--format does not apply to --kind train (JSON array or JSON lines is detected)")
    problems: list = []
    if args.kind == "passages":
        from tqdm import tqdm

        from dpr_jax.data.passages import estimate_passage_count, read_passages

        n = 0
        for _ in tqdm(read_passages(args.file, fmt=args.fmt, problems=problems), total=estimate_passage_count(args.file, args.fmt),
                      unit="psg", desc="reading", disable=None, file=sys.stderr):
            n += 1
        print(f"passages: {n}")
    elif args.kind == "questions":
        from dpr_jax.data.questions import read_questions

        qs = read_questions(args.file, fmt=args.fmt, qrels=args.qrels, problems=problems)
        print(f"questions: {len(qs)}")
        print(f"  with answers: {sum(bool(q.answers) for q in qs)}")
        print(f"  with positive ids: {sum(bool(q.positive_ids) for q in qs)}")
    else:
        from dpr_jax.data.training_data import read_training_records

        records, problems = read_training_records(args.file, on_error="skip")
        print(f"training records: {len(records)}")
        print(f"  positives: {sum(len(r.positives) for r in records)}")
        print(f"  negatives: {sum(len(r.negatives) for r in records)}")
        print(f"  hard negatives: {sum(len(r.hard_negatives) for r in records)}")
    return _report(problems)
