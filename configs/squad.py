"""SQuAD: fine-tune all-MiniLM-L6-v2 on the SQuAD train articles, evaluate on the held-out articles.

  dpr-jax data squad --out data/squad
  dpr-jax train --config squad --workdir runs/squad --config.data.dir=data/squad

Without --config.data.dir the split is prepared into WORKDIR/data from the shared SQuAD dev set.
One shared encoder with mean pooling and L2-normalised vectors, as sentence-transformers trained
the model, so the loss is its MultipleNegativesRanking loss (cosine / 0.05) over the global batch.
SQuAD records carry no hard negatives; `dpr-jax mine` adds BM25 ones, otherwise the one negative
per question is a random training passage. Sized for a CPU: 120 steps of 32 questions (about half
an epoch of the 8,428 training questions; several seconds a step on 2 cores), evaluated on the
2,142 held-out questions every 60 steps. On an accelerator raise train.batch_size and train.num_epochs.
"""

from dpr_jax.train.config import base_config


def get_config():
    c = base_config()
    c.model.init = "pretrained"
    c.model.name = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.pooling = "mean"
    c.model.normalize = "true"
    c.model.shared = True

    c.data.dir = ""  # a `dpr-jax data squad` output; empty: prepare into WORKDIR/data
    c.data.prepare_squad = True
    c.data.question_max_length = 64
    c.data.passage_max_length = 192  # most SQuAD paragraphs fit; the longest are cut
    c.data.hard_negatives = 1

    c.train.batch_size = 32
    c.train.num_steps = 120
    c.train.learning_rate = 2e-5
    c.train.warmup_steps = 12
    c.train.weight_decay = 0.01
    c.train.temperature = 0.05
    c.train.max_grad_norm = 2.0
    c.train.log_every = 10
    c.train.checkpoint_every = 40
    c.train.keep_checkpoints = 3

    c.eval.every = 60
    c.eval.top_k = (1, 5, 20, 100)
    c.eval.batch_size = 64
    return c
