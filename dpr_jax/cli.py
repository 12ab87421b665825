"""The ``dpr-jax`` command: a thin layer over the library, one module per subcommand.

Each module in :mod:`dpr_jax.commands` defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports (JAX, torch) happen inside ``run`` so ``dpr-jax --help`` is
instant. A :class:`~dpr_jax.errors.DprJaxError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module in dpr_jax.commands
COMMANDS = {
    "quickstart": "quickstart",
    "data": "data",
    "encode": "encode",
    "search": "search",
    "index": "index",
    "bm25": "bm25",
    "hybrid": "hybrid",
    "evaluate": "evaluate",
    "train": "train",
    "mine": "mine",
    "concat": "concat",
    "export": "export",
    "plot": "plot",
}


def _available_commands():
    for name, module in COMMANDS.items():
        try:
            yield name, importlib.import_module(f"dpr_jax.commands.{module}")
        except ModuleNotFoundError as e:  # a command whose module is not part of this build
            if e.name != f"dpr_jax.commands.{module}":
                raise


def build_parser() -> argparse.ArgumentParser:
    from dpr_jax import __version__

    parser = argparse.ArgumentParser(
        prog="dpr-jax", description="Dense Passage Retrieval in JAX/Flax: train, encode, search, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"dpr-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk between runs (set JAX_COMPILATION_CACHE_DIR="" to turn off).

    Every stage of a pipeline (encode, search, train, encode again) compiles the same BERT graphs;
    with the cache only the first run pays for it. Must happen before JAX initialises.
    """
    import os
    from pathlib import Path

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(base / "dpr-jax" / "xla")
    if "jax" in sys.modules and os.environ["JAX_COMPILATION_CACHE_DIR"]:  # imported already: tell it directly
        sys.modules["jax"].config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def main(argv: list[str] | None = None) -> int:
    import os

    from dpr_jax.errors import DprJaxError

    _enable_compilation_cache()
    # transformers advises, at import, that without PyTorch "models won't be available": dpr-jax only
    # takes tokenizers from it, and a JAX install has no torch by design (set the variable to 0 to see it)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args._module, "ACCEPTS_EXTRA", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    from dpr_jax.commands.common import apply_offline

    apply_offline(args)
    try:
        return int(args._module.run(args) or 0)
    except DprJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
