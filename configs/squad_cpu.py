"""configs/squad.py at CPU size: the README's "DPR fine-tuned (today's recipe, at CPU size)" row.

  dpr-jax data squad --out data/squad --dev-articles 4 --heldout-articles 4
  dpr-jax mine --method bm25 --passages data/squad/passages.jsonl --train data/squad/train.jsonl \
      --out data/squad/train-bm25.jsonl --num 3
  dpr-jax train --config configs/squad_cpu.py --workdir runs/dpr --config.data.dir=data/squad \
      --config.data.train=data/squad/train-bm25.jsonl

The same recipe as configs/squad.py (all-MiniLM-L6-v2, one shared tower, mean pooling, unit vectors,
temperature 0.05, one BM25 hard negative per question, in-batch softmax over the global batch), cut to
what `dpr-jax quickstart` runs on a CPU: 20 steps of 32 questions (640 of the 6,372 training questions
of the 28 training articles left after the dev and held-out slices), questions cut to 32 tokens and
passages to 128 for training (encoding for search uses 256).
Sizes and times: CPU, this file: ~8-10 min of training on the shared 2-core machine (load 10-14), plus
~14 min to encode the 2,067 passages. GPU: configs/squad.py (120 steps x 128, ~1.5 min on an H100).
"""


def get_config():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("squad_config", Path(__file__).with_name("squad.py"))
    squad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(squad)
    c = squad.get_config()
    c.data.prepare_squad = False
    c.data.question_max_length = 32
    c.data.passage_max_length = 128
    c.train.num_steps = 20
    c.train.warmup_steps = 2
    c.train.learning_rate = 3e-5
    c.train.checkpoint_every = 10
    c.train.log_every = 2
    c.eval.every = 0
    # GradCache (the same gradient, one extra forward pass) keeps the activations of 8 passages at a time
    # instead of all 64 of the batch: the plain step's XLA buffers take 4.3 GB on CPU (the whole
    # `quickstart --recipe best` peaked at 6.1 GB RSS with them), these 0.6 GB.
    c.train.gradcache = True
    c.train.gradcache_question_chunk = 16
    c.train.gradcache_passage_chunk = 8
    return c
