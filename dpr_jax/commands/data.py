"""Prepare and check input data.

  dpr-jax data squad --out data/squad           # SQuAD v1.1 dev -> passages/train/eval benchmark
  dpr-jax data validate corpus.tsv --kind passages
  dpr-jax data validate queries.jsonl --kind questions --qrels qrels/test.tsv
  dpr-jax data validate biencoder-nq-train.json --kind train

`validate` reads the whole file, prints counts and every problem with its file:line, and exits
with status 1 when there is any problem.
"""

from __future__ import annotations

import sys

HELP = "prepare the SQuAD benchmark, validate passage/question/training files"

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
    sq.add_argument("--download", action="store_true",
                    help="download the file (checksum-verified) when it is missing")
    sq.set_defaults(_data_run=_run_squad)

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
    split = prepare_squad(squad, args.out, eval_articles=args.eval_articles or DEFAULT_EVAL_ARTICLES)
    c = split["counts"]
    print(f"wrote {args.out}/passages.jsonl, train.jsonl, eval.jsonl, split.json")
    print(f"articles: {c['articles']} ({c['train_articles']} train, {c['eval_articles']} eval)")
    print(f"passages: {c['passages']}")
    print(f"train questions: {c['train_questions']}")
    print(f"eval questions: {c['eval_questions']}")
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
