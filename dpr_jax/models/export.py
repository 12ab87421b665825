"""Write a dual encoder as Hugging Face model directories others can load (``dpr-jax export``).

Two layouts:

- ``"hf"``: each tower as a plain ``transformers.BertModel`` directory (``config.json``,
  ``model.safetensors`` in ``BertModel`` key names, tokenizer files) plus the sentence-transformers
  files (``modules.json``, ``1_Pooling/config.json``, ``Normalize``) so ``SentenceTransformer(dir)``
  pools and normalises as dpr-jax does. Separate towers go to ``OUT/question_encoder/`` and
  ``OUT/passage_encoder/``; shared towers to ``OUT/`` itself. dpr-jax pools outside BERT and never
  uses BERT's pooler head, but when the source checkpoint had one (bert-base-uncased,
  sentence-transformers models) it is carried untouched through loading, training and export, so
  ``BertModel.from_pretrained(dir)`` finds every key; a model that never had one (random init, DPR
  checkpoints) is loaded with ``BertModel.from_pretrained(dir, add_pooling_layer=False)``. A linear
  projection cannot be expressed in ``BertModel``: such models must use ``"dpr"``.
- ``"dpr"``: ``OUT/question_encoder/`` as ``transformers.DPRQuestionEncoder`` and
  ``OUT/passage_encoder/`` as ``DPRContextEncoder`` (keys ``question_encoder.bert_model.*`` /
  ``ctx_encoder.bert_model.*``, ``*.encode_proj.*``, ``model_type: "dpr"`` with ``projection_dim``).
  DPR pools the ``[CLS]`` state, so a mean-pooling model cannot be written this way.

Every ``config.json`` carries a ``"dpr_jax"`` block (pooling, normalize, projection_dim, the passage
segment-id convention - see :mod:`dpr_jax.models.config` - and where the weights came from) that
:func:`dpr_jax.models.loading.load_model` reads back, so ``--model OUT`` encodes exactly as the
exported model did. The export is written into a temporary directory and put in place at the end
(:func:`dpr_jax.storage.atomic_path`: renamed next to a local ``OUT``, uploaded to a ``gs://``
one), so a failed export leaves nothing under ``OUT``.

A concatenated model (:mod:`dpr_jax.models.concat`) is written as its two parts, each in ``fmt``,
into ``OUT/dense/`` and ``OUT/lexical/``, plus ``OUT/concat.json`` naming them and the weight.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from dpr_jax import storage
from dpr_jax.errors import DprJaxError
from dpr_jax.models.hf_weights import projection_state_dict, tower_state_dict

FORMATS = ("hf", "dpr")
TOWER_DIRS = {"question": "question_encoder", "passage": "passage_encoder"}
# side -> (transformers class, key prefix of its state dict)
DPR_CLASSES = {
    "question": ("DPRQuestionEncoder", "question_encoder."),
    "passage": ("DPRContextEncoder", "ctx_encoder."),
}


@dataclasses.dataclass
class ExportResult:
    """Where an export went and what a user should know about it."""

    out: Path
    format: str
    tower_dirs: dict  # side ("question"/"passage", or "shared") -> directory
    notes: list


def dpr_jax_block(loaded, side: str, provenance: dict | None = None) -> dict:
    """The ``"dpr_jax"`` block of an exported ``config.json``: what re-import needs to encode the same way."""
    enc = loaded.encoder_config
    return {
        "pooling": enc.pooling,
        "normalize": bool(enc.normalize),
        "projection_dim": int(enc.projection_dim),
        "passage_segment_ids": enc.passage_segment_ids,
        "side": side,
        "shared": bool(loaded.shared),
        "exported_from": loaded.source,
        **(provenance or {}),
    }


def check_exportable(loaded, fmt: str) -> list[str]:
    """Raise when ``loaded`` cannot be written in ``fmt``; return notes on what other tools will not see."""
    if fmt not in FORMATS:
        raise DprJaxError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    enc = loaded.encoder_config
    notes = []
    if fmt == "hf" and enc.projection_dim:
        raise DprJaxError(
            f"this model has a linear projection (projection_dim={enc.projection_dim}), which a Hugging Face "
            f"BertModel cannot hold; export it with --format dpr (DPRQuestionEncoder/DPRContextEncoder)")
    if fmt == "dpr" and enc.pooling != "cls":
        raise DprJaxError(
            f"this model uses {enc.pooling} pooling but DPR encoders pool the [CLS] state; export it with "
            f"--format hf (BertModel + sentence-transformers pooling files)")
    if fmt == "dpr" and enc.normalize:
        notes.append("the model L2-normalises its vectors; transformers' DPR encoders do not (dpr-jax restores it "
                     "from config.json; other tools must normalise pooler_output themselves)")
    if enc.passage_segment_ids == "dpr-zeros":
        notes.append("passages are encoded with all-zero segment ids, as DPR does: give the exported model "
                     "token_type_ids of zeros (a tokenizer called with (title, text) returns ones for the text)")
    if fmt == "hf" and not loaded.carried:
        notes.append("the source weights had no pooler head, so none is written: load with "
                     "BertModel.from_pretrained(dir, add_pooling_layer=False)")
    if fmt == "dpr" and loaded.shared:
        notes.append("shared towers written twice (DPR keeps a question and a context encoder); re-importing "
                     "gives two separate towers with equal weights")
    return notes


def _save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def _write_sentence_transformers_files(tower_dir: Path, loaded, max_seq_length: int) -> None:
    """``modules.json`` + ``1_Pooling`` (+ ``Normalize``) so sentence-transformers pools like dpr-jax."""
    enc = loaded.encoder_config
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if enc.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (tower_dir / "2_Normalize").mkdir()
    storage.write_json(tower_dir / "modules.json", modules)
    storage.write_json(tower_dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": loaded.bert_config.hidden_size,
        "pooling_mode_cls_token": enc.pooling == "cls",
        "pooling_mode_mean_tokens": enc.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    storage.write_json(tower_dir / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})


DEFAULT_MAX_SEQ_LENGTH = 256  # what `dpr-jax encode` and training use by default


def default_max_seq_length(loaded) -> int:
    """sentence-transformers' truncation length: dpr-jax's default 256, within BERT's position limit."""
    return min(DEFAULT_MAX_SEQ_LENGTH, loaded.bert_config.max_position_embeddings)


