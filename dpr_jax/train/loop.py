"""The training loop: resume from a run directory's last checkpoint, train, evaluate, save.

``train(config, workdir)`` is what ``dpr-jax train`` runs. In order:

1. set up the run (:func:`dpr_jax.train.setup.prepare_run`: data, initial model, batches, optimizer;
   ``config.json``, ``model.json`` and the tokenizer written into the workdir);
2. turn the model into its functional form (:mod:`dpr_jax.models.functional`) on the device mesh;
3. restore the latest checkpoint if there is one: parameters, optimizer state and step. Batches and
   dropout keys are pure functions of (seed, step), so the resumed run continues bit for bit;
4. run the jitted sharded step (:mod:`dpr_jax.train.step`) over the global batches, host batches
   prepared one step ahead in a background thread, with a progress bar (step, loss, lr, pairs/s,
   ETA) and a ``metrics.jsonl`` line every ``log_every`` steps;
5. save asynchronously every ``checkpoint_every`` steps and at the end; evaluate retrieval every
   ``eval.every`` steps when configured.

SIGTERM (preemption) finishes the current step, saves it and returns normally. A non-finite loss,
gradient norm or updated parameters stops the run with a :class:`~dpr_jax.errors.DprJaxError`; the step that produced it was not
applied and nothing after the last good checkpoint is saved. Only process 0 writes files other than
checkpoints (which orbax writes from every process).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpr_jax import distributed, storage
from dpr_jax.checkpoint import Checkpointer
from dpr_jax.errors import DprJaxError
from dpr_jax.memory import release_memory
from dpr_jax.mesh import global_batch, make_mesh, replicate
from dpr_jax.models import run_dir
from dpr_jax.models.functional import FunctionalModel
from dpr_jax.train.setup import log as _log
from dpr_jax.train.setup import make_evaluator, prepare_run
from dpr_jax.train.step import init_train_state, make_train_step


@dataclasses.dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    workdir: Path  # an etils epath.Path for a gs:// workdir
    start_step: int  # step the run (re)started from
    final_step: int  # completed steps at the end (the last checkpoint's step)
    total_steps: int
    preempted: bool
    last_log: dict


# ---------------------------------------------------------------------------------------------
# run-time helpers


class MetricsLog:
    """``metrics.jsonl``, appended by process 0; on resume, rows past the restored step are dropped.

    Locally each row is appended at once. An object in a bucket cannot be appended to (each append
    rewrites the whole object, :func:`dpr_jax.storage.append_text`), so for a ``gs://`` workdir rows
    are buffered and written every ``flush_seconds``, at each checkpoint and at the end. Rows lost
    with a killed process lie after the last checkpoint: the resumed run logs those steps again.
    """

    def __init__(self, workdir, start_step: int, flush_seconds: float = 60.0):
        self.workdir = workdir
        self.enabled = distributed.is_main_process()
        self.buffered = storage.is_remote(workdir)
        self.flush_seconds = flush_seconds
        self._rows: list[dict] = []
        self._flushed_at = time.monotonic()
        if self.enabled:
            run_dir.truncate_metrics(workdir, start_step)

    def write(self, row: dict) -> None:
        if self.enabled:
            self._rows.append(row)
            if not self.buffered or time.monotonic() - self._flushed_at >= self.flush_seconds:
                self.flush()

    def flush(self) -> None:
        if self._rows:
            run_dir.append_metrics(self.workdir, self._rows)
            self._rows = []
        self._flushed_at = time.monotonic()


class StopSignal:
    """SIGTERM -> finish the step, save, exit 0. Across processes, JAX's preemption sync point agrees
    on the step at which all of them stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() > 1:  # JAX's preemption service catches SIGTERM itself
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread: no handler, no preemption saves
            self._previous = None
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:  # preemption service off
                return False
        return self.requested


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# ---------------------------------------------------------------------------------------------
# the loop


