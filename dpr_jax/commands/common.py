"""Argument pieces several subcommands share, so every command parses and loads the same way.

Each ``dpr-jax`` command that takes a model (``encode``, ``search``, ``mine``, ``plot embeddings``)
adds :func:`add_model_arguments` and loads with :func:`load_model_from_args`: the same ``--model``
spec forms (Hugging Face directory or hub name, dpr-jax run directory, export), ``--step`` for a
run's checkpoint, ``--pooling`` and ``--compute-dtype`` overrides, and the batch/length options.
Counts such as ``--k`` use :func:`positive_int`, so ``--k 0`` or ``--k -1`` stop at parsing
instead of giving an empty (or silently shortened) result after the work.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (a count of hits, passages, sequences, tokens)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_offline_argument(parser) -> None:
    """--offline: never contact the Hugging Face Hub (cli.main sets HF_HUB_OFFLINE=1 for the run)."""
    parser.add_argument("--offline", action="store_true",
                        help="never contact the Hugging Face Hub: a model that is not local is an error "
                             "(the same as HF_HUB_OFFLINE=1)")


def apply_offline(args) -> None:
    """Honour ``--offline`` for the whole process, Hugging Face libraries included."""
    import os

    if getattr(args, "offline", False):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def add_model_arguments(parser, default_max_length: int, *, required: bool = True,
                        model_help: str | None = None) -> None:
    """--model and the options that say how to load and run it."""
    parser.add_argument("--model", required=required,
                        help=model_help or "Hugging Face directory or hub name, a dpr-jax run directory, or an export")
    add_offline_argument(parser)
    parser.add_argument("--step", type=int, help="checkpoint step of a run directory (default: latest)")
    parser.add_argument("--pooling", choices=["cls", "mean"], help="override the model's pooling")
    parser.add_argument("--compute-dtype", choices=["float32", "bfloat16"], help="activation dtype")
    parser.add_argument("--passage-segment-ids", choices=["pair", "dpr-zeros"],
                        help="override the passages' segment ids: pair (title 0, text 1) or dpr-zeros (all 0, as "
                             "DPR); default: as the model says (DPR checkpoints dpr-zeros, others pair)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sequences per batch (split over local devices)")
    parser.add_argument("--max-length", type=positive_int, default=default_max_length, help="max tokens per sequence")


def load_model_from_args(args):
    """The :class:`~dpr_jax.models.loading.LoadedModel` that the model arguments describe."""
    from dpr_jax.models.loading import load_model

    return load_model(args.model, pooling=args.pooling, dtype=args.compute_dtype, step=args.step,
                      passage_segment_ids=args.passage_segment_ids)


def api_model_from_args(args, side: str):
    """The :class:`dpr_jax.api.Model` the model arguments describe; ``--max-length`` is ``side``'s
    (``"question"`` for search, ``"passage"`` for encode)."""
    from dpr_jax.api import Model

    return Model(load_model_from_args(args), batch_size=args.batch_size, **{f"{side}_max_length": args.max_length})
