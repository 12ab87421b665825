"""Two dual encoders as one: SPAR's concatenated index ``[q_dense; w·q_lex] · [p_dense; p_lex]``.

SPAR (Chen et al. 2021) adds a lexical model Λ to a dense retriever without a second index: each
question vector is the dense model's vector followed by ``w`` times Λ's, each passage vector the two
vectors side by side, so one inner product is ``q_dense·p_dense + w · q_lex·p_lex`` and one exact (or
approximate) index over the concatenated passage vectors serves the combination, with no BM25 at
query time.

The format is a directory holding ``concat.json``::

    {"format": "dpr-jax-concat", "dense": "dense", "lexical": "lexical", "weight": 0.7, ...}

``dense`` and ``lexical`` are model specs of any kind :func:`dpr_jax.models.loading.load_model` takes
(a run directory, an export, a Hugging Face directory or hub name), relative paths resolved against
the directory; ``weight`` is ``w`` (``dpr-jax concat`` tunes it on held-out training questions). Other
keys (how ``w`` was tuned) are kept for the record. ``dpr-jax export`` writes both parts into
``OUT/dense`` and ``OUT/lexical`` next to a new ``concat.json``.

Both parts must split text into the same tokens (one tokenisation feeds both): a lexical model
trained with the dense model's vocabulary (``model.tokenizer`` in its config) does; anything else is
refused by :func:`check_same_tokenizer`, naming both.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from dpr_jax import storage
from dpr_jax.errors import DprJaxError

CONCAT_FILE = "concat.json"
FORMAT = "dpr-jax-concat"
PARTS = ("dense", "lexical")


class ConcatTower(nnx.Module):
    """One side: the dense tower's vector followed by ``weight`` times the lexical tower's."""

    def __init__(self, dense, lexical, weight: float):
        self.dense = dense
        self.lexical = lexical
        self.weight = float(weight)

    def __call__(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        d = self.dense(batch, rngs=rngs)
        lex = self.lexical(batch, rngs=rngs)
        return jnp.concatenate([d, lex * self.weight if self.weight != 1.0 else lex], axis=-1)


class ConcatEncoder(nnx.Module):
    """A dense and a lexical :class:`~dpr_jax.models.dual_encoder.DualEncoder` as one dual encoder.

    Questions get ``[q_dense; weight * q_lex]``, passages ``[p_dense; p_lex]``: the weight is on the
    question side only, so a passage index does not depend on it (a new ``w`` needs no re-encoding).
    """

    def __init__(self, dense, lexical, weight: float):
        self.dense = dense
        self.lexical = lexical
        self.weight = float(weight)
        self.question = ConcatTower(dense.question, lexical.question, weight)
        self.passage = ConcatTower(dense.passage, lexical.passage, 1.0)

    @property
    def dim(self) -> int:
        return self.dense.dim + self.lexical.dim

    def encode_questions(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.question(batch, rngs=rngs)

    def encode_passages(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.passage(batch, rngs=rngs)

    def tower(self, side: str) -> ConcatTower:
        """``"question"`` or ``"passage"``."""
        return {"question": self.question, "passage": self.passage}[side]


def is_concat_dir(path) -> bool:
    """True for a directory holding ``concat.json``."""
    return (storage.as_path(path) / CONCAT_FILE).is_file()


def check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise DprJaxError(f"the lexical weight must be a finite number >= 0, not {weight!r}")
    return float(weight)


def read_concat(path) -> dict:
    """``concat.json`` of directory ``path`` with ``dense``/``lexical`` resolved to loadable specs."""
    path = storage.as_path(path)
    file = path / CONCAT_FILE
    try:
        desc = json.loads(file.read_text())
    except FileNotFoundError:
        raise DprJaxError(f"{path}: not a concatenated model (no {CONCAT_FILE})") from None
    except json.JSONDecodeError as e:
        raise DprJaxError(f"{file}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise DprJaxError(f"{file}: expected a JSON object with \"format\": \"{FORMAT}\"")
    for part in PARTS:
        if not isinstance(desc.get(part), str) or not desc[part]:
            raise DprJaxError(f"{file}: field {part!r} must name a model (a path relative to {path}, or any spec)")
    if "weight" not in desc:
        raise DprJaxError(f"{file}: field 'weight' is missing")
    try:
        desc["weight"] = check_weight(desc["weight"])
    except DprJaxError as e:
        raise DprJaxError(f"{file}: field 'weight': {e}") from None
    return dict(desc, **{part: resolve_part(path, desc[part]) for part in PARTS})


def resolve_part(base: Path, spec: str) -> str:
    """A part's spec: a path relative to the concat directory when one exists there, else as written."""
    if storage.is_remote(spec):
        return spec
    if storage.is_remote(base):
        candidate = storage.as_path(base) / spec
        return str(candidate) if not spec.startswith("/") and candidate.exists() else spec
    candidate = (Path(base) / spec).expanduser()
    if not Path(spec).is_absolute() and candidate.exists():
        return str(candidate)
    return spec


def write_concat(path, dense: str, lexical: str, weight: float, **extra) -> Path:
    """Create directory ``path`` (if needed) with a ``concat.json`` naming the parts; returns the file.

    Part paths that exist are stored relative to ``path`` when they lie inside it, absolute otherwise,
    so a concat directory can be moved together with parts it holds.
    """
    path = storage.as_path(path)
    storage.make_dirs(path)

    def spec(s: str) -> str:
        if storage.is_remote(s) or storage.is_remote(path):
            return s  # a URL is already absolute; relative to a bucket path only when written so
        p = Path(s).expanduser()
        if not p.exists():
            return s  # a hub name
        p = p.resolve()
        try:
            return str(p.relative_to(path.resolve()))
        except ValueError:
            return str(p)

    desc = {"format": FORMAT, "dense": spec(dense), "lexical": spec(lexical), "weight": check_weight(weight), **extra}
    storage.write_json(path / CONCAT_FILE, desc)
    return path / CONCAT_FILE


def _tokenization(tokenizer) -> dict:
    """What decides the tokens: the backend's normaliser, pre-tokeniser, model (vocabulary) and post-processor."""
    spec = json.loads(tokenizer._tok.to_str())
    return {k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model", "post_processor", "added_tokens")}


def check_same_tokenizer(dense, lexical) -> None:
    """Refuse parts that would need two tokenisations (a concatenated index feeds both one token sequence)."""
    if _tokenization(dense.tokenizer) != _tokenization(lexical.tokenizer):
        raise DprJaxError(
            f"the dense part ({dense.source}) and the lexical part ({lexical.source}) tokenize text differently; "
            f"one concatenated index feeds both the same tokens: train the lexical model with the dense model's "
            f"vocabulary (model.tokenizer in its config)")


@dataclasses.dataclass
class ConcatParts:
    """The two loaded parts and the weight (what :func:`dpr_jax.models.loading.load_model` builds on)."""

    dense: object
    lexical: object
    weight: float