def train(config, workdir, *, progress: bool = True) -> TrainResult:
    """Train (or resume training) the run in ``workdir`` as ``config`` says."""
    from tqdm.auto import tqdm

    workdir = storage.absolute(workdir)  # never Path(): pathlib turns gs://b/x into the local ./gs:/b/x
    main = distributed.is_main_process()
    if main:
        storage.make_dirs(workdir)
    distributed.sync("dpr_jax_workdir")
    mesh = make_mesh(config.train.num_devices or None)

    run = prepare_run(config, workdir, mesh)
    batches, total_steps, data_meta, t = run.batches, run.total_steps, run.data_meta, config.train
    spec = batches.spec
    fmodel, params = FunctionalModel.split(run.loaded.model)
    run.loaded.model = None  # free the host copy; the parameters live on in `params`
    state = init_train_state(params, run.optimizer, mesh)
    del params

    checkpointer = Checkpointer(run_dir.checkpoint_dir(workdir), keep=t.keep_checkpoints,
                                async_save=t.async_checkpoints)
    metrics_log = None
    try:
        start = 0
        if checkpointer.latest_step() is not None:
            params, opt_state, meta = checkpointer.restore(None, state["params"], state["opt_state"])
            start = int(meta["step"])
            state = {"params": params, "opt_state": opt_state, "step": replicate(jnp.int32(start), mesh)}
            changed = [k for k, v in data_meta.items() if k != "total_steps" and meta.get(k) != v]
            _log(f"resuming from the checkpoint of step {start} in {checkpointer.directory}")
            if changed:
                _log("warning: " + ", ".join(f"{k} was {meta.get(k)}, now {data_meta[k]}" for k in changed)
                     + " - the data order differs from the interrupted run")
        metrics_log = MetricsLog(workdir, start)
        if start >= total_steps:
            _log(f"already trained: step {start} of {total_steps}")
            return TrainResult(workdir, start, start, total_steps, False, {})

        step_fn = make_train_step(fmodel, mesh, run.optimizer, run.schedule, run.step_options)
        evaluator = make_evaluator(config, run.paths, batches.tokenizer, fmodel, mesh)
        base_key = replicate(jax.random.PRNGKey(config.seed), mesh)
        rows = distributed.process_slice(spec.global_batch_size)
        _log(f"{len(run.records)} records, {batches.steps_per_epoch} steps/epoch, {total_steps} steps of "
             f"{spec.global_batch_size} questions x {batches.group_size} passages on {mesh.devices.size} device(s)")

        saved = [checkpointer.latest_step()]  # the newest checkpoint's step (None: none), for error messages

        def save(step: int) -> None:
            saved[0] = step
            checkpointer.save(step, state["params"], state["opt_state"],
                              {"step": step, "epoch": step // batches.steps_per_epoch, **data_meta})

        bar = tqdm(total=total_steps, initial=start, disable=not (progress and main), file=sys.stderr,
                   unit="step", dynamic_ncols=True, desc="train")
        window = _Window()
        last_log: dict = {}
        pending: list = []  # (step number, device metrics) not yet checked on the host
        preempted = False
        with StopSignal() as stop, concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(batches.batch, start, rows)
            for s in range(start, total_steps):
                local = future.result()
                if s + 1 < total_steps:
                    future = pool.submit(batches.batch, s + 1, rows)
                batch = global_batch(local, mesh)
                if s == start:  # compile first, and return the compiler's freed memory before the step runs
                    step_fn = step_fn.lower(state, batch, base_key).compile()
                    release_memory()
                state, metrics = step_fn(state, batch, base_key)
                n = s + 1  # completed steps
                pending.append((n, metrics))
                if s == start:  # exclude compilation from the throughput
                    window.extend(_check(pending, keep=0, last_saved=saved[0]))
                    window.reset_timer()
                log_now = n % t.log_every == 0 or n == total_steps
                save_now = n % t.checkpoint_every == 0 or n == total_steps
                eval_now = evaluator is not None and (n % config.eval.every == 0 or n == total_steps)
                stop_now = stop.should_stop(n)
                sync_now = log_now or save_now or eval_now or stop_now
                window.extend(_check(pending, keep=0 if sync_now else 1, last_saved=saved[0]))
                if window.latest:
                    pps = window.pairs_per_s(spec.global_batch_size)
                    bar.set_postfix(loss=_fmt(window.latest["loss"]), lr=f"{window.latest['lr']:.2e}",
                                    pairs_s="-" if pps is None else f"{pps:.1f}", refresh=False)
                bar.update(1)
                if log_now:
                    last_log = window.summary(n, spec.global_batch_size, batches.epoch_of(s))
                    metrics_log.write(last_log)
                    window.reset()
                if eval_now:
                    result = evaluator(state["params"])
                    metrics_log.write({"step": n, **result})
                    _log(f"step {n}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
                    window.reset_timer()
                if save_now or stop_now:
                    metrics_log.flush()  # before the checkpoint: a resume never lacks rows up to its step
                    save(n)
                    window.reset_timer()
                if stop_now:
                    preempted = n < total_steps
                    if preempted:
                        _log(f"stop requested (SIGTERM): saved step {n}, exiting")
                    break
        bar.close()
        checkpointer.wait()
        return TrainResult(workdir, start, n, total_steps, preempted, last_log)
    finally:
        if metrics_log is not None:
            metrics_log.flush()
        checkpointer.wait()
        checkpointer.close()


def _check(pending: list, keep: int, last_saved: int | None = None) -> list[dict]:
    """Fetch the metrics of all but the last ``keep`` pending steps; raise on a non-finite step.

    ``last_saved`` (the newest checkpoint's step, None if there is none) goes into the message: the
    step flagged the update as not applied, and every saved state passed this check, so the newest
    checkpoint holds finite parameters.
    """
    out = []
    while len(pending) > keep:
        n, m = pending.pop(0)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        if not m.pop("finite") or not math.isfinite(m["loss"]):
            if not math.isfinite(m["loss"]):
                what = f"the loss became {m['loss']}"
            elif not math.isfinite(m["grad_norm"]):
                what = f"the gradient norm became {m['grad_norm']}"
            else:
                what = "the parameters (or optimizer state) became non-finite"
            kept = ("no checkpoint has been saved yet" if last_saved is None
                    else f"the last checkpoint (step {last_saved}) is intact")
            raise DprJaxError(
                f"{what} at step {n} (learning rate {m['lr']:.3g}, loss {m['loss']:.4g}, gradient norm "
                f"{m['grad_norm']:.3g}); that update was not applied and nothing non-finite was saved: {kept}. "
                f"Lower train.learning_rate, raise train.warmup_steps or check the data.")
        out.append(dict(m, step=n))
    return out


class _Window:
    """Metrics since the last log line, and the wall time of the steps timed for throughput."""

    def __init__(self):
        self.rows: list[dict] = []
        self.latest: dict | None = None
        self.reset()

    def reset(self) -> None:
        self.rows = []
        self.reset_timer()

    def reset_timer(self) -> None:
        """Start timing afresh (after compilation or an evaluation)."""
        self.timed = 0
        self.start = time.perf_counter()

    def extend(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        self.timed += len(rows)
        if rows:
            self.latest = rows[-1]

    def pairs_per_s(self, batch_size: int) -> float | None:
        """Questions (question-positive pairs) per second over the timed steps; None before any."""
        elapsed = time.perf_counter() - self.start
        return self.timed * batch_size / elapsed if self.timed and elapsed > 0 else None

    def summary(self, step: int, batch_size: int, epoch: int) -> dict:
        rows = self.rows or ([self.latest] if self.latest else [])
        mean = lambda k: float(np.mean([r[k] for r in rows])) if rows else float("nan")  # noqa: E731
        parts = {k: mean(k) for k in ("contrastive_loss", "distill_loss") if rows and k in rows[-1]}
        return {"step": step, "epoch": epoch, "loss": mean("loss"), **parts, "accuracy": mean("accuracy"),
                "grad_norm": mean("grad_norm"), "lr": rows[-1]["lr"] if rows else 0.0,
                "steps_in_window": len(rows),  # the means are over these steps (fewer after a resume)
                "pairs_per_s": None if (pps := self.pairs_per_s(batch_size)) is None else round(pps, 2)}
