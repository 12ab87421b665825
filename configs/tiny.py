"""Tiny: a randomly initialised 2-layer, 64-wide BERT on the SQuAD split; about a minute on 2 CPU cores.

  dpr-jax train --config tiny --workdir runs/tiny

Uses all-MiniLM-L6-v2's tokenizer (its vocabulary only, not its weights). With no data given, the
SQuAD v1.1 dev set from the shared data directory (dpr_jax.settings) is split into WORKDIR/data
first. One shared encoder with mean pooling and normalised vectors learns lexical matching quickly
from scratch. Saves a checkpoint every 20 steps and evaluates retrieval on 300 held-out questions
at steps 30 and 60. Rerun the command to resume; raise train.num_steps to train longer.
"""

from dpr_jax.train.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.model.init = "random"
    c.model.name = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.tokenizer = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.pooling = "mean"
    c.model.normalize = "true"
    c.model.shared = True
    c.model.bert.hidden_size = 64
    c.model.bert.num_hidden_layers = 2
    c.model.bert.num_attention_heads = 2
    c.model.bert.intermediate_size = 256
    c.model.bert.max_position_embeddings = 256

    c.data.prepare_squad = True
    c.data.question_max_length = 32
    c.data.passage_max_length = 128
    c.data.hard_negatives = 1  # SQuAD records have none: filled with random training passages

    c.train.batch_size = 32
    c.train.num_steps = 60
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 6
    c.train.weight_decay = 0.01
    c.train.temperature = 0.05
    c.train.log_every = 10
    c.train.checkpoint_every = 20
    c.train.keep_checkpoints = 3

    c.eval.every = 30
    c.eval.max_questions = 300
    c.eval.batch_size = 128
    return c
