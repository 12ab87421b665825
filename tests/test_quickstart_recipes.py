"""`dpr-jax quickstart --recipe best`: argument handling and the configs it runs (the run itself is the
README's measured CPU run; at ~1 hour it is too long for the suite)."""

from __future__ import annotations

import pytest

from dpr_jax.cli import main


def test_best_recipe_configs_exist_and_load():
    from dpr_jax.quickstart import config_path
    from dpr_jax.train.config import load_config

    assert load_config(config_path("squad_cpu")).train.num_steps == 20
    lam = load_config(config_path("spar_lambda"))
    assert lam.train.loss == "kl" and lam.model.init == "random"


def test_unknown_recipe_and_no_train_with_best_are_refused(tmp_path, capsys):
    from dpr_jax.errors import DprJaxError
    from dpr_jax.quickstart import run_quickstart

    with pytest.raises(DprJaxError, match="recipe"):
        run_quickstart(tmp_path, recipe="fast")
    assert main(["quickstart", "--recipe", "best", "--no-train", "--workdir", str(tmp_path / "q")]) == 2
    assert "--no-train does not apply" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
