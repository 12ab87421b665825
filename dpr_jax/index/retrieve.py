"""Dense retrieval end to end: encode questions, search an index, return ranked passage ids.

Functions here take a loaded model (:class:`~dpr_jax.models.loading.LoadedModel`); turning a model
spec into one is the caller's business (the commands do it with their shared ``--model`` options).

:func:`dense_search` searches a faiss index built by ``dpr-jax index build`` when one is there
(``INDEX/ann.faiss`` or ``ann``), else exactly with JAX over all processes
(:func:`search_vectors`); ``exact=True`` forces the JAX path. Either way rows come back as global
shard rows and are mapped to ids once per run. With ``dim`` (or an index encoded with ``--dim``)
questions and passages are compared in their first ``dim`` coordinates
(:mod:`dpr_jax.index.truncate`).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from dpr_jax import storage
from dpr_jax.data.records import Question
from dpr_jax.distributed import is_main_process
from dpr_jax.errors import DprJaxError
from dpr_jax.index.encode import TextEncoder
from dpr_jax.index.multihost import multihost_search
from dpr_jax.index.runs import Hit, RunEntry
from dpr_jax.index.store import Index, open_index
from dpr_jax.index.truncate import check_dim, truncate_vectors
from dpr_jax.mesh import make_local_mesh


def encode_question_texts(loaded, texts: Sequence[str], *, batch_size: int = 128, max_length: int = 64,
                          progress: bool = True, dim: int | None = None, encoder: TextEncoder | None = None) -> np.ndarray:
    """float32 question vectors with a progress bar; cut to their first ``dim`` coordinates if given
    (re-normalised when the model normalises its vectors). ``encoder``: a :class:`TextEncoder` of
    ``loaded`` to reuse (then its batch size and max length apply)."""
    encoder = encoder or TextEncoder(loaded, batch_size=batch_size, max_length=max_length)
    with tqdm(total=len(texts), unit="q", desc="encode questions", disable=not progress, file=sys.stderr) as bar:
        vectors = encoder.encode_questions(texts, progress=bar.update)
    return vectors if dim is None else truncate_vectors(vectors, dim, bool(loaded.encoder_config.normalize))


def search_dim(index: Index, model_dim: int, dim: int | None) -> int:
    """The dimension questions and passages are compared in.

    ``dim`` given: at most the index's and the model's width. Not given: the index's width, which
    may be below the model's only when the index was encoded truncated from this model's width
    (``meta.json`` ``model_dim``).
    """
    if dim is not None:
        return check_dim(dim, min(index.dim, model_dim), f"the index holds {index.dim}-d vectors, "
                                                         f"the model makes {model_dim}-d ones")
    if index.dim == model_dim or (index.dim < model_dim and index.meta.get("model_dim") == model_dim):
        return index.dim
    raise DprJaxError(f"{index.directory} holds {index.dim}-d vectors but the model makes {model_dim}-d ones")


def open_index_for(loaded, index_dir, *, dim: int | None = None, progress: bool = True) -> Index:
    """Open an index to search with ``loaded``, seen in the dimension of the search (:func:`search_dim`).

    The returned index reads vectors cut to that dimension when it is below the stored one
    (:meth:`~dpr_jax.index.store.Index.truncated`); questions are cut to ``index.dim`` by
    :func:`encode_question_texts`. Another encoder than the index's is noted.
    """
    index = open_index(index_dir)
    index = index.truncated(search_dim(index, loaded.model.dim, dim))
    built_with = index.meta.get("model")
    if built_with and built_with != loaded.source and progress and is_main_process():
        print(f"note: {index_dir} was encoded with {built_with}, questions with {loaded.source}", file=sys.stderr)
    return index


def search_vectors(index, queries: np.ndarray, k: int, *, chunk_rows: int = 262_144, progress: bool = True,
                   approx_recall: float | None = None) -> tuple[list[list[str]], np.ndarray]:
    """Top-``k`` passage ids and scores of already encoded question vectors in an opened index.

    Over all processes of a multi-process run (each process scores its own contiguous part of the
    rows on its local devices, the top-k lists are merged:
    :func:`~dpr_jax.index.multihost.multihost_search`); with ``progress`` each process reports its
    part on stderr as ``searched rows A-B of N`` (A inclusive, B exclusive), so a launch can be
    checked from its logs. ``approx_recall``: see :func:`~dpr_jax.index.search.exact_search`.
    """
    scores, rows, (start, stop) = multihost_search(queries, index, k, chunk_rows=chunk_rows, mesh=make_local_mesh(),
                                                   progress=progress, approx_recall=approx_recall)
    if progress:
        print(f"searched rows {start}-{stop} of {index.count}", file=sys.stderr, flush=True)
    ids = index.id_at(rows)  # one pass over the ids files of the shards hit, for all questions at once
    return ids, scores


def _open_approximate(index: Index, ann, *, exact: bool, approx_recall, nprobe, ef_search, faiss_params, rerank):
    """The faiss index this search uses (checked against the shards), or None for the exact JAX path."""
    from dpr_jax.index import ann as ann_mod

    use_jax = exact or approx_recall is not None
    ann_path = storage.as_path(ann) if ann else ann_mod.default_path(index.directory)
    if ann and use_jax:
        raise DprJaxError("--ann and --exact/--approx-recall exclude each other")
    if use_jax or not (ann or ann_mod.sidecar(ann_path).exists() or ann_path.exists()):
        if nprobe is not None or ef_search is not None or faiss_params or rerank:
            raise DprJaxError("--nprobe/--ef-search/--faiss-param/--rerank apply to a faiss index (dpr-jax index build), which this "
                              "search does not use")
        return None
    import jax

    if jax.process_count() > 1:
        raise DprJaxError(f"{ann_path}: a faiss index is searched by one process; run one process, or pass --exact "
                          "to split the exact search over the processes")
    approx = ann_mod.open_ann(ann_path, index)
    if approx.dim != index.dim:
        raise DprJaxError(f"{ann_path} was built over {approx.dim}-d vectors but the search compares {index.dim}-d "
                          f"ones; rebuild it with --dim {index.dim}, or search with --exact")
    return approx


class Searcher:
    """An opened index and how it is searched: through its faiss index, or exactly with JAX.

    Built once, before any question is encoded (a stale or mismatched faiss index, or faiss options
    given for an index that has none, are errors up front); :meth:`search` then takes question
    vectors already in ``index.dim`` coordinates. The options are :func:`dense_search`'s.
    """

    def __init__(self, index: Index, *, exact: bool = False, ann=None, nprobe: int | None = None,
                 ef_search: int | None = None, faiss_params: dict | None = None, rerank: int | None = None,
                 approx_recall: float | None = None, chunk_rows: int = 262_144, progress: bool = True):
        self.index = index
        self.approx = _open_approximate(index, ann, exact=exact, approx_recall=approx_recall, nprobe=nprobe,
                                        ef_search=ef_search, faiss_params=faiss_params, rerank=rerank)
        self.nprobe, self.ef_search, self.faiss_params, self.rerank = nprobe, ef_search, faiss_params, rerank
        self.approx_recall, self.chunk_rows, self.progress = approx_recall, chunk_rows, progress

    @property
    def kind(self) -> str:
        """``"exact"`` (JAX over the shards) or the faiss index's type (``hnsw``, ``ivf-pq``, ...)."""
        return "exact" if self.approx is None else self.approx.kind

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], list[np.ndarray]]:
        """Top-``k`` passage ids and scores per question vector; a faiss search may give fewer than ``k``."""
        index = self.index
        if self.approx is None:
            ids, scores = search_vectors(index, queries, k, chunk_rows=self.chunk_rows, progress=self.progress,
                                         approx_recall=self.approx_recall)
            return ids, list(scores)
        if self.progress:
            print(f"searching {self.approx.path} ({self.approx.kind}, approximate; --exact searches the shards "
                  f"exactly)", file=sys.stderr)
        k = min(k, index.count)
        rerank = self.rerank
        if rerank is not None and not k <= rerank:
            raise DprJaxError(f"--rerank must be at least --k ({k}), got {rerank}")
        scores, rows = self.approx.search(queries, rerank or k, nprobe=self.nprobe, ef_search=self.ef_search,
                                          params=self.faiss_params)
        if rerank:
            from dpr_jax.index.ann import rerank_exact

            scores, rows = rerank_exact(index, queries, rows, k)
        ids = index.id_at(rows)  # the whole run at once: each shard's ids read once
        kept = [int(n) for n in (rows >= 0).sum(axis=1)]  # -1 fillers (fewer hits from faiss) come last
        return [row[:n] for row, n in zip(ids, kept)], [s[:n] for s, n in zip(scores, kept)]


