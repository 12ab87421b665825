"""Model configuration: the BERT architecture (as in Hugging Face ``config.json``) and the encoder head.

``BertConfig`` mirrors the fields of a Hugging Face BERT ``config.json`` so weights and configs move
both ways unchanged. ``EncoderConfig`` says how a tower turns token states into one vector: pooling
(``cls`` as DPR, ``mean`` as sentence-transformers), an optional linear projection (DPR's
``projection_dim``), optional L2 normalisation, the compute dtype, and which segment (token type)
ids a passage's ``[CLS] title [SEP] text [SEP]`` gets:

- ``"pair"``: BERT's sentence-pair convention, 0 for the title part and 1 for the text (what a
  Hugging Face tokenizer returns for ``(title, text)``);
- ``"dpr-zeros"``: all zeros, as facebookresearch/DPR feeds every sequence (``torch.zeros_like`` in
  its biencoder and in ``generate_dense_embeddings``): the convention of DPR checkpoints and of
  models trained with DPR's recipe.

Questions are single sequences, all zeros either way.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dpr_jax.errors import DprJaxError

POOLINGS = ("cls", "mean")
SEGMENT_CONVENTIONS = ("pair", "dpr-zeros")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT architecture hyper-parameters (names as in Hugging Face ``BertConfig``)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise DprJaxError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )

    @classmethod
    def from_hf(cls, cfg: dict) -> "BertConfig":
        """Read a Hugging Face BERT (or DPR) ``config.json`` dict; only exact GELU is supported."""
        act = cfg.get("hidden_act", "gelu")
        if act != "gelu":
            raise DprJaxError(f"hidden_act {act!r} is not supported (dpr-jax's BERT uses exact GELU)")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise DprJaxError("only absolute position embeddings are supported")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names[:5] if n not in cfg]
        if missing:
            raise DprJaxError(f"config.json lacks {', '.join(missing)}")
        return cls(**{n: cfg[n] for n in names if n in cfg and cfg[n] is not None})

    def to_hf(self) -> dict:
        """A ``config.json`` dict that ``transformers.BertModel`` loads."""
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            "initializer_range": 0.02,
            **dataclasses.asdict(self),
        }


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """How a tower turns token states into one vector, and in which dtype it computes."""

    pooling: str = "cls"
    normalize: bool = False
    projection_dim: int = 0
    dtype: str = "float32"
    passage_segment_ids: str = "pair"  # "pair" or "dpr-zeros" (see the module docstring)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise DprJaxError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if self.passage_segment_ids not in SEGMENT_CONVENTIONS:
            raise DprJaxError(f"passage_segment_ids must be one of {SEGMENT_CONVENTIONS}, "
                              f"not {self.passage_segment_ids!r}")
        if self.dtype not in DTYPES:
            raise DprJaxError(f"dtype must be one of {tuple(DTYPES)}, not {self.dtype!r}")

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
