"""A training run directory (the ``--workdir``) as a model format: its layout and its reading.

Layout::

    DIR/config.json           the resolved training config (all keys, overrides applied)
    DIR/model.json            the architecture: BERT config, encoder config (pooling, normalize,
                              projection, dtype), shared towers, where the initial weights came from
    DIR/tokenizer/            the tokenizer (Hugging Face files)
    DIR/carried.safetensors   tensors of the initial weights that are not trained but that an export
                              gives back (BERT's pooler head), keys "question/NAME", "passage/NAME";
                              absent when the initial weights had none
    DIR/checkpoints/N/        orbax checkpoints of step N (params, opt_state, meta)
    DIR/metrics.jsonl         one JSON line per logged step (and per evaluation): strict JSON, a
                              non-finite number (NaN, inf) is written as null; a training row's
                              loss/accuracy/grad_norm are means over its ``steps_in_window`` steps
                              (fewer than log_every after a resume or at the end)
    DIR/skipped_records.txt   bad training records skipped with data.on_error="skip", one per line
    DIR/data/                 the SQuAD split, when the run prepared it itself
    DIR/data-index/           the line index of the training file (and a JSON-lines copy of a JSON
                              array or .gz file), built once by process 0 and read by every host

This module is the only one that names these files. The trainer writes them (through the helpers
here), :func:`dpr_jax.models.loading.load_model` reads a run back as a model, ``export`` and
``plot training`` read checkpoints and metrics. It sits in ``models/`` because a run directory is
one of the formats a model comes in, next to Hugging Face directories and exports.
"""

from __future__ import annotations

import dataclasses
import json
import math

from dpr_jax import storage
from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.models.config import BertConfig, EncoderConfig

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
CARRIED_FILE = "carried.safetensors"
METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped_records.txt"
DATA_DIR = "data"
DATA_INDEX_DIR = "data-index"


def is_run_dir(path) -> bool:
    """True for a dpr-jax training directory (it has ``model.json`` and ``checkpoints/``)."""
    path = storage.as_path(path)
    return (path / MODEL_FILE).is_file() and has_checkpoint_dir(path)


def has_checkpoint_dir(path) -> bool:
    """True when ``path`` has a ``checkpoints/`` directory (a run, possibly with no step saved yet)."""
    return (storage.as_path(path) / CHECKPOINT_DIR).is_dir()


def data_index_dir(workdir):
    """Where the training file's line index lives (:mod:`dpr_jax.data.record_index`)."""
    return storage.as_path(workdir) / DATA_INDEX_DIR


def checkpoint_dir(workdir):
    return storage.as_path(workdir) / CHECKPOINT_DIR


def tokenizer_dir(workdir):
    return storage.as_path(workdir) / TOKENIZER_DIR


def data_dir(workdir):
    """Where a run that prepares its own SQuAD split puts it."""
    return storage.as_path(workdir) / DATA_DIR


# ---------------------------------------------------------------------------------------------
# model description


def write_config(workdir, config_json: dict) -> None:
    """Write ``config.json`` (the resolved training config as JSON)."""
    storage.write_json(storage.as_path(workdir) / CONFIG_FILE, config_json)


def write_model_description(workdir, loaded) -> None:
    """Write ``model.json`` and ``tokenizer/`` for a :class:`~dpr_jax.models.loading.LoadedModel`."""
    workdir = storage.as_path(workdir)
    storage.write_json(workdir / MODEL_FILE, {
        "format": "dpr-jax-run",
        "bert_config": loaded.bert_config.to_hf(),
        "encoder_config": loaded.encoder_config.to_dict(),
        "shared": bool(loaded.shared),
        "initialized_from": loaded.source,
    })
    target = tokenizer_dir(workdir)
    if not (target / "tokenizer_config.json").exists():
        with storage.atomic_path(target, last="tokenizer_config.json") as tmp:
            loaded.tokenizer.save(tmp)
    write_carried(workdir, loaded.carried)


def load_tokenizer(workdir):
    """The run's :class:`~dpr_jax.models.tokenizer.TextTokenizer` (a cached local copy for a URL)."""
    from dpr_jax.models.tokenizer import TextTokenizer

    with storage.local_copy(tokenizer_dir(workdir)) as local:
        return TextTokenizer.from_dir(local)