def dense_search(loaded, index_dir, questions: Sequence[str], k: int, *, batch_size: int = 128,
                 max_length: int = 64, chunk_rows: int = 262_144, progress: bool = True, dim: int | None = None,
                 exact: bool = False, ann=None, nprobe: int | None = None, ef_search: int | None = None,
                 faiss_params: dict | None = None, rerank: int | None = None, approx_recall: float | None = None,
                 encoder: TextEncoder | None = None) -> tuple[list[list[str]], list[np.ndarray]]:
    """Top-``k`` passage ids and scores for each question, with a loaded model.

    ``ann``: a faiss index file to search (default ``INDEX/ann.faiss`` when it exists), with
    ``nprobe`` / ``ef_search`` / ``faiss_params`` (any faiss ``ParameterSpace`` setting) and ``rerank``
    K (re-score its top K exactly from the shards: :func:`~dpr_jax.index.ann.rerank_exact`); ``exact`` (or ``approx_recall``, an option of the JAX path) searches
    the shards with JAX instead. ``dim``: compare in the first ``dim`` coordinates. A question may
    get fewer than ``k`` hits from an approximate index (its lists are shorter). ``encoder``: see
    :func:`encode_question_texts`.

    In a multi-process run (``jax.process_count() > 1``) every process encodes all the questions
    and scores its own part of the index (:func:`search_vectors`); all of them return the merged
    result. Each process encodes every question rather than a share plus a gather: questions cost
    O(Q) against the O(N / processes) passages each process scores, and identical inputs on
    identical local devices give every process bit-identical question vectors, so the parts are
    scored exactly as one process would score them.
    """
    index = open_index_for(loaded, index_dir, dim=dim, progress=progress)
    searcher = Searcher(index, exact=exact, ann=ann, nprobe=nprobe, ef_search=ef_search, faiss_params=faiss_params,
                        rerank=rerank, approx_recall=approx_recall, chunk_rows=chunk_rows,
                        progress=progress)  # before encoding
    queries = encode_question_texts(loaded, questions, batch_size=batch_size, max_length=max_length,
                                    progress=progress, dim=index.dim, encoder=encoder)
    return searcher.search(queries, k)


def search_questions(loaded, index_dir, questions: Sequence[Question], k: int, **kwargs) -> list[RunEntry]:
    """A run (one :class:`RunEntry` per question, hits best first) without passage text yet."""
    ids, scores = dense_search(loaded, index_dir, [q.question for q in questions], k, **kwargs)
    return [
        RunEntry(q, [Hit(pid, float(s)) for pid, s in zip(row_ids, row_scores)])
        for q, row_ids, row_scores in zip(questions, ids, scores)
    ]


def passages_of_index(index_dir, explicit=None):
    """The passages file to take hits' titles and texts from: ``explicit``, else the one ``index_dir``
    was encoded from if it has not changed since (None when unknown or gone)."""
    if explicit:
        return explicit
    from dpr_jax.index.store import read_meta

    meta = read_meta(index_dir)
    passages, recorded = meta.get("passages"), meta.get("passages_fingerprint")
    if passages and recorded and storage.as_path(passages).is_file():
        if storage.fingerprint(passages) != recorded:
            raise DprJaxError(f"{passages} has changed since {index_dir} was encoded from it, so its titles, texts "
                              f"and has_answer would not be those of the indexed passages; re-encode, or pass "
                              f"--passages to use the file as it is now")
    return passages
