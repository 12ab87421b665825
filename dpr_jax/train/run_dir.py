"""A training run directory (the ``--workdir``): what is in it and how to load a model back from it.

Layout::

    DIR/config.json      the resolved training config (all keys, overrides applied)
    DIR/model.json       the architecture: BERT config, encoder config (pooling, normalize,
                         projection, dtype), shared towers, where the initial weights came from
    DIR/tokenizer/       the tokenizer (Hugging Face files)
    DIR/checkpoints/N/   orbax checkpoints of step N (params, opt_state, meta)
    DIR/metrics.jsonl    one JSON line per logged step (and per evaluation)
    DIR/data/            the SQuAD split, when the run prepared it itself

:func:`load_run_model` rebuilds the dual encoder from ``model.json`` and fills in the parameters of
the latest (or a given) checkpoint, so ``dpr-jax encode --model DIR`` works on a run in progress.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dpr_jax.errors import DprJaxError
from dpr_jax.io_utils import write_json

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"


def is_run_dir(path) -> bool:
    """True for a dpr-jax training directory (it has ``model.json`` and ``checkpoints/``)."""
    path = Path(path)
    return (path / MODEL_FILE).is_file() and (path / CHECKPOINT_DIR).is_dir()


def write_model_description(workdir, loaded) -> None:
    """Write ``model.json`` and ``tokenizer/`` for a :class:`~dpr_jax.models.loading.LoadedModel`."""
    workdir = Path(workdir)
    write_json(workdir / MODEL_FILE, {
        "format": "dpr-jax-run",
        "bert_config": loaded.bert_config.to_hf(),
        "encoder_config": loaded.encoder_config.to_dict(),
        "shared": bool(loaded.shared),
        "initialized_from": loaded.source,
    })
    tokenizer_dir = workdir / TOKENIZER_DIR
    if not (tokenizer_dir / "tokenizer_config.json").exists():
        tmp = workdir / (TOKENIZER_DIR + ".tmp")
        loaded.tokenizer.save(tmp)
        tmp.replace(tokenizer_dir)


def read_model_description(workdir) -> dict:
    """``{"bert_config": BertConfig, "encoder_config": EncoderConfig, "shared": bool, ...}``."""
    from dpr_jax.models.config import BertConfig, EncoderConfig

    path = Path(workdir) / MODEL_FILE
    try:
        desc = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        return dict(desc, bert_config=BertConfig.from_hf(desc["bert_config"]),
                    encoder_config=EncoderConfig(**{k: v for k, v in desc["encoder_config"].items() if k in fields}),
                    shared=bool(desc["shared"]))
    except FileNotFoundError:
        raise DprJaxError(f"{workdir}: not a dpr-jax run directory (no {MODEL_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DprJaxError(f"{path}: unreadable model description ({type(e).__name__}: {e})") from None


def checkpoint_steps(workdir) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    from dpr_jax.train.checkpoint import Checkpointer

    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return Checkpointer(directory, read_only=True).steps()


def load_run_model(path, step: int | None = None):
    """The dual encoder of run ``path`` with the parameters of checkpoint ``step`` (latest if None)."""
    import jax
    from flax import nnx

    from dpr_jax.models.dual_encoder import DualEncoder
    from dpr_jax.models.loading import LoadedModel
    from dpr_jax.models.tokenizer import TextTokenizer
    from dpr_jax.train.checkpoint import Checkpointer

    path = Path(path)
    desc = read_model_description(path)
    # the architecture without initialising it (shapes only); the checkpoint supplies every parameter
    abstract = nnx.eval_shape(lambda: DualEncoder(desc["bert_config"], desc["encoder_config"], shared=desc["shared"],
                                                  rngs=nnx.Rngs(0)))
    graphdef, params_state, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise DprJaxError(f"{path}: the model has state besides its parameters, which checkpoints do not hold")
    checkpointer = Checkpointer(path / CHECKPOINT_DIR, read_only=True)
    try:
        params, _ = checkpointer.restore_params(step, nnx.to_pure_dict(params_state),
                                                jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    finally:
        checkpointer.close()
    nnx.replace_by_pure_dict(params_state, params)
    model = nnx.merge(graphdef, params_state, rest)
    tokenizer = TextTokenizer.from_dir(path / TOKENIZER_DIR)
    return LoadedModel(model, tokenizer, desc["bert_config"], desc["encoder_config"], desc["shared"], str(path))
