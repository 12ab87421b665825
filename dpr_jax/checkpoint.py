"""Checkpoints with orbax: parameters, optimizer state and where the run is.

Infrastructure like :mod:`dpr_jax.mesh`: the trainer writes checkpoints, and inference (loading a run
directory as a model, ``export``) reads them, so this module belongs to neither. A checkpoint of step
``s`` is ``DIR/s/`` (``DIR`` is a run's ``checkpoints/``, see :mod:`dpr_jax.models.run_dir`) with three
items:

- ``params``: the model parameters (a pure nested dict of float32 arrays);
- ``opt_state``: the optax state (Adam moments, step counts);
- ``meta``: JSON - the step, the seed the data order and dropout keys derive from, and the data
  layout (global batch size, records, steps per epoch) so a resume can check it matches.

Since the batch of step ``s`` and its dropout key are pure functions of (seed, s), this is all a
run needs to continue exactly where it stopped. Orbax writes a checkpoint to a temporary directory
and renames it when complete (on ``gs://``, which has no rename, it writes in place and writes a
``commit_success.txt`` last), so a killed process never leaves a half-written step behind; saves
are asynchronous (the device-to-host copy happens before :meth:`Checkpointer.save` returns, so the
next step may reuse the buffers), ``keep`` bounds how many are kept, and every process of a
multi-host run takes part in each save and restore.
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp

from dpr_jax import storage
from dpr_jax.errors import DprJaxError

ITEMS = ("params", "opt_state", "meta")


def abstract_like(tree, sharding=None):
    """Shape/dtype (and sharding) placeholders of ``tree``, the restore target orbax needs."""
    def leaf(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or getattr(x, "sharding", None))

    return jax.tree.map(leaf, tree)


def pick_step(directory, steps: list[int], step: int | None) -> int:
    """``step`` if it is one of ``steps`` (the latest when None); a clear error when it is not."""
    if not steps:
        raise DprJaxError(f"{directory}: no checkpoints")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise DprJaxError(f"{directory}: no checkpoint of step {step} (have {', '.join(map(str, steps))})")
    return step


class Checkpointer:
    """An orbax ``CheckpointManager`` over ``DIR`` (a local path or a ``gs://`` URL) with the three items above."""

    def __init__(self, directory, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = storage.absolute(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=None if read_only or keep <= 0 else keep,
                                               save_interval_steps=0 if read_only else 1,
                                               enable_async_checkpointing=async_save,
                                               read_only=read_only, create=not read_only)
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        if read_only:  # orbax warns that a read-only manager is read-only
            absl_logger.setLevel(logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        finally:
            absl_logger.setLevel(level)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        """Start saving ``step`` (asynchronously); an existing checkpoint of that step is kept."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)), force=True)

    def _check_step(self, step: int | None) -> int:
        return pick_step(self.directory, self.steps(), step)

    def restore(self, step: int | None, params_target, opt_state_target) -> tuple[dict, object, dict]:
        """``(params, opt_state, meta)`` of ``step`` (latest if None), placed like the targets."""
        step = self._check_step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_like(params_target)),
            opt_state=ocp.args.StandardRestore(abstract_like(opt_state_target)),
            meta=ocp.args.JsonRestore()))
        return out["params"], out["opt_state"], dict(out["meta"])

    def restore_params(self, step: int | None, params_target, sharding=None) -> tuple[dict, dict]:
        """``(params, meta)`` of ``step`` (latest if None): what inference needs."""
        step = self._check_step(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_like(params_target, sharding)),
            meta=ocp.args.JsonRestore()))
        return out["params"], dict(out["meta"])

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
