"""The quickstart fits an 8 GB laptop: its training step plans little memory, and stages give memory back.

The plain training step of all-MiniLM-L6-v2 at the quickstart's sizes (32 questions x 2 passages of
128 tokens) plans 4.3 GiB of XLA buffers on CPU (it took the quickstart to 7.2 GB RSS); with the
GradCache chunks of ``configs/squad_cpu.py`` the same gradient needs one chunk's activations.
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.long  # the quickstart itself runs this step (and prints its peak RSS per stage)
def test_quickstart_training_step_plans_under_1_gib(tmp_path, minilm_dir):
    import jax

    from dpr_jax.mesh import global_batch, make_mesh, replicate
    from dpr_jax.models.functional import FunctionalModel
    from dpr_jax.quickstart import TRAIN_CONFIG
    from dpr_jax.train.config import load_config
    from dpr_jax.train.setup import prepare_run
    from dpr_jax.train.step import init_train_state, make_train_step
    from train_support import write_synthetic_training

    # the quickstart's own config and overrides; only the records are synthetic (batches are padded to
    # the maximum lengths, so their memory does not depend on the texts)
    train_file = write_synthetic_training(tmp_path / "train.jsonl")
    config = load_config(TRAIN_CONFIG, [f"--config.data.train={train_file}"])
    assert config.train.gradcache and config.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    mesh = make_mesh(1)  # the quickstart's one CPU device
    setup = prepare_run(config, tmp_path, mesh)
    fmodel, params = FunctionalModel.split(setup.loaded.model)
    step = make_train_step(fmodel, mesh, setup.optimizer, setup.schedule, setup.step_options)
    state = init_train_state(params, setup.optimizer, mesh)
    batch = global_batch(setup.batches.batch(0), mesh)
    compiled = step.lower(state, batch, replicate(jax.random.PRNGKey(0), mesh)).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    b, g, lp = batch["passages"]["input_ids"].shape
    assert (b, g, lp, batch["questions"]["input_ids"].shape[1]) == (32, 2, 128, 32)
    assert temp < 2**30, f"the quickstart's train step plans {temp / 2**30:.2f} GiB of buffers"


def test_release_memory_drops_compiled_programs():
    import jax
    import jax.numpy as jnp

    from dpr_jax.memory import peak_rss_bytes, release_memory

    f = jax.jit(lambda x: x * 2 + 1)
    f(jnp.ones(3))
    assert f._cache_size() == 1
    release_memory()  # the default keeps compiled programs (the training loop calls it mid-run)
    assert f._cache_size() == 1
    release_memory(clear_compiled=True)
    assert f._cache_size() == 0
    assert peak_rss_bytes() > 50 * 2**20  # this process, in bytes (a JAX process is well above 50 MB)
