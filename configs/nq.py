"""Natural Questions: DPR's retriever recipe (Karpukhin et al. 2020; facebookresearch/DPR biencoder_nq).

  dpr-jax train --config nq --workdir runs/nq \
      --config.data.train=downloads/data/retriever/nq-train.json

Two separate bert-base-uncased towers with [CLS] pooling, dot-product scores, passages fed as
[CLS] title [SEP] text [SEP] with all-zero segment ids (DPR's torch.zeros_like); a global batch of
128 questions, each with its positive and 1 BM25 hard negative (so 256 passages per softmax);
AdamW lr 2e-5 (eps 1e-8, no weight decay), 1237 linear warm-up steps then linear decay to 0 over 40
epochs, gradient-norm clipping at 2.0, dropout 0.1, sequence length 256 for questions and passages.
On memory-limited accelerators set --config.train.gradcache=true with chunk sizes.
"""

from dpr_jax.train.config import base_config


def get_config():
    c = base_config()
    c.model.init = "pretrained"
    c.model.name = "bert-base-uncased"
    c.model.pooling = "cls"
    c.model.normalize = "false"
    c.model.projection_dim = 0
    c.model.shared = False
    c.model.passage_segment_ids = "dpr-zeros"  # DPR feeds all-zero segment ids (torch.zeros_like)
    c.model.dropout = True

    c.data.train = ""  # DPR's nq-train.json (or .jsonl); required
    c.data.question_max_length = 256
    c.data.passage_max_length = 256
    c.data.hard_negatives = 1
    c.data.random_negatives = 0
    c.data.shuffle = True
    c.data.shuffle_positives = False

    c.train.batch_size = 128
    c.train.num_epochs = 40
    c.train.learning_rate = 2e-5
    c.train.warmup_steps = 1237
    c.train.weight_decay = 0.0
    c.train.adam_eps = 1e-8
    c.train.max_grad_norm = 2.0
    c.train.temperature = 1.0
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 3
    return c
