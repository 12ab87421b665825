"""Export a trained dual encoder as Hugging Face model directories.

  dpr-jax export --workdir runs/squad --out export/squad                  # BertModel + sentence-transformers
  dpr-jax export --workdir runs/nq --out export/nq --format dpr --step 5000  # DPRQuestionEncoder/DPRContextEncoder

--format hf writes OUT/question_encoder/ and OUT/passage_encoder/ (OUT/ itself when the towers are
shared), each loadable with transformers.BertModel.from_pretrained(dir, add_pooling_layer=False)
and with sentence_transformers.SentenceTransformer(dir). --format dpr writes them as
transformers.DPRQuestionEncoder / DPRContextEncoder (needed when the model has a projection).
--workdir also takes any other model spec (HF directory, hub name, an earlier export), so a model
can be converted between layouts. The export is written to a temporary directory and renamed at
the end; `dpr-jax encode --model OUT` loads it back with the same pooling and normalisation.
"""

from __future__ import annotations

HELP = "export a run (or any model) as Hugging Face BertModel or DPR encoder directories"


def add_arguments(parser) -> None:
    from dpr_jax.commands.common import add_offline_argument

    add_offline_argument(parser)
    parser.add_argument("--workdir", "--model", dest="workdir", required=True, metavar="DIR",
                        help="training run directory, or any model spec (HF directory, hub name, export)")
    parser.add_argument("--out", required=True, help="directory to create")
    parser.add_argument("--step", type=int, help="checkpoint step of a run directory (default: latest)")
    parser.add_argument("--format", choices=("hf", "dpr"), default="hf",
                        help="hf: BertModel + sentence-transformers files; dpr: DPRQuestionEncoder/DPRContextEncoder")
    parser.add_argument("--max-length", type=int,
                        help="hf: max_seq_length written for sentence-transformers (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out directory (never the source model, a folder "
                             "holding it, or one inside it)")


def run(args) -> int:
    import sys

    from dpr_jax import storage
    from dpr_jax.errors import DprJaxError
    from dpr_jax.models import run_dir
    from dpr_jax.models.export import check_destination, export_model
    from dpr_jax.models.loading import load_model
    from dpr_jax.storage import check_output_dir

    check_output_dir(args.out)
    check_destination(args.out, args.workdir, overwrite=args.overwrite)  # before the model is loaded
    spec = storage.as_path(args.workdir)
    spec = spec if storage.is_remote(spec) else spec.expanduser()
    provenance = {}
    if run_dir.has_checkpoint_dir(spec):  # a run directory: record which checkpoint was exported
        provenance["checkpoint_step"] = run_dir.resolve_step(spec, args.step)
    elif args.step is not None:
        raise DprJaxError("--step applies only to a training run directory")
    loaded = load_model(args.workdir, step=args.step)
    result = export_model(loaded, args.out, args.format, overwrite=args.overwrite, provenance=provenance,
                           max_seq_length=args.max_length)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    where = ", ".join(f"{side}: {d}" for side, d in result.tower_dirs.items())
    step = f" (step {provenance['checkpoint_step']})" if provenance else ""
    print(f"exported {args.workdir}{step} as {args.format} -> {where}", file=sys.stderr)
    return 0
