"""Corpus-only pre-training: the Inverse Cloze Task (or Contriever's cropping) on a corpus, no labels.

  dpr-jax data pseudo-queries --passages data/squad/passages.jsonl --out data/squad/ict.jsonl \
      --unit sentence --label source --remove-sentence 0.9 --exclude data/squad/heldout/passages.jsonl
  dpr-jax train --config configs/ict.py --workdir runs/ict --config.data.train=data/squad/ict.jsonl
  # cropping instead: --unit crop --label source (two random spans of one passage are a positive pair)
  # then fine-tune from it, or use it as is:
  dpr-jax train --config configs/squad.py --workdir runs/squad-ict --config.model.name=runs/ict ...

ICT (Lee et al. 2019): a sentence of a passage is the query, the rest of the passage (the sentence cut
out 90% of the time, so word overlap alone does not solve it) its positive, every other passage of
the global batch a negative. Cropping (Izacard et al. 2021, Contriever): two independent random crops
of one passage are a positive pair. Either adapts an encoder to a new corpus before, or instead of,
supervised fine-tuning; records from `dpr-jax data pseudo-queries --label source` are ordinary
training records (no hard negatives: in-batch ones only).

Starts from all-MiniLM-L6-v2 (one shared tower, mean pooling, unit vectors, temperature 0.05), as
configs/squad.py does, so the pre-trained run directory can be its model.name.
Sizes and times: CPU (this file): 60 steps of 32 queries, passages cut to 128 tokens, ~15-25 min on
the shared 2-core machine (~15-25 s a step under a load of 10-14); GPU: train.batch_size=512,
num_steps=2000, data.passage_max_length=256.
"""

from dpr_jax.train.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.model.init = "pretrained"
    c.model.name = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.pooling = "mean"
    c.model.normalize = "true"
    c.model.shared = True

    c.data.train = ""  # pseudo-query records with --label source (ICT sentences or crops)
    c.data.question_max_length = 64
    c.data.passage_max_length = 128
    c.data.hard_negatives = 0  # in-batch negatives only, as ICT and Contriever (without a queue)

    c.train.batch_size = 32
    c.train.num_steps = 60
    c.train.learning_rate = 2e-5
    c.train.warmup_steps = 6
    c.train.weight_decay = 0.01
    c.train.temperature = 0.05
    c.train.log_every = 5
    c.train.checkpoint_every = 30
    c.train.keep_checkpoints = 2
    c.eval.every = 0
    return c
