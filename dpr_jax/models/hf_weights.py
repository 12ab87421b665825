"""Hugging Face BERT weights in and out of the NNX towers.

Reads ``model.safetensors`` or ``pytorch_model.bin`` (``torch.load(weights_only=True)``). Accepts keys
with or without a ``bert.`` prefix, and the DPR layouts (``question_encoder.bert_model.*`` /
``ctx_encoder.bert_model.*`` with ``encode_proj``). Anything missing or unexpected is reported in one
error listing every key. Writing goes the other way, in ``transformers.BertModel`` (or DPR) key names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from flax import nnx

from dpr_jax.errors import DprJaxError

# keys a checkpoint may carry that no tower uses (pooler head, buffers, pre-training heads)
_IGNORED = re.compile(
    r"^(pooler\.|embeddings\.position_ids$|cls\.|.*\.num_batches_tracked$|lm_head\.|qa_outputs\.|classifier\.)"
)
_LAYER_PARTS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_EMBED_PARTS = {
    "embeddings.word_embeddings": ("embeddings", "word"),
    "embeddings.position_embeddings": ("embeddings", "position"),
    "embeddings.token_type_embeddings": ("embeddings", "token_type"),
    "embeddings.LayerNorm": ("embeddings", "norm"),
}
_LEAF = {"weight": None, "gamma": "scale", "beta": "bias", "bias": "bias"}


def read_state_dict(model_dir: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a Hugging Face model directory as float32 NumPy arrays."""
    model_dir = Path(model_dir)
    st = model_dir / "model.safetensors"
    pt = model_dir / "pytorch_model.bin"
    if st.exists():
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(st))
        except Exception as e:
            raise DprJaxError(f"{st}: cannot read safetensors file: {e}") from e
    elif pt.exists():
        try:
            import torch
        except ImportError as e:
            raise DprJaxError(f"{pt}: reading pytorch_model.bin needs torch (pip install torch)") from e
        state = torch.load(str(pt), map_location="cpu", weights_only=True)
        tensors = {k: v.float().numpy() for k, v in state.items()}
    else:
        raise DprJaxError(f"{model_dir}: no model.safetensors or pytorch_model.bin")
    return {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}


def strip_prefix(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Normalise key names to bare ``BertModel`` names; returns (bert tensors, DPR projection or None).

    The projection is returned as a dict {"weight", "bias"} when the checkpoint has ``encode_proj``.
    """
    out, proj = {}, {}
    for key, value in state.items():
        k = key
        for prefix in ("question_encoder.", "ctx_encoder.", "bert_model.", "bert.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("encode_proj."):
            proj[k.split(".", 1)[1]] = value
            continue
        out[k] = value
    return out, (proj or None)


def _target(key: str):
    """Map a bare HF key to (path tuple in a Tower's bert, transpose?) or None when not a BERT weight."""
    head, _, leaf = key.rpartition(".")
    if leaf not in _LEAF:
        return None
    for hf, ours in _EMBED_PARTS.items():
        if head == hf:
            is_norm = hf.endswith("LayerNorm")
            name = (_LEAF[leaf] or "scale") if is_norm else "embedding"
            return ours + (name,), False
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", head)
    if m and m.group(2) in _LAYER_PARTS:
        part = _LAYER_PARTS[m.group(2)]
        if part.endswith("norm"):
            return ("layers", int(m.group(1)), part, _LEAF[leaf] or "scale"), False
        if leaf == "weight":
            return ("layers", int(m.group(1)), part, "kernel"), True
        return ("layers", int(m.group(1)), part, "bias"), False
    return None


def pooler_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """BERT's pooler head (``pooler.dense.weight/bias``, bare names) of a state dict, or None.

    No tower computes with it (pooling happens outside BERT), but ``BertModel`` expects it; dpr-jax
    carries it unchanged from the source checkpoint to an export.
    """
    bert_state, _ = strip_prefix(state)
    pooler = {k: v for k, v in bert_state.items() if k in ("pooler.dense.weight", "pooler.dense.bias")}
    return pooler if len(pooler) == 2 else None


def load_tower_weights(tower, state: dict[str, np.ndarray], source: str) -> None:
    """Copy a Hugging Face state dict into an NNX ``Tower`` in place, checking every key and shape."""
    bert_state, proj = strip_prefix(state)
    params = nnx.state(tower.bert, nnx.Param)
    flat = dict(nnx.to_flat_state(params))
    assigned, unexpected, bad_shape = set(), [], []
    for key, value in bert_state.items():
        target = _target(key)
        if target is None:
            if not _IGNORED.match(key):
                unexpected.append(key)
            continue
        path, transpose = target
        if path not in flat:
            unexpected.append(key)
            continue
        value = value.T if transpose else value
        if value.shape != flat[path].get_value().shape:
            bad_shape.append(f"{key} {value.shape} != {flat[path].get_value().shape}")
            continue
        flat[path].set_value(value)
        assigned.add(path)
    missing = [".".join(map(str, p)) for p in flat if p not in assigned]
    if tower.projection is not None:
        if proj is None:
            missing.append("encode_proj.weight/bias (projection_dim > 0 but the checkpoint has no projection)")
        else:
            tower.projection.kernel.set_value(proj["weight"].T)
            tower.projection.bias.set_value(proj["bias"])
    elif proj is not None:
        unexpected.append("encode_proj.* (set projection_dim to use it)")
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(sorted(unexpected))}")
    if bad_shape:
        problems.append(f"shape mismatch: {', '.join(bad_shape)}")
    if problems:
        raise DprJaxError(f"{source}: weights do not fit the model; " + "; ".join(problems))
    nnx.update(tower.bert, nnx.from_flat_state(flat))


def tower_state_dict(tower, prefix: str = "") -> dict[str, np.ndarray]:
    """The tower's weights in Hugging Face ``BertModel`` key names (``prefix`` prepended, e.g. DPR's)."""
    flat = dict(nnx.to_flat_state(nnx.state(tower.bert, nnx.Param)))
    inverse_layer = {v: k for k, v in _LAYER_PARTS.items()}
    inverse_embed = {v: k for k, v in _EMBED_PARTS.items()}
    out = {}
    for path, var in flat.items():
        value = np.asarray(var.get_value(), dtype=np.float32)
        if path[0] == "embeddings":
            hf = inverse_embed[path[:2]]
            leaf = {"embedding": "weight", "scale": "weight", "bias": "bias"}[path[2]]
        else:
            _, i, part, name = path
            hf = f"encoder.layer.{i}.{inverse_layer[part]}"
            leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[name]
            if name == "kernel":
                value = value.T
        out[f"{prefix}{hf}.{leaf}"] = np.ascontiguousarray(value)
    return out


def projection_state_dict(tower, prefix: str = "") -> dict[str, np.ndarray]:
    """DPR's ``encode_proj`` weights, or nothing when the tower has no projection."""
    if tower.projection is None:
        return {}
    return {
        f"{prefix}encode_proj.weight": np.ascontiguousarray(np.asarray(tower.projection.kernel.get_value()).T),
        f"{prefix}encode_proj.bias": np.asarray(tower.projection.bias.get_value()),
    }
