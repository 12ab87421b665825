"""Dense retrieval end to end: encode questions, search an index exactly, return ranked passage ids.

Functions here take a loaded model (:class:`~dpr_jax.models.loading.LoadedModel`); turning a model
spec into one is the caller's business (the commands do it with their shared ``--model`` options).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from dpr_jax.data.records import Question
from dpr_jax.distributed import is_main_process
from dpr_jax.errors import DprJaxError
from dpr_jax.index.encode import TextEncoder
from dpr_jax.index.multihost import multihost_search
from dpr_jax.index.runs import Hit, RunEntry
from dpr_jax.index.store import open_index
from dpr_jax.mesh import make_local_mesh


def encode_question_texts(loaded, texts: Sequence[str], *, batch_size: int = 128, max_length: int = 64,
                          progress: bool = True) -> np.ndarray:
    """float32 question vectors with a progress bar."""
    encoder = TextEncoder(loaded, batch_size=batch_size, max_length=max_length)
    with tqdm(total=len(texts), unit="q", desc="encode questions", disable=not progress, file=sys.stderr) as bar:
        return encoder.encode_questions(texts, progress=bar.update)


def dense_search(loaded, index_dir, questions: Sequence[str], k: int, *, batch_size: int = 128,
                 max_length: int = 64, chunk_rows: int = 262_144,
                 progress: bool = True) -> tuple[list[list[str]], np.ndarray]:
    """Top-``k`` passage ids and scores for each question, with a loaded model.

    In a multi-process run (``jax.process_count() > 1``) every process encodes all the questions
    and scores its own part of the index (:func:`search_vectors`); all of them return the merged
    result. Each process encodes every question rather than a share plus a gather: questions cost
    O(Q) against the O(N / processes) passages each process scores, and identical inputs on
    identical local devices give every process bit-identical question vectors, so the parts are
    scored exactly as one process would score them.
    """
    index = open_index_for(loaded, index_dir, progress=progress)
    queries = encode_question_texts(loaded, questions, batch_size=batch_size, max_length=max_length, progress=progress)
    return search_vectors(index, queries, k, chunk_rows=chunk_rows, progress=progress)


def open_index_for(loaded, index_dir, *, progress: bool = True):
    """Open an index to search with ``loaded``: its dimension must match; another encoder is noted."""
    index = open_index(index_dir)
    if index.dim != loaded.model.dim:
        raise DprJaxError(f"{index_dir} holds {index.dim}-d vectors but the model makes {loaded.model.dim}-d ones")
    built_with = index.meta.get("model")
    if built_with and built_with != loaded.source and progress and is_main_process():
        print(f"note: {index_dir} was encoded with {built_with}, questions with {loaded.source}", file=sys.stderr)
    return index


def search_vectors(index, queries: np.ndarray, k: int, *, chunk_rows: int = 262_144,
                   progress: bool = True) -> tuple[list[list[str]], np.ndarray]:
    """Top-``k`` passage ids and scores of already encoded question vectors in an opened index.

    Over all processes of a multi-process run (each process scores its own contiguous part of the
    rows on its local devices, the top-k lists are merged:
    :func:`~dpr_jax.index.multihost.multihost_search`); with ``progress`` each process reports its
    part on stderr as ``searched rows A-B of N`` (A inclusive, B exclusive), so a launch can be
    checked from its logs.
    """
    scores, rows, (start, stop) = multihost_search(queries, index, k, chunk_rows=chunk_rows, mesh=make_local_mesh(),
                                                   progress=progress)
    if progress:
        print(f"searched rows {start}-{stop} of {index.count}", file=sys.stderr, flush=True)
    ids = index.id_at(rows)  # one pass over the ids files of the shards hit, for all questions at once
    return ids, scores


def search_questions(loaded, index_dir, questions: Sequence[Question], k: int, **kwargs) -> list[RunEntry]:
    """A run (one :class:`RunEntry` per question, hits best first) without passage text yet."""
    ids, scores = dense_search(loaded, index_dir, [q.question for q in questions], k, **kwargs)
    return [
        RunEntry(q, [Hit(pid, float(s)) for pid, s in zip(row_ids, row_scores)])
        for q, row_ids, row_scores in zip(questions, ids, scores)
    ]