def write_tower(tower_dir: Path, loaded, side: str, fmt: str, *, provenance: dict | None = None,
                max_seq_length: int | None = None) -> None:
    """One tower (``side`` is "question", "passage" or "shared") as a model directory in ``fmt``."""
    tower_dir.mkdir(parents=True, exist_ok=True)
    tower = loaded.model.question if side in ("question", "shared") else loaded.model.passage
    config = loaded.bert_config.to_hf()
    if fmt == "hf":
        # BERT's pooler head, carried unchanged from the source checkpoint (BertModel expects one)
        tensors = {**tower_state_dict(tower), **loaded.carried.get("passage" if side == "passage" else "question", {})}
    else:  # transformers' DPR encoders have no pooler (BertModel(add_pooling_layer=False))
        cls_name, prefix = DPR_CLASSES["question" if side == "shared" else side]
        tensors = {**tower_state_dict(tower, prefix=prefix + "bert_model."), **projection_state_dict(tower, prefix)}
        config.update(architectures=[cls_name], model_type="dpr",
                      projection_dim=int(loaded.encoder_config.projection_dim))
    config["dpr_jax"] = dpr_jax_block(loaded, side, provenance)
    _save_safetensors(tower_dir / "model.safetensors", tensors)
    storage.write_json(tower_dir / "config.json", config)
    loaded.tokenizer.save(tower_dir)
    if fmt == "hf":
        _write_sentence_transformers_files(tower_dir, loaded, max_seq_length or default_max_seq_length(loaded))


