"""Config files and --config.key=value overrides; the shipped configs say what their docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpr_jax.errors import DprJaxError
from dpr_jax.train.config import apply_overrides, base_config, from_json, load_config, split_overrides, to_json

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_overrides_are_parsed_to_the_type_of_the_default():
    c = apply_overrides(base_config(), ["--config.train.learning_rate=1", "--config.train.batch_size", "64",
                                        "--config.model.shared=true", "--config.eval.top_k=(1, 10)",
                                        "--config.data.train=x.jsonl", "--config.train.gradcache=no"])
    assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)
    assert c.train.batch_size == 64 and isinstance(c.train.batch_size, int)
    assert c.model.shared is True and c.train.gradcache is False
    assert c.eval.top_k == (1, 10)
    assert c.data.train == "x.jsonl"


@pytest.mark.parametrize("args,match", [
    (["--config.train.learning_rat=1"], "did you mean train.learning_rate"),
    (["--config.train.batch_size=abc"], "train.batch_size"),
    (["--config.model.shared=maybe"], "true or false"),
    (["--config.train.batch_size"], "needs a value"),
    (["--batch_size=3"], "unrecognized argument"),
])
def test_bad_overrides_are_clear_errors(args, match):
    with pytest.raises(DprJaxError, match=match):
        apply_overrides(base_config(), args)


def test_split_overrides_accepts_both_forms():
    assert split_overrides(["--config.a.b=1=2", "--config.c", "x"]) == [("a.b", "1=2"), ("c", "x")]


def test_config_file_with_unknown_key_or_bad_value(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from dpr_jax.train.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.train.lerning_rate = 1.0\n    return c\n")
    with pytest.raises(DprJaxError, match="bad.py.*train.lerning_rate"):
        load_config(bad)
    with pytest.raises(DprJaxError, match="data.on_error"):
        load_config(CONFIGS / "tiny.py", ["--config.data.on_error=ignore"])
    with pytest.raises(DprJaxError, match="does not exist"):
        load_config(tmp_path / "missing.py")
    nofunc = tmp_path / "nofunc.py"
    nofunc.write_text("x = 1\n")
    with pytest.raises(DprJaxError, match="get_config"):
        load_config(nofunc)


def test_json_round_trip_keeps_types():
    c = load_config(CONFIGS / "squad.py", ["--config.eval.top_k=(1, 3)"])
    back = from_json(to_json(c))
    assert back == c and back.eval.top_k == (1, 3)


def test_nq_config_is_dprs_recipe():
    c = load_config(CONFIGS / "nq.py")
    assert c.model.name == "bert-base-uncased" and c.model.pooling == "cls" and c.model.shared is False
    assert (c.train.batch_size, c.data.hard_negatives, c.train.learning_rate) == (128, 1, 2e-5)
    assert (c.train.warmup_steps, c.train.num_epochs, c.train.max_grad_norm) == (1237, 40, 2.0)
    assert (c.data.question_max_length, c.data.passage_max_length) == (256, 256)
    assert c.train.temperature == 1.0 and c.model.dropout is True


def test_squad_and_tiny_configs():
    squad = load_config(CONFIGS / "squad.py")
    assert squad.model.name == "sentence-transformers/all-MiniLM-L6-v2" and squad.model.pooling == "mean"
    assert squad.data.prepare_squad and squad.eval.every > 0
    tiny = load_config(CONFIGS / "tiny.py")
    assert tiny.model.init == "random" and tiny.model.bert.num_hidden_layers == 2 and tiny.model.bert.hidden_size == 64
    assert tiny.train.num_steps // tiny.train.checkpoint_every >= 2  # at least two checkpoints on the way


def test_shipped_configs_by_name_and_files_by_path(tmp_path, monkeypatch):
    from dpr_jax.train.config import resolve_config, shipped_configs

    assert shipped_configs() == ["ict", "nq", "spar_lambda", "squad", "squad_cpu", "tiny"]
    monkeypatch.chdir(tmp_path)  # no configs/ here: names still resolve, to the shipped files
    assert resolve_config("squad").samefile(CONFIGS / "squad.py")
    assert load_config("tiny") == load_config(CONFIGS / "tiny.py")
    (tmp_path / "squad").write_text("not a config name but a file")  # an existing file wins over a name
    assert resolve_config("squad") == Path("squad")
    (tmp_path / "mine.py").write_text("from dpr_jax.train.config import base_config\n"
                                      "def get_config():\n    c = base_config()\n    c.seed = 7\n    return c\n")
    assert load_config("mine.py").seed == 7
    with pytest.raises(DprJaxError, match="configs/tiny.py does not exist.*nq, spar_lambda, squad, squad_cpu, tiny.*--config squad"):
        load_config("configs/tiny.py")
    with pytest.raises(DprJaxError, match="no shipped config.*shipped: ict, nq, spar_lambda, squad, squad_cpu, tiny"):
        load_config("tinyy")
    assert str(resolve_config("gs://bucket/configs/x.py")) == "gs://bucket/configs/x.py"  # a URL is a file
