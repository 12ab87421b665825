"""Tokenisation as DPR does it: questions alone, passages as ``[CLS] title [SEP] text [SEP]``.

Wraps the Rust ``tokenizers`` backend of the model's Hugging Face fast tokenizer. The padding and
truncation a ``tokenizer.json`` may carry (all-MiniLM-L6-v2's pads and truncates to 128) are switched
off: lengths are ours to set. Batches are padded to the longest sequence rounded up to a multiple of
8 (few distinct shapes, so few jit compilations), or to a fixed ``pad_to`` (training).

Segment (token type) ids come out as BERT pairs them (0 for the title, 1 for the text); a model
whose ``EncoderConfig.passage_segment_ids`` is ``"dpr-zeros"`` replaces them with zeros itself, as
DPR does (see :mod:`dpr_jax.models.config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dpr_jax.errors import DprJaxError


def passage_inputs(titles: Sequence[str], texts: Sequence[str]) -> list:
    """DPR's context input: the (title, text) pair, or the text alone when there is no title."""
    return [(title, text) if title else text for title, text in zip(titles, texts)]


class TextTokenizer:
    """Turns questions and (title, text) passages into padded int32 id/mask/type arrays."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        backend = hf_tokenizer.backend_tokenizer
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = hf_tokenizer.pad_token_id or 0

    @classmethod
    def from_dir(cls, path: str | Path) -> "TextTokenizer":
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(path), use_fast=True)
        except Exception as e:  # transformers raises many types for a missing/bad tokenizer
            raise DprJaxError(f"cannot load a tokenizer from {path}: {e}") from e
        if not getattr(hf, "is_fast", False):
            raise DprJaxError(f"{path}: a fast (Rust) tokenizer is required")
        return cls(hf)

    def save(self, out_dir: str | Path) -> None:
        self.hf.save_pretrained(str(out_dir))

    def encode_raw(self, inputs, max_length: int):
        """Token encodings (unpadded) of strings or (title, text) pairs, truncated to ``max_length``."""
        self._tok.enable_truncation(max_length, strategy="longest_first")
        try:
            return self._tok.encode_batch(inputs)
        finally:
            self._tok.no_truncation()

    def pad(self, encodings, pad_to: int | None = None, multiple: int = 8) -> dict:
        """Stack encodings into int32 arrays padded to ``pad_to`` or the longest rounded up to ``multiple``."""
        longest = max((len(e.ids) for e in encodings), default=1)
        length = pad_to if pad_to is not None else -(-longest // multiple) * multiple
        n = len(encodings)
        ids = np.full((n, length), self.pad_id, dtype=np.int32)
        types = np.zeros((n, length), dtype=np.int32)
        mask = np.zeros((n, length), dtype=np.int32)
        for row, e in enumerate(encodings):
            m = min(len(e.ids), length)
            ids[row, :m] = e.ids[:m]
            types[row, :m] = e.type_ids[:m]
            mask[row, :m] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def questions(self, texts: Sequence[str], max_length: int, pad_to: int | None = None) -> dict:
        """Questions alone: ``[CLS] question [SEP]``."""
        return self.pad(self.encode_raw(list(texts), max_length), pad_to)

    def passages(self, titles: Sequence[str], texts: Sequence[str], max_length: int,
                 pad_to: int | None = None) -> dict:
        """``[CLS] title [SEP] text [SEP]`` (text alone when the title is empty), as DPR encodes contexts."""
        return self.pad(self.encode_raw(passage_inputs(titles, texts), max_length), pad_to)

    def lengths(self, texts: Sequence[str], titles: Sequence[str] | None = None, max_length: int = 512) -> np.ndarray:
        """Token counts after truncation (used to sort passages into length buckets)."""
        inputs = list(texts) if titles is None else passage_inputs(titles, texts)
        return np.array([len(e.ids) for e in self.encode_raw(inputs, max_length)], dtype=np.int32)
