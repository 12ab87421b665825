"""SPAR's lexical model Λ: a small random-init encoder trained to rank as BM25 does, on pseudo-queries.

  dpr-jax data squad --out data/squad --dev-articles 4 --heldout-articles 4
  dpr-jax data pseudo-queries --passages data/squad/passages.jsonl --out data/squad/pseudo-bm25.jsonl \
      --unit span --label bm25 --exclude data/squad/heldout/passages.jsonl
  dpr-jax train --config configs/spar_lambda.py --workdir runs/lambda --config.data.dir=data/squad

Λ (Chen et al. 2021, "Salient Phrase Aware Dense Retrieval") imitates a sparse retriever: the training
queries are word spans drawn from the corpus itself and labelled by BM25 (rank 1 positive, ranks 4-30
hard negatives, each with its BM25 score), and the objective is KL distillation of BM25's score
distribution over each query's group plus a small contrastive term. The encoder is a bag of
embeddings: a BERT with no transformer layer (token + position embeddings, LayerNorm, mean pooling,
unit-norm vectors) and all-MiniLM-L6-v2's WordPiece vocabulary, so it shares the dense model's
tokenizer and the two can form one concatenated index (`dpr-jax concat`). Such a model can only
match words, which is what Λ is for, and it trains at hundreds of pairs a second on a CPU.

Sizes and times (2-core CPU shared with other work, load 5-10): this file, 384 wide, 2,400 steps (about
six epochs of the 26k records `quickstart --recipe best` draws) of 64 queries x 4 passages of up to 192
tokens: 33 min, ~100 pairs/s. Dev-slice top-1 (849 questions of 4 training articles): 50.8 at step 300
and 59.4 at step 600 of a 600-step run (that run's Λ gave DPR+Λ 77.0 top-1 on the eval split), 62.4 /
64.9 / 65.3 at steps 1,200 / 1,800 / 2,400 of this one (DPR+Λ 78.7): the README's results section has
both. On a GPU: raise train.batch_size to 512, num_steps to 3,000 and model.bert.hidden_size to 768.
"""

from dpr_jax.train.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.model.init = "random"
    c.model.name = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.tokenizer = "sentence-transformers/all-MiniLM-L6-v2"  # the dense model's vocabulary
    c.model.pooling = "mean"
    c.model.normalize = "true"
    c.model.shared = True
    c.model.dropout = False
    c.model.bert.hidden_size = 384
    c.model.bert.num_hidden_layers = 0
    c.model.bert.num_attention_heads = 1
    c.model.bert.intermediate_size = 4
    c.model.bert.max_position_embeddings = 512
    c.model.bert.hidden_dropout_prob = 0.0
    c.model.bert.attention_probs_dropout_prob = 0.0

    c.data.dir = ""  # optional; evaluate on the dev slice: --config.eval.questions=DIR/dev.jsonl and eval.passages
    c.data.train = ""  # the BM25-labelled pseudo-query records (required)
    c.data.question_max_length = 32
    c.data.passage_max_length = 192  # training only (a quarter of SQuAD paragraphs are longer); encode at 256
    c.data.hard_negatives = 3

    c.train.batch_size = 64
    c.train.num_steps = 2400
    c.train.learning_rate = 5e-3
    c.train.warmup_steps = 60
    c.train.weight_decay = 0.0
    c.train.temperature = 0.05
    c.train.loss = "kl"
    c.train.teacher_temperature = 1.0
    c.train.contrastive_weight = 0.1
    c.train.log_every = 20
    c.train.checkpoint_every = 600
    c.train.keep_checkpoints = 2

    c.eval.every = 600
    c.eval.top_k = (1, 5, 20, 100)
    c.eval.batch_size = 128
    return c
