"""Draw a model's vector space or a run's training curves as a PNG.

  dpr-jax plot embeddings --model runs/squad --questions data/squad/eval.jsonl \\
      --passages data/squad/passages.jsonl --out embeddings.png
  dpr-jax plot training --workdir runs/squad --out training.png

embeddings: a sample of questions (they need positive_ids, as eval.jsonl from `dpr-jax data squad`
has), their positive passages and some random other passages are encoded with the model and
projected to 2-D with PCA; a line joins each question to its positive passage.
training: loss, learning rate, in-batch accuracy and eval top-k over steps from WORKDIR/metrics.jsonl.
"""

from __future__ import annotations

HELP = "plot question/passage embeddings (PCA) or a run's training curves (PNG)"


def add_arguments(parser) -> None:
    from dpr_jax.commands.common import add_model_arguments, positive_int

    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    emb = sub.add_parser("embeddings", help="questions and passages in the PCA plane of the model's vectors")
    add_model_arguments(emb, default_max_length=256)
    emb.add_argument("--questions", required=True, help="questions with positive_ids (JSONL, BEIR, DPR JSON)")
    emb.add_argument("--passages", required=True, help="the passages the positive_ids refer to")
    emb.add_argument("--out", required=True, help="PNG file to write")
    emb.add_argument("--sample", type=positive_int, default=200, help="questions drawn at most (default 200)")
    emb.add_argument("--others", type=int, default=100, help="random non-positive passages drawn (default 100)")
    emb.add_argument("--seed", type=int, default=0, help="sampling seed")
    emb.add_argument("--title", help="figure title (default: names the model)")

    tr = sub.add_parser("training", help="loss, learning rate, accuracy and eval top-k over steps")
    tr.add_argument("--workdir", required=True, help="training run directory (or its metrics.jsonl)")
    tr.add_argument("--out", required=True, help="PNG file to write")
    tr.add_argument("--title", help="figure title (default: names the run)")


def run(args) -> int:
    import sys

    from dpr_jax import plots
    from dpr_jax.storage import check_output_file

    check_output_file(args.out)
    if args.what == "training":
        plots.plot_training(args.workdir, args.out, title=args.title)
    else:
        from dpr_jax.commands.common import load_model_from_args

        if args.others < 0:
            from dpr_jax.errors import DprJaxError

            raise DprJaxError("--others must be >= 0")
        loaded = load_model_from_args(args)
        plots.plot_embeddings(loaded, args.questions, args.passages, args.out, sample=args.sample,
                              others=args.others, max_length=args.max_length, batch_size=args.batch_size,
                              seed=args.seed, title=args.title)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
