"""The DPR dual encoder: a question tower and a passage tower, score = q · p.

A tower is BERT + pooling (``cls`` as DPR, ``mean`` as sentence-transformers) + an optional linear
projection (DPR's ``projection_dim``) + optional L2 normalisation. The two towers are separate
modules (DPR's default) or one shared module (``shared=True``); both start from the same weights when
loaded from one pretrained model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dpr_jax.models.bert import BertModel, _linear
from dpr_jax.models.config import BertConfig, EncoderConfig


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
    """``[B, L, H]`` token states -> ``[B, H]``: the [CLS] state or the mask-weighted mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.astype(hidden.dtype)[:, :, None]
    return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)


class Tower(nnx.Module):
    """One encoder tower: token ids -> one float32 vector per sequence."""

    def __init__(self, bert_config: BertConfig, encoder_config: EncoderConfig, *, rngs: nnx.Rngs):
        dtype = encoder_config.compute_dtype
        self.encoder_config = encoder_config
        self.bert = BertModel(bert_config, dtype=dtype, rngs=rngs)
        self.projection = (
            _linear(bert_config.hidden_size, encoder_config.projection_dim, jnp.float32, rngs)
            if encoder_config.projection_dim
            else None
        )

    def __call__(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        types = batch.get("token_type_ids")
        if self.encoder_config.passage_segment_ids == "dpr-zeros":
            types = None  # DPR feeds all-zero segment ids whatever the tokenizer made (BertModel's default)
        hidden = self.bert(batch["input_ids"], batch["attention_mask"], types, rngs=rngs)
        vec = pool(hidden, batch["attention_mask"], self.encoder_config.pooling)
        if self.projection is not None:
            vec = self.projection(vec)
        if self.encoder_config.normalize:
            vec = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)
        return vec.astype(jnp.float32)


class DualEncoder(nnx.Module):
    """Question and passage towers (one shared module when ``shared``)."""

    def __init__(self, bert_config: BertConfig, encoder_config: EncoderConfig, *, shared: bool = False,
                 rngs: nnx.Rngs):
        self.bert_config = bert_config
        self.encoder_config = encoder_config
        self.shared = shared
        self.question = Tower(bert_config, encoder_config, rngs=rngs)
        self.passage = self.question if shared else Tower(bert_config, encoder_config, rngs=rngs)

    @property
    def dim(self) -> int:
        return self.encoder_config.projection_dim or self.bert_config.hidden_size

    def encode_questions(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.question(batch, rngs=rngs)

    def encode_passages(self, batch: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.passage(batch, rngs=rngs)

    def tower(self, side: str) -> Tower:
        """``"question"`` or ``"passage"``."""
        return {"question": self.question, "passage": self.passage}[side]
