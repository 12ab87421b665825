"""Every ``dpr-jax ...`` command the README and the launchers document is one that can work.

Each documented command line is parsed by the real ``dpr-jax`` parser; every path it names must be
a local path or a URL that :func:`dpr_jax.storage.as_path` accepts (never ``gs:/...``); a ``train``
command's config must load with its overrides and name its training data (``configs/nq.py``
requires ``data.train``: a documented NQ command without it fails at once). Placeholders such as
``BUCKET`` or ``$I/$N`` stay as they are: what is checked is the shape of the command, not the
existence of the user's data.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dpr_jax import storage
from dpr_jax.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("README.md", "launch/README.md", "launch/tpu_pod.sh", "launch/multinode_gpu.sh", "launch/local.sh",
           "launch/slurm_gpu.sbatch")
# argparse destinations that hold paths (or model specs, which may be paths)
PATH_ARGS = ("workdir", "config", "passages", "questions", "qrels", "train", "model", "index", "out", "run",
             "dense", "sparse", "index_dir", "squad", "file")
CONFIG_PATH_KEYS = ("data.dir", "data.train", "data.squad_file", "eval.questions", "eval.passages", "model.name",
                    "model.tokenizer")


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(source, argv)`` of each ``dpr-jax SUBCOMMAND ...`` line (continuation lines joined)."""
    found = []
    pattern = re.compile(r"(?<![\w/-])dpr-jax ((?:%s)\b.*)" % "|".join(COMMANDS))
    for source in SOURCES:
        text = re.sub(r"\\\n\s*(?:#\s*)?", " ", (REPO / source).read_text(encoding="utf-8"))  # comments too
        for line in text.splitlines():
            m = pattern.search(line)
            if not m or "`" in m.group(1) or "..." in m.group(1):  # named in prose or usage text
                continue
            command = m.group(1).split(" #")[0].strip().rstrip("'")
            found.append((source, shlex.split(command, comments=False)))
    return found


COMMAND_LINES = documented_commands()


def test_the_documents_have_commands_to_check():
    sources = {s for s, _ in COMMAND_LINES}
    assert {"README.md", "launch/README.md", "launch/tpu_pod.sh"} <= sources
    assert any(argv[0] == "train" and any(a.startswith("gs://") for a in argv) for _, argv in COMMAND_LINES)


@pytest.mark.parametrize("source,argv", COMMAND_LINES, ids=[f"{s}:{' '.join(a)[:60]}" for s, a in COMMAND_LINES])
def test_documented_command_parses_and_names_usable_paths(source, argv):
    args, extra = build_parser().parse_known_args(argv)
    assert not extra or getattr(args._module, "ACCEPTS_EXTRA", False), f"unknown arguments {extra}"
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            storage.as_path(value)  # raises for a URL that lost a slash
    local = REPO / getattr(args, "config", "")
    if argv[0] == "train" and (local.is_file() or not args.config.endswith(".py")):  # not the user's own file
        from dpr_jax.train.config import load_config

        config = load_config(local if local.is_file() else args.config, extra)  # a path, or a shipped name
        for key in CONFIG_PATH_KEYS:
            section, leaf = key.split(".")
            if config[section][leaf]:
                storage.as_path(config[section][leaf])
        assert config.data.train or config.data.dir or config.data.prepare_squad, \
            f"{source}: `dpr-jax {' '.join(argv)}` names no training data (--config.data.train=...)"
