"""`dpr-jax quickstart --recipe best`: argument handling and the configs it runs (the run itself is the
README's measured CPU run; at ~1 hour it is too long for the suite)."""

from __future__ import annotations

import pytest

from dpr_jax.cli import main


def test_best_recipe_configs_exist_and_load():
    from dpr_jax.train.config import load_config

    assert load_config("squad_cpu").train.num_steps == 20  # shipped configs, by name, from any install
    lam = load_config("spar_lambda")
    assert lam.train.loss == "kl" and lam.model.init == "random"


def test_unknown_recipe_and_no_train_with_best_are_refused(tmp_path, capsys):
    from dpr_jax.errors import DprJaxError
    from dpr_jax.quickstart import run_quickstart

    with pytest.raises(DprJaxError, match="recipe"):
        run_quickstart(tmp_path, recipe="fast")
    assert main(["quickstart", "--recipe", "best", "--no-train", "--workdir", str(tmp_path / "q")]) == 2
    assert "--no-train does not apply" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


class _Stop(Exception):
    pass


def test_best_recipe_stages_are_valid_commands_in_order(tmp_path, monkeypatch):
    """Every stage of --recipe best parses with its command's own parser; the order is the recipe's."""
    import argparse
    import importlib

    from dpr_jax import quickstart
    from dpr_jax.index import runs

    seen = []

    def parse_only(argv, done):
        name, *rest = argv
        parser = argparse.ArgumentParser(prog=f"dpr-jax {name}")
        importlib.import_module(f"dpr_jax.commands.{name}").add_arguments(parser)
        args, extra = parser.parse_known_args(rest)
        assert not extra or name == "train", (name, extra)  # train takes --config.* overrides
        seen.append((name, getattr(args, "data_command", None), args))

    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(quickstart, "_run", parse_only)
    monkeypatch.setattr(quickstart, "_concat_files", lambda out, parts: None)
    monkeypatch.setattr(runs, "read_run", stop)
    with pytest.raises(_Stop):
        quickstart.run_quickstart(tmp_path / "best", recipe="best")
    names = [n if sub is None else f"{n} {sub}" for n, sub, _ in seen]
    assert names[:2] == ["data squad", "bm25"]
    assert names.index("train") < names.index("data pseudo-queries") < names.index("concat")
    assert names.count("train") == 2 and names.count("data pseudo-queries") == 3
    squad = seen[0][2]
    assert (squad.dev_articles, squad.heldout_articles) == (4, 4)
    concat = next(a for n, _, a in seen if n == "concat")
    assert concat.questions.endswith("dev.jsonl") and concat.weight is None  # w tuned on the dev slice
    searches = [a for n, _, a in seen if n == "search"]
    assert any(str(a.model).endswith("concat") and a.questions.endswith("eval.jsonl") for a in searches)
    assert sum(a.questions.endswith("heldout/questions.jsonl") for a in searches) == 3
    excluded = [a.exclude for n, sub, a in seen if sub == "pseudo-queries"]
    assert all(e and e.endswith("heldout/passages.jsonl") for e in excluded)
