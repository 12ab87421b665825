"""Training configurations: Python files with ``get_config()`` and ``--config.key=value`` overrides.

As in big_vision, a config is a Python file whose ``get_config()`` returns an
``ml_collections.ConfigDict``; the shipped ones (``configs/tiny.py``, ``squad.py``, ``nq.py``) start
from :func:`base_config`, which holds every key with its default and its meaning. ``--config`` takes a
file or the name of a shipped config (``--config squad``), from a checkout or any installed copy. Any key can be
overridden on the command line, ``--config.train.learning_rate=1e-5`` or ``--config.train.batch_size 64``;
the value is parsed to the type of the key's default (``true``/``false`` for booleans, a Python literal
such as ``(1, 5, 20)`` for tuples). Unknown keys, in a file or an override, are errors naming the key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import re
from pathlib import Path
from typing import Sequence

import ml_collections

from dpr_jax import storage
from dpr_jax.errors import DprJaxError
from dpr_jax.train.loss import KINDS as LOSS_KINDS

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a shipped config's name: squad, tiny, nq


def base_config() -> ml_collections.ConfigDict:
    """Every training option with its default (DPR's NQ recipe where one applies)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # data order, negatives sampling and dropout masks derive from it

    c.model = ml_collections.ConfigDict()
    c.model.name = "bert-base-uncased"  # HF directory, hub name or dpr-jax run directory
    c.model.init = "pretrained"  # "pretrained" (weights from model.name) or "random" (model.bert below)
    c.model.tokenizer = ""  # init=random: where the tokenizer (vocabulary) comes from
    c.model.pooling = "auto"  # "auto" (as the model describes itself), "cls" or "mean"
    c.model.normalize = "auto"  # "auto", "true" or "false": L2-normalise the vectors
    c.model.projection_dim = -1  # -1: as the model says; 0: none; >0: a linear projection to this size
    c.model.shared = False  # one encoder for questions and passages (DPR: separate towers)
    # passage segment ids: "auto" (as the model says: DPR checkpoints "dpr-zeros", others "pair"),
    # "pair" (0 for the title, 1 for the text) or "dpr-zeros" (all zeros, as facebookresearch/DPR)
    c.model.passage_segment_ids = "auto"
    c.model.dtype = "float32"  # compute dtype, "float32" or "bfloat16" (parameters stay float32)
    c.model.dropout = True  # apply the model's dropout during training
    c.model.bert = ml_collections.ConfigDict()  # architecture for init=random
    c.model.bert.vocab_size = 0  # 0: the tokenizer's vocabulary size
    c.model.bert.hidden_size = 64
    c.model.bert.num_hidden_layers = 2
    c.model.bert.num_attention_heads = 2
    c.model.bert.intermediate_size = 256
    c.model.bert.max_position_embeddings = 512
    c.model.bert.hidden_dropout_prob = 0.1
    c.model.bert.attention_probs_dropout_prob = 0.1

    c.data = ml_collections.ConfigDict()
    c.data.dir = ""  # a directory from `dpr-jax data squad` (train.jsonl, passages.jsonl, eval.jsonl)
    c.data.train = ""  # training records (DPR retriever JSON/JSONL); default DIR/train.jsonl
    c.data.prepare_squad = False  # no data given: prepare the SQuAD split into WORKDIR/data first
    c.data.squad_file = ""  # SQuAD v1.1 JSON for prepare_squad (default: the shared SQuAD dev set)
    c.data.on_error = "fail"  # bad training record: "fail" (stop at it) or "skip" (count and report)
    c.data.question_max_length = 256
    c.data.passage_max_length = 256
    c.data.hard_negatives = 1  # per question, from hard_negative_ctxs then negative_ctxs
    c.data.random_negatives = 0  # extra per question: the first positive of a random training record
    c.data.shuffle = True
    c.data.shuffle_positives = False

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global: questions per step over all devices and hosts
    c.train.num_epochs = 40
    c.train.num_steps = 0  # >0 overrides num_epochs
    c.train.learning_rate = 2e-5
    c.train.warmup_steps = 1237
    c.train.weight_decay = 0.0
    c.train.adam_b1 = 0.9
    c.train.adam_b2 = 0.999
    c.train.adam_eps = 1e-8
    c.train.max_grad_norm = 2.0  # global-norm clipping; 0 disables
    c.train.temperature = 1.0  # score = q·p / temperature: the student's logits in every loss
    # remove a question's gold passages (every positive_ctxs id) from its in-batch negatives
    c.train.mask_false_negatives = True
    # the objective (dpr_jax/train/loss.py): "contrastive" (DPR's in-batch softmax cross-entropy), or
    # distillation from teacher scores (ctxs[].score, written by `dpr-jax mine`) over each question's own
    # group (positive + hard negatives): "kl" (KL(teacher softmax || student softmax)) or "margin_mse"
    # (Hofstaetter et al.: MSE of positive-minus-negative score margins)
    c.train.loss = "contrastive"
    c.train.contrastive_weight = 0.0  # kl/margin_mse: loss = distillation + this * contrastive (0: distillation only)
    c.train.teacher_temperature = 1.0  # teacher logits = ctxs[].score / teacher_temperature
    # Matryoshka: the objective is applied to the first d dimensions of the vectors for each d here (re-normalised
    # when the model normalises) and summed with matryoshka_weights; list the full dimension to keep training it,
    # e.g. (384, 128, 64). Empty: the full vector only
    c.train.matryoshka_dims = ()
    c.train.matryoshka_weights = ()  # one weight per matryoshka_dims entry (empty: all 1.0)
    c.train.gradcache = False
    c.train.gradcache_question_chunk = 0  # questions per chunk per device (0: all)
    c.train.gradcache_passage_chunk = 0  # passages per chunk per device (0: all)
    c.train.num_devices = 0  # 0: every device of every process
    c.train.log_every = 10
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 3
    c.train.async_checkpoints = True
    c.train.nan_at_step = -1  # testing aid: poison this step's loss with NaN

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0  # steps between retrieval evaluations (0: off); also run at the end when on
    c.eval.questions = ""  # default DIR/eval.jsonl
    c.eval.passages = ""  # default DIR/passages.jsonl
    c.eval.max_questions = 0  # 0: all
    c.eval.top_k = (1, 5, 20)
    c.eval.batch_size = 64
    c.eval.match = "string"  # DPR answer matching: "string" or "regex"
    return c


def _flatten(cfg, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _unknown_key(key: str, known) -> DprJaxError:
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return DprJaxError(f"unknown config key {key!r}{hint}")


def check_keys(config: ml_collections.ConfigDict, source: str) -> None:
    """Raise for any key that :func:`base_config` does not know (a typo in a config file)."""
    known = _flatten(base_config())
    for key in _flatten(config):
        if key not in known:
            raise DprJaxError(f"{source}: {_unknown_key(key, known)}")


def parse_value(text: str, default):
    """``text`` as the type of ``default``."""
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    if isinstance(default, (tuple, list)):
        value = ast.literal_eval(text) if text.strip().startswith(("(", "[")) else \
            tuple(ast.literal_eval(v.strip()) for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(default)(value)
    return ast.literal_eval(text)


def split_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """``["--config.a.b=1", "--config.c", "2"]`` -> ``[("a.b", "1"), ("c", "2")]``."""
    out, i, args = [], 0, list(args)
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise DprJaxError(f"unrecognized argument {arg!r} (overrides look like --config.train.batch_size=64)")
        key, sep, value = arg[len("--config."):].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise DprJaxError(f"{arg} needs a value")
            value = args[i + 1]
            i += 1
        out.append((key, value))
        i += 1
    return out


def apply_overrides(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply ``--config.key=value`` arguments to ``config`` (in place; also returned)."""
    flat = _flatten(config)
    for key, text in split_overrides(args):
        if key not in flat:
            raise _unknown_key(key, flat)
        try:
            value = parse_value(text, flat[key])
        except (ValueError, SyntaxError) as e:
            raise DprJaxError(f"--config.{key}: cannot use {text!r} ({e})") from None
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
        flat[key] = value
    return config


def shipped_config_dir() -> Path:
    """The directory of the configs that come with dpr-jax.

    Their one copy is the checkout's top-level ``configs/``, where people read and edit them;
    setup.cfg installs that directory as the package ``dpr_jax.configs`` (``package_dir``), so a
    wheel or ``pip install .`` has them at ``dpr_jax/configs/``. Run from a source tree (PYTHONPATH,
    editable install) there is no such directory and they are next to the package instead.
    """
    package = Path(__file__).resolve().parent.parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``["nq", "squad", "tiny"]``)."""
    return sorted(p.stem for p in shipped_config_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve_config(spec):
    """A ``--config`` argument as a file: a URL or an existing path, else the name of a shipped config (``squad``)."""
    text = str(spec)
    if storage.is_remote(text):
        return storage.as_path(text)  # load_config_file reads it (and says so when it is missing)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = shipped_configs()
    if _CONFIG_NAME.fullmatch(text) and not text.endswith(".py"):
        shipped = shipped_config_dir() / f"{text}.py"
        if shipped.is_file():
            return shipped
        raise DprJaxError(f"no config file {text!r} and no shipped config of that name "
                          f"(shipped: {', '.join(names) or 'none found'})")
    example = "squad" if "squad" in names else names[0] if names else ""
    hint = f"; or give a shipped config by name: {', '.join(names)} (e.g. --config {example})" if names else ""
    raise DprJaxError(f"config file {text} does not exist{hint}")


def load_config_file(path) -> ml_collections.ConfigDict:
    """Run a config file's ``get_config()`` (a local file, or a URL run from a cached local copy)."""
    path = storage.as_path(path)
    if not path.is_file():
        raise DprJaxError(f"config file {path} does not exist")
    with storage.local_copy(path) as local:
        spec = importlib.util.spec_from_file_location(f"dpr_jax_config_{path.stem}", local)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            raise DprJaxError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    if not hasattr(module, "get_config"):
        raise DprJaxError(f"{path}: no get_config() function")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise DprJaxError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


def load_config(path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A config file (or a shipped config's name) plus command-line overrides, checked against :func:`base_config`."""
    path = resolve_config(path)
    config = base_config()
    config.update(load_config_file(path))
    check_keys(config, str(path))
    apply_overrides(config, overrides)
    validate(config)
    return config


def auto_bool(value) -> bool | None:
    """An ``"auto"``/``"true"``/``"false"`` key as None/True/False (the only parser of such keys).

    Raises ``ValueError`` for anything else (``validate`` turns that into an error naming the key).
    """
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected auto, true or false, got {value!r}")


def auto_value(value):
    """An ``"auto"``-or-value key as None (auto) or the value itself."""
    return None if str(value).strip().lower() == "auto" else value


def validate(c: ml_collections.ConfigDict) -> None:
    """Reject values that cannot work, with the key in the message."""
    def need(ok: bool, key: str, why: str):
        if not ok:
            raise DprJaxError(f"config {key}: {why}")

    need(c.model.init in ("pretrained", "random"), "model.init", "must be 'pretrained' or 'random'")
    need(c.model.pooling in ("auto", "cls", "mean"), "model.pooling", "must be auto, cls or mean")
    need(c.model.passage_segment_ids in ("auto", "pair", "dpr-zeros"), "model.passage_segment_ids",
         "must be auto, pair or dpr-zeros")
    try:
        auto_bool(c.model.normalize)
    except ValueError:
        need(False, "model.normalize", "must be auto, true or false")
    need(c.model.dtype in ("float32", "bfloat16"), "model.dtype", "must be float32 or bfloat16")
    need(c.data.on_error in ("fail", "skip"), "data.on_error", "must be 'fail' or 'skip'")
    need(c.train.batch_size > 0, "train.batch_size", "must be positive")
    need(c.train.num_steps > 0 or c.train.num_epochs > 0, "train.num_epochs", "or train.num_steps must be positive")
    need(c.train.learning_rate >= 0, "train.learning_rate", "must be >= 0")
    need(c.train.temperature > 0, "train.temperature", "must be positive")
    need(c.train.loss in LOSS_KINDS, "train.loss", f"must be one of {', '.join(LOSS_KINDS)}")
    need(c.train.contrastive_weight >= 0, "train.contrastive_weight", "must be >= 0")
    need(c.train.teacher_temperature > 0, "train.teacher_temperature", "must be positive")
    dims, weights = tuple(c.train.matryoshka_dims), tuple(c.train.matryoshka_weights)
    need(all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims) and len(set(dims)) == len(dims),
         "train.matryoshka_dims", "must be distinct positive integers")
    need(not weights or len(weights) == len(dims), "train.matryoshka_weights",
         f"needs one weight per matryoshka_dims entry ({len(dims)}), got {len(weights)}")
    need(all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
         and (not weights or sum(weights) > 0), "train.matryoshka_weights", "must be numbers >= 0, not all 0")
    need(c.train.log_every > 0, "train.log_every", "must be positive")
    need(c.train.checkpoint_every > 0, "train.checkpoint_every", "must be positive")
    need(c.data.hard_negatives >= 0 and c.data.random_negatives >= 0, "data.hard_negatives",
         "negative counts must be >= 0")
    need(c.data.question_max_length > 2 and c.data.passage_max_length > 2, "data.passage_max_length",
         "lengths must be > 2")
    need(c.eval.match in ("string", "regex"), "eval.match", "must be 'string' or 'regex'")
    need(all(int(k) > 0 for k in c.eval.top_k), "eval.top_k", "must be positive integers")


def to_json(config: ml_collections.ConfigDict) -> dict:
    """A JSON-ready dict of the config."""
    return json.loads(config.to_json())


def from_json(obj: dict) -> ml_collections.ConfigDict:
    """Rebuild a config saved by :func:`to_json` (tuples come back as tuples)."""
    config = base_config()

    def fill(node, values, prefix=""):
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(node.get(k), ml_collections.ConfigDict):
                fill(node[k], v, f"{prefix}{k}.")
            else:
                node[k] = tuple(v) if isinstance(v, list) else v

    fill(config, obj)
    return config
