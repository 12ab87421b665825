"""dpr-jax: Dense Passage Retrieval in JAX/Flax.

Stages, data flowing one way: ``data`` (readers, SQuAD prep, batches, negatives) -> ``models``
(Flax NNX BERT, dual encoder, Hugging Face weights) -> ``train`` (global in-batch loss, sharded
step, GradCache, checkpoints) -> ``index`` (offline encoding, exact search, BM25, hybrid) ->
``eval`` (has_answer, metrics). ``cli`` is a thin layer over them.
"""

__version__ = "0.1.0"
