"""The training objectives through `train()`: distillation from ctx scores and Matryoshka dimensions, their
set-up checks, and a Matryoshka-trained tiny model that loses less at a truncated dimension."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpr_jax.errors import DprJaxError
from dpr_jax.train.loop import train
from dpr_jax.models.loading import load_run_model
from train_support import read_metrics, synthetic_records, tiny_config, write_jsonl


def _with_scores(rows, missing_positive_at=None):
    """Teacher scores on every ctx: 10 for the positive, 1..k for negatives (one positive left without)."""
    rows = json.loads(json.dumps(rows))  # synthetic records share ctx dicts (deepcopy would keep them shared)
    for i, r in enumerate(rows):
        for c in r["positive_ctxs"]:
            c["score"] = None if i == missing_positive_at else 10.0
        for key in ("hard_negative_ctxs", "negative_ctxs"):
            for j, c in enumerate(r[key]):
                c["score"] = float(j + 1)
    return rows


def test_distillation_run_logs_both_parts_of_its_loss(tmp_path, minilm_dir, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", _with_scores(synthetic_records(n=16, n_passages=12)))
    workdir = tmp_path / "run"
    train(tiny_config(minilm_dir, path, **{"train.loss": "kl", "train.contrastive_weight": 0.5,
                                           "train.teacher_temperature": 2.0, "train.num_steps": 2,
                                           "train.num_devices": 2, "train.checkpoint_every": 2}),
          workdir, progress=False)
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["distill_loss"] > 0 and r["contrastive_loss"] > 0
        assert r["loss"] == pytest.approx(r["distill_loss"] + 0.5 * r["contrastive_loss"], rel=1e-5)
    # a third of the synthetic records have no negative of their own: random fallbacks, no teacher score
    assert "5 of 16 records can draw negatives without a teacher score" in capsys.readouterr().err


def test_objective_inputs_are_checked_before_training(tmp_path, minilm_dir, capsys):
    rows = _with_scores(synthetic_records(n=16, n_passages=12), missing_positive_at=5)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DprJaxError, match=r"train.loss=margin_mse needs a teacher score .* 1 of 16 records have "
                                          r"none, e.g. .*train.jsonl:6\. `dpr-jax mine` writes"):
        train(tiny_config(minilm_dir, path, **{"train.loss": "margin_mse"}), tmp_path / "a", progress=False)
    with pytest.raises(DprJaxError, match=r"train.matryoshka_dims \(64, 8\): \[64\] exceed the model's 32"):
        train(tiny_config(minilm_dir, path, **{"train.matryoshka_dims": "(64, 8)"}), tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


@pytest.mark.parametrize("override,message", [
    ({"train.loss": "distill"}, "train.loss: must be one of contrastive, kl, margin_mse"),
    ({"train.teacher_temperature": 0.0}, "train.teacher_temperature: must be positive"),
    ({"train.matryoshka_dims": "(32, 32)"}, "train.matryoshka_dims: must be distinct positive integers"),
    ({"train.matryoshka_dims": "(32, 8)", "train.matryoshka_weights": "(1.0,)"}, "needs one weight per"),
])
def test_bad_objective_settings_are_config_errors(tmp_path, minilm_dir, override, message):
    with pytest.raises(DprJaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(minilm_dir, tmp_path / "x.jsonl", **override)


def _loss_and_mrr_at(workdir, rows, dim: int, temperature: float) -> tuple[float, float]:
    """In-batch-free retrieval over all distinct positives with the first ``dim`` dims (re-normalised)."""
    loaded = load_run_model(workdir)
    tok = loaded.tokenizer
    passages = {r["positive_ctxs"][0]["passage_id"]: r["positive_ctxs"][0] for r in rows}
    plist = list(passages.values())
    gold = np.array([list(passages).index(r["positive_ctxs"][0]["passage_id"]) for r in rows])
    q = np.asarray(loaded.model.encode_questions(tok.questions([r["question"] for r in rows], 16, pad_to=16)))
    p = np.asarray(loaded.model.encode_passages(tok.passages([c["title"] for c in plist], [c["text"] for c in plist],
                                                             32, pad_to=32)))
    q, p = (x[:, :dim] / np.linalg.norm(x[:, :dim], axis=1, keepdims=True) for x in (q, p))
    z = q.astype(np.float64) @ p.T / temperature
    log_z = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    positive = z[np.arange(len(q)), gold]
    rank = (z > positive[:, None]).sum(1) + 1
    return float(np.mean(log_z - positive)), float(np.mean(1.0 / rank))


def test_matryoshka_training_loses_less_at_a_truncated_dimension(tmp_path, minilm_dir):
    """Two tiny models trained alike from the same init, one with the loss also at 4 of its 32 dims."""
    rows = synthetic_records(n=96, n_passages=48, seed=2)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    common = {"train.num_steps": 100, "train.num_devices": 1, "train.checkpoint_every": 100, "train.log_every": 100,
              "model.normalize": "true", "model.projection_dim": 32, "train.temperature": 0.1}
    train(tiny_config(minilm_dir, path, **common), tmp_path / "plain", progress=False)
    train(tiny_config(minilm_dir, path, **common, **{"train.matryoshka_dims": "(32, 4)"}), tmp_path / "mrl",
          progress=False)
    plain_4, _ = _loss_and_mrr_at(tmp_path / "plain", rows, 4, 0.1)
    mrl_4, _ = _loss_and_mrr_at(tmp_path / "mrl", rows, 4, 0.1)
    plain_32, _ = _loss_and_mrr_at(tmp_path / "plain", rows, 32, 0.1)
    mrl_32, _ = _loss_and_mrr_at(tmp_path / "mrl", rows, 32, 0.1)
    assert mrl_4 < 0.9 * plain_4, (mrl_4, plain_4)
    assert mrl_32 < np.log(48) / 2  # the full vector still learned the task (chance: log 48 = 3.9)
    print(f"loss@4 plain {plain_4:.3f} matryoshka {mrl_4:.3f}; loss@32 plain {plain_32:.3f} matryoshka {mrl_32:.3f}")
