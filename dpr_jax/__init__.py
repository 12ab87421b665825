"""dpr-jax: Dense Passage Retrieval in JAX/Flax.

Layers, lowest first; a module imports only from its own layer or lower ones (checked by
``tests/test_architecture.py``, imports inside functions included, and no cycles):

1. infrastructure: ``errors`` (the one user-facing error type), ``storage`` (local paths and
   ``gs://`` URLs: every file access goes through it - atomic writes, ranged reads, local copies),
   ``settings`` (where shared data lives), ``mesh`` (the one place device
   meshes and shardings are made), ``distributed`` (multi-process start-up), ``checkpoint`` (orbax,
   read by training and inference alike), ``memory`` (peak RSS, freed memory back to the OS);
2. ``eval``: DPR's ``has_answer`` and retrieval metrics, pure functions over runs;
3. ``data``: records, the text-file layer (``textfiles``) and the readers on it (passages,
   questions, training records), SQuAD prep, deterministic training batches, hard-negative mining,
   pseudo-queries drawn from a corpus;
4. ``models``: Flax NNX BERT, the dual encoder, its functional form (``functional``), tokenizer,
   Hugging Face weights in and out, the run directory as a model format (``run_dir``), ``loading``
   (any model spec -> a loaded model), ``concat`` (a dense and a lexical model as one) and export;
5. ``index``: offline encoding into shards, the shard store, exact search, BM25, hybrid, run files,
   teacher scores for mining (``teacher``), the lexical weight sweep of a concatenated model
   (``weight_sweep``);
6. ``train``: config, set-up, the objective (in-batch loss, distillation, Matryoshka), the sharded
   step, GradCache, optimizer, loop;
7. ``plots``;
8. ``api``: the Python API (``load_model``, ``encode_corpus``, ``open_index``, ``search``, ``train_model``,
   ``evaluate``, plots), re-exported here lazily;
9. ``commands`` (one module per ``dpr-jax`` subcommand), ``quickstart`` (commands in sequence), ``cli``.
"""

__version__ = "0.1.0"

# The Python API (dpr_jax/api.py), importable from here. Loaded on first use, so `import dpr_jax` (and
# with it `dpr-jax --help`) stays free of JAX; see tests/test_api.py.
_API = ("Model", "DenseIndex", "load_model", "encode_corpus", "open_index", "build_index", "search", "evaluate",
        "train_model", "training_metrics", "plot_training", "plot_embeddings", "prepare_squad", "read_passages",
        "read_questions")
__all__ = [*_API, "DprJaxError", "__version__"]


def __getattr__(name):
    if name in _API:
        from dpr_jax import api

        return getattr(api, name)
    if name == "DprJaxError":
        from dpr_jax.errors import DprJaxError

        return DprJaxError
    raise AttributeError(f"module 'dpr_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
