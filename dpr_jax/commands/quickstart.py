"""Run the whole DPR story on SQuAD: data split, BM25, zero-shot dense, a short DPR fine-tune with BM25
hard negatives, hybrid; print one table and write it, with plots, to the run directory.

Each stage is printed as the dpr-jax command it runs, and is skipped when its output exists (rerun to resume).
"""

HELP = "SQuAD end to end: BM25, zero-shot dense, DPR fine-tune (or --recipe best), hybrid, one table"


def add_arguments(parser):
    from dpr_jax.commands.common import add_offline_argument, positive_int

    add_offline_argument(parser)
    parser.add_argument("--workdir", help="where everything is written (default runs/quickstart, "
                                          "runs/quickstart-best with --recipe best)")
    parser.add_argument("--recipe", choices=("dpr", "best"), default="dpr",
                        help="dpr: today's DPR fine-tune (default); best: the README's best recipe, one "
                             "concatenated DPR + lexical-model index (SPAR) with w tuned on a dev slice")
    parser.add_argument("--squad", help="SQuAD v1.1 JSON (default: $DPR_JAX_DATA/squad/dev-v1.1.json or ../shared/data)")
    parser.add_argument("--train-steps", type=positive_int, help="training steps (default 20: minutes on a CPU)")
    parser.add_argument("--passage-max-length", type=positive_int, default=256, help="passage tokens for encoding")
    parser.add_argument("--no-train", action="store_true", help="skip the fine-tune (BM25, zero-shot, hybrid only)")


def run(args) -> int:
    from dpr_jax.storage import check_output_dir
    from dpr_jax.quickstart import run_quickstart

    workdir = args.workdir or ("runs/quickstart-best" if args.recipe == "best" else "runs/quickstart")
    check_output_dir(workdir, "--workdir")
    run_quickstart(workdir, squad=args.squad, train_steps=args.train_steps,
                   passage_max_length=args.passage_max_length, skip_train=args.no_train, recipe=args.recipe)
    return 0
