"""Corpus-only pre-training (configs/ict.py) at tiny size: ICT and cropping records train, and the
pre-trained run is a model a fine-tune can start from. configs/spar_lambda.py likewise on BM25 labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dpr_jax.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def passages(squad_dev_file, tmp_path_factory):
    from dpr_jax.data.squad import load_squad, passage_id

    article = load_squad(squad_dev_file)[0]
    rows = [{"id": passage_id(article["title"], i), "title": article["title"], "text": p["context"]}
            for i, p in enumerate(article["paragraphs"])]
    path = tmp_path_factory.mktemp("pre") / "passages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tiny(minilm_dir, train_path, **extra) -> list[str]:
    values = {"model.init": "random", "model.tokenizer": str(minilm_dir), "model.bert.hidden_size": 32,
              "model.bert.num_hidden_layers": 1, "model.bert.num_attention_heads": 2,
              "model.bert.intermediate_size": 64, "model.bert.max_position_embeddings": 128,
              "data.train": str(train_path), "data.question_max_length": 24, "data.passage_max_length": 64,
              "train.batch_size": 8, "train.num_steps": 8, "train.learning_rate": 3e-3, "train.warmup_steps": 1,
              "train.log_every": 1, "train.checkpoint_every": 8, "train.async_checkpoints": "false", **extra}
    return [f"--config.{k}={v}" for k, v in values.items()]


def _rows(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("unit", [pytest.param("sentence", marks=pytest.mark.long), "crop"])  # one unit in CI
def test_ict_config_pretrains_on_corpus_records_and_a_fine_tune_starts_from_it(unit, passages, minilm_dir, tmp_path):
    from dpr_jax.models.loading import load_model
    from dpr_jax.train.config import load_config
    from dpr_jax.train.loop import train

    records = tmp_path / "ict.jsonl"
    extra = ["--remove-sentence", "0.9"] if unit == "sentence" else []
    assert main(["data", "pseudo-queries", "--passages", str(passages), "--out", str(records), "--unit", unit,
                 "--label", "source", *extra]) == 0
    config = load_config(CONFIGS / "ict.py", _tiny(minilm_dir, records))
    assert config.data.hard_negatives == 0 and config.train.loss == "contrastive"
    result = train(config, tmp_path / "ict", progress=False)
    assert result.final_step == 8
    losses = [r["loss"] for r in _rows(tmp_path / "ict") if "loss" in r]
    assert len(losses) == 8 and np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert load_model(str(tmp_path / "ict")).model.dim == 32
    # the pre-trained run is the starting point of a (here equally tiny) fine-tune
    fine = load_config(CONFIGS / "ict.py", _tiny(minilm_dir, records, **{
        "model.init": "pretrained", "model.name": str(tmp_path / "ict"), "train.num_steps": 2}))
    assert train(fine, tmp_path / "fine", progress=False).final_step == 2


def test_lambda_config_distills_bm25_pseudo_queries(passages, minilm_dir, tmp_path):
    from dpr_jax.train.config import load_config
    from dpr_jax.train.loop import train

    records = tmp_path / "pseudo.jsonl"
    assert main(["data", "pseudo-queries", "--passages", str(passages), "--out", str(records), "--per-passage", "1",
                 "--depth", "10", "--index-dir", str(tmp_path / "bm25")]) == 0
    overrides = [o for o in _tiny(minilm_dir, records, **{"train.num_steps": 24, "train.checkpoint_every": 24})
                 if "num_hidden_layers" not in o and "learning_rate" not in o]
    config = load_config(CONFIGS / "spar_lambda.py", overrides + ["--config.eval.every=0"])
    assert config.train.loss == "kl" and config.model.bert.num_hidden_layers == 0
    train(config, tmp_path / "lambda", progress=False)
    rows = [r["distill_loss"] for r in _rows(tmp_path / "lambda") if "distill_loss" in r]
    # 54 records, 6 steps an epoch: the last epoch's mean KL to BM25 is below the first's
    assert len(rows) == 24 and np.mean(rows[-6:]) < 0.8 * np.mean(rows[:6])