def check_destination(out, source=None, *, overwrite: bool = False):
    """``out`` made absolute, or an error when exporting there is refused.

    An existing ``out`` is replaced only with ``overwrite``, and never when it is the source model
    itself, contains it, or lies inside it (local paths compared resolved, so symlinks and ``..``
    do not hide it): replacing ``out`` would delete the source (a run directory's checkpoints) or
    part of it.
    """
    out = storage.absolute(out)
    if not out.exists():
        return out
    if not overwrite:
        raise DprJaxError(f"{out} already exists; choose a new --out or pass --overwrite")
    if out.is_file():
        raise DprJaxError(f"{out} exists and is not a directory")
    try:  # a source that is no path ("random:...", a hub name) cannot overlap anything
        src = storage.as_path(str(source)) if source is not None else None
    except DprJaxError:
        src = None
    if src is not None and not storage.is_remote(src):
        src = src.expanduser()
    if src is not None and src.exists():
        o, s = _canonical(out), _canonical(src)
        relation = ("is" if o == s else "contains" if s.startswith(o + "/") else
                    "is inside" if o.startswith(s + "/") else None)
        if relation:
            raise DprJaxError(f"--out {out} {relation} the source model {source}; replacing it would delete "
                              f"the source (or part of it): choose an --out outside it")
    return out


def _canonical(path) -> str:
    """A path as a string that equal places share: resolved locally, without a trailing '/' for URLs."""
    return str(path).rstrip("/") if storage.is_remote(path) else str(path.resolve())


def export_model(loaded, out, fmt: str = "hf", *, overwrite: bool = False, provenance: dict | None = None,
                 max_seq_length: int | None = None) -> ExportResult:
    """Write ``loaded`` (a :class:`~dpr_jax.models.loading.LoadedModel`) to ``out`` in ``fmt`` ("hf" or "dpr").

    ``provenance`` (e.g. the checkpoint step) is added to each ``config.json``'s ``dpr_jax`` block;
    ``max_seq_length`` goes to ``sentence_bert_config.json`` (default 256, at most BERT's position limit).
    An existing ``out`` is an error unless ``overwrite``, and always when it overlaps the source
    (:func:`check_destination`).
    """
    from dpr_jax.models.concat import PARTS, write_concat
    from dpr_jax.models.loading import LoadedConcat

    parts = {part: getattr(loaded, part) for part in PARTS} if isinstance(loaded, LoadedConcat) else None
    if parts:
        notes = [f"{part}: {note}" for part, sub in parts.items() for note in check_exportable(sub, fmt)]
    else:
        notes = check_exportable(loaded, fmt)
    limit = min(sub.bert_config.max_position_embeddings for sub in (parts or {"": loaded}).values())
    if max_seq_length is not None and not 0 < max_seq_length <= limit:
        raise DprJaxError(f"max sequence length must be in 1..{limit} (the model's position limit), "
                          f"not {max_seq_length}")
    out = check_destination(out, loaded.source, overwrite=overwrite)
    storage.make_dirs(out.parent)
    with storage.atomic_path(out) as tmp:
        if parts:
            sides = {}
            for part, sub in parts.items():
                written = _write_model(sub, tmp / part, fmt, provenance, max_seq_length)
                sides.update({f"{part} {side}": d for side, d in written.items()})
            write_concat(tmp, *PARTS, loaded.weight, exported_from=loaded.source, **(provenance or {}))
        else:
            sides = _write_model(loaded, tmp, fmt, provenance, max_seq_length)
        _usual_permissions(tmp)
    tower_dirs = {side: out if d == tmp else out / str(d.relative_to(tmp)) for side, d in sides.items()}
    return ExportResult(out, fmt, tower_dirs, notes)


def _write_model(loaded, root: Path, fmt: str, provenance, max_seq_length) -> dict:
    """Every tower of one dual encoder under ``root``; returns side -> directory."""
    if fmt == "hf" and loaded.shared:
        sides = {"shared": root}
    else:
        sides = {side: root / name for side, name in TOWER_DIRS.items()}
    for side, tower_dir in sides.items():
        write_tower(tower_dir, loaded, side, fmt, provenance=provenance, max_seq_length=max_seq_length)
    return sides


def _usual_permissions(root: Path) -> None:
    """umask-derived modes (safetensors creates owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
