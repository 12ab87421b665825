"""Training the dual encoder: DPR's global in-batch negative loss over a device mesh.

- :mod:`~dpr_jax.train.loss`: softmax cross-entropy of each question over every passage of the global
  batch with false-negative masking, distillation from teacher scores (KL, MarginMSE), Matryoshka
  dimensions;
- :mod:`~dpr_jax.train.step`: the jitted, ``shard_map``-ped step (per-device encoding, gathered
  passage vectors, gradients through the gather) and the optimizer update;
- :mod:`~dpr_jax.train.gradcache`: the same gradient in bounded activation memory;
- :mod:`~dpr_jax.train.optim`: AdamW with DPR's warm-up/decay schedule, clipping, decay mask;
- :mod:`~dpr_jax.train.config`: config files and ``--config.key=value`` overrides (the only place
  config values are parsed);
- :mod:`~dpr_jax.train.setup`: a config turned into data, initial model, batches, optimizer, step
  options and evaluator;
- :mod:`~dpr_jax.train.evaluation`: retrieval accuracy on a held-out set during training;
- :mod:`~dpr_jax.train.loop`: the loop ``dpr-jax train`` runs (resume, logging, SIGTERM, NaN stop).

Checkpoints (:mod:`dpr_jax.checkpoint`) and the run directory's layout (:mod:`dpr_jax.models.run_dir`)
live outside this package: inference reads them too.
"""
