"""Matryoshka-style truncation of embeddings to their first ``dim`` coordinates: the one rule.

A model trained with a Matryoshka loss (Kusupati et al., 2022) scores well on a prefix of its
vector; ``dpr-jax encode --dim D`` stores only that prefix, and ``dpr-jax search --dim D`` (or an
index encoded at ``D``) cuts the questions the same way. Both sides go through
:func:`truncate_vectors`, so a passage and a question are always compared in the same space.

Re-normalise or not? Only when the model itself L2-normalises its vectors (``normalize`` in its
description, e.g. sentence-transformers models, trained with cosine similarity): a prefix of a unit
vector is no longer unit length, and a Matryoshka loss on such a model scores the *cosine* of the
prefixes (what sentence-transformers' ``MatryoshkaLoss`` and ``truncate_dim`` do), so the prefix is
re-normalised to keep scores cosines. A model that does not normalise (DPR: dot product of raw
[CLS] vectors) was trained, and is scored, on the dot product of the raw prefixes: their norms
carry part of the score, and re-normalising would throw that away. For questions the choice does
not change the ranking (one positive factor per question) but it does change the scores that
``hybrid`` fuses; for passages it changes the ranking. Truncating to the full dimension is a no-op.
Training's Matryoshka loss cuts (and re-normalises) by the same rule, in JAX
(:func:`dpr_jax.train.loss.truncate`), so a model is searched in the space it was trained in.
"""

from __future__ import annotations

import numpy as np

from dpr_jax.errors import DprJaxError


def check_dim(dim: int | None, available: int, what: str) -> int:
    """``dim`` (or ``available`` when None) after checking ``1 <= dim <= available``."""
    if dim is None:
        return available
    if not isinstance(dim, (int, np.integer)) or not 1 <= dim <= available:
        raise DprJaxError(f"--dim must be between 1 and {available} ({what}), got {dim!r}")
    return int(dim)


def truncate_vectors(vectors: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """The first ``dim`` coordinates of each row, re-normalised to unit length iff ``normalize``.

    Without re-normalisation the result is a view in the input's dtype; with it, float32 (a zero
    prefix stays zero). ``dim`` equal to the width returns the input unchanged.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise DprJaxError(f"expected [n, dim] vectors, got shape {vectors.shape}")
    if dim == vectors.shape[1]:
        return vectors
    if not 1 <= dim < vectors.shape[1]:
        raise DprJaxError(f"cannot truncate {vectors.shape[1]}-d vectors to {dim} dimensions")
    prefix = vectors[:, :dim]
    if not normalize:
        return prefix
    prefix = prefix.astype(np.float32)
    norms = np.linalg.norm(prefix, axis=1, keepdims=True)
    return prefix / np.where(norms > 0, norms, np.float32(1))