def write_carried(workdir, carried: dict) -> None:
    """``carried.safetensors`` from ``{side: {hf name: array}}`` (nothing written when empty)."""
    if not carried:
        return
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {f"{side}/{name}": np.ascontiguousarray(value, dtype=np.float32)
               for side, named in carried.items() for name, value in named.items()}
    with storage.atomic_path(storage.as_path(workdir) / CARRIED_FILE) as tmp:
        save_file(tensors, str(tmp))


def read_carried(workdir) -> dict:
    """``{side: {hf name: array}}`` of ``carried.safetensors``, or ``{}`` when the run has none."""
    path = storage.as_path(workdir) / CARRIED_FILE
    if not path.is_file():
        return {}
    from safetensors.numpy import load

    try:
        tensors = load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise DprJaxError(f"{path}: unreadable ({e})") from None
    carried: dict = {}
    for key, value in tensors.items():
        side, _, name = key.partition("/")
        carried.setdefault(side, {})[name] = value
    return carried


def read_model_description(workdir) -> dict:
    """``{"bert_config": BertConfig, "encoder_config": EncoderConfig, "shared": bool, ...}``."""
    path = storage.as_path(workdir) / MODEL_FILE
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        return dict(desc, bert_config=BertConfig.from_hf(desc["bert_config"]),
                    encoder_config=EncoderConfig(**{k: v for k, v in desc["encoder_config"].items() if k in fields}),
                    shared=bool(desc["shared"]))
    except FileNotFoundError:
        raise DprJaxError(f"{workdir}: not a dpr-jax run directory (no {MODEL_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DprJaxError(f"{path}: unreadable model description ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_steps(workdir) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    from dpr_jax.checkpoint import Checkpointer

    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return []
    checkpointer = Checkpointer(directory, read_only=True)
    try:
        return checkpointer.steps()
    finally:
        checkpointer.close()


def resolve_step(workdir, step: int | None) -> int:
    """``step`` if the run has a checkpoint of it, else the latest when ``step`` is None; errors otherwise."""
    from dpr_jax.checkpoint import pick_step

    return pick_step(checkpoint_dir(workdir), checkpoint_steps(workdir), step)


# ---------------------------------------------------------------------------------------------
# metrics and skipped records


def metrics_path(workdir):
    """``workdir/metrics.jsonl`` (or ``workdir`` itself when it is the file)."""
    path = storage.as_path(workdir)
    return path if path.is_file() else path / METRICS_FILE


def read_metrics(path, *, strict: bool = True) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a run directory or the file itself), in file order.

    A last line cut short (a run killed mid-write) is ignored. Any other unreadable line is an
    :class:`InputError` naming it; with ``strict=False`` (the trainer trimming its own log on
    resume) such lines are dropped instead. A missing file gives no rows.
    """
    path = metrics_path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise InputError(path, "expected a JSON object", line=number)
            if not isinstance(row.get("step"), (int, float)):
                raise InputError(path, "missing or non-numeric", line=number, field="step")
        except json.JSONDecodeError as e:
            if number == len(lines) or not strict:
                continue
            raise InputError(path, f"invalid JSON: {e.msg}", line=number) from None
        except InputError:
            if not strict:
                continue
            raise
        rows.append(row)
    return rows


def truncate_metrics(workdir, last_step: int) -> None:
    """Drop the rows logged after ``last_step`` (a resumed run logs those steps again)."""
    path = storage.as_path(workdir) / METRICS_FILE
    if not path.exists():
        return
    rows = read_metrics(path, strict=False)
    kept = [row for row in rows if row["step"] <= last_step]
    if len(kept) == len(rows) and storage.is_remote(path):
        return  # nothing to drop: spare an upload
    with storage.atomic_open(path) as f:
        f.writelines(_metrics_line(row) for row in kept)


def append_metrics(workdir, rows: list[dict]) -> None:
    """Append rows to ``metrics.jsonl`` (for a URL one read-modify-write: callers batch rows)."""
    if rows:
        storage.append_text(storage.as_path(workdir) / METRICS_FILE, "".join(_metrics_line(r) for r in rows))


def _metrics_line(row: dict) -> str:
    """One row as strict JSON (``Infinity``/``NaN`` are not JSON; other tools reject them): non-finite -> null."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    return json.dumps(clean, allow_nan=False) + "\n"


def write_skipped_records(workdir, problems):
    """List the skipped training records (``file:line: reason``, one per line); returns the file."""
    path = storage.as_path(workdir) / SKIPPED_FILE
    with storage.atomic_open(path) as f:
        f.writelines(f"{p}\n" for p in problems)
    return path
