"""Train a DPR dual encoder with global in-batch negatives over every device and host.

  dpr-jax train --config tiny --workdir runs/tiny
  dpr-jax train --config squad --workdir runs/squad --config.data.dir=data/squad
  dpr-jax train --config nq --workdir runs/nq --config.data.train=biencoder-nq-train.json

--config is the name of a shipped config (tiny, squad, nq: the files in the checkout's configs/,
installed with the package) or a Python file whose get_config() returns an ml_collections.ConfigDict
(see dpr_jax/train/config.py for every key); any key can be overridden with --config.KEY=VALUE, e.g.
--config.train.batch_size=64 --config.train.gradcache=true.

The workdir receives config.json, model.json, the tokenizer, checkpoints/ and metrics.jsonl; it is
a model spec for encode/search (`--model WORKDIR`). Rerunning the same command on an existing
workdir resumes from its last checkpoint, exactly. SIGTERM saves the current step and exits 0.
"""

from __future__ import annotations

import sys

HELP = "train a dual encoder (global in-batch negatives, sharded, resumable)"
ACCEPTS_EXTRA = True  # --config.KEY=VALUE overrides arrive in args.extra


def add_arguments(parser) -> None:
    from dpr_jax.distributed import add_distributed_arguments

    parser.add_argument("--config", required=True, metavar="NAME|FILE",
                        help="a shipped config (tiny, squad, nq) or a config file (my_config.py)")
    parser.add_argument("--workdir", required=True, metavar="DIR", help="run directory (created or resumed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from dpr_jax.commands.common import add_offline_argument

    add_offline_argument(parser)
    add_distributed_arguments(parser)


def run(args) -> int:
    from dpr_jax.distributed import initialize_from_args
    from dpr_jax.storage import check_output_dir

    check_output_dir(args.workdir, "--workdir")

    initialize_from_args(args)  # before JAX touches a device
    from dpr_jax.api import train_model

    result = train_model(args.config, args.workdir, overrides=args.extra, progress=not args.no_progress)
    from dpr_jax.distributed import is_main_process

    if is_main_process():
        state = "stopped (SIGTERM) at" if result.preempted else "finished at"
        loss = result.last_log.get("loss")
        print(f"{state} step {result.final_step}/{result.total_steps}"
              + (f", loss {loss:.4f}" if loss is not None else "") + f"; run directory {result.workdir}",
              file=sys.stderr)
    return 0
