"""The training loop: set up a run directory, resume from its last checkpoint, train, evaluate, save.

``train(config, workdir)`` is what ``dpr-jax train`` runs. In order:

1. resolve the data (preparing the SQuAD split into ``WORKDIR/data`` when the config asks), read and
   validate the training records (bad ones fail the run or are skipped and reported with file:line);
2. build the dual encoder (pretrained or random init), write ``config.json``, ``model.json`` and the
   tokenizer into the workdir;
3. restore the latest checkpoint if there is one: parameters, optimizer state and step. Batches and
   dropout keys are pure functions of (seed, step), so the resumed run continues bit for bit;
4. run the jitted sharded step (:mod:`dpr_jax.train.step`) over the global batches, host batches
   prepared one step ahead in a background thread, with a progress bar (step, loss, lr, pairs/s,
   ETA) and a ``metrics.jsonl`` line every ``log_every`` steps;
5. save asynchronously every ``checkpoint_every`` steps and at the end; evaluate retrieval every
   ``eval.every`` steps when configured.

SIGTERM (preemption) finishes the current step, saves it and returns normally. A non-finite loss
stops the run with a :class:`~dpr_jax.errors.DprJaxError`; the step that produced it was not
applied and nothing after the last good checkpoint is saved. Only process 0 writes files other than
checkpoints (which orbax writes from every process).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpr_jax import distributed
from dpr_jax.data.batches import BatchSpec, TrainBatches
from dpr_jax.errors import DprJaxError
from dpr_jax.io_utils import atomic_open, write_json
from dpr_jax.mesh import global_batch, make_mesh, replicate
from dpr_jax.train import run_dir
from dpr_jax.train.checkpoint import Checkpointer
from dpr_jax.train.config import to_json
from dpr_jax.train.optim import make_optimizer
from dpr_jax.train.step import FunctionalModel, StepOptions, init_train_state, make_train_step


@dataclasses.dataclass
class DataPaths:
    train: Path
    eval_questions: Path | None
    eval_passages: Path | None


@dataclasses.dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    workdir: Path
    start_step: int  # step the run (re)started from
    final_step: int  # completed steps at the end (the last checkpoint's step)
    total_steps: int
    preempted: bool
    last_log: dict


def _log(msg: str) -> None:
    if distributed.is_main_process():
        print(f"[dpr-jax train] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# set-up


def resolve_data(config, workdir: Path) -> DataPaths:
    """Where the training records and the eval set are, preparing the SQuAD split if asked."""
    d = Path(config.data.dir) if config.data.dir else None
    if not config.data.train and d is None:
        if not config.data.prepare_squad:
            raise DprJaxError("no training data: set --config.data.train=FILE or --config.data.dir=DIR "
                              "(a directory made by `dpr-jax data squad`)")
        d = workdir / "data"
        if not (d / "split.json").exists():
            from dpr_jax import settings
            from dpr_jax.data.squad import prepare_squad

            squad = Path(config.data.squad_file) if config.data.squad_file else settings.squad_dev_path()
            if not squad.exists():
                raise DprJaxError(f"SQuAD file {squad} not found: set --config.data.squad_file, DPR_JAX_DATA, "
                                  f"or --config.data.dir to a `dpr-jax data squad` output")
            if distributed.is_main_process():
                _log(f"preparing the SQuAD split from {squad} into {d}")
                prepare_squad(squad, d)
            distributed.sync("dpr_jax_prepare_squad")
    train = Path(config.data.train) if config.data.train else d / "train.jsonl"
    if not train.exists():
        raise DprJaxError(f"training data {train} does not exist")

    def optional(explicit: str, name: str) -> Path | None:
        if explicit:
            if not Path(explicit).exists():
                raise DprJaxError(f"eval file {explicit} does not exist")
            return Path(explicit)
        return d / name if d is not None and (d / name).exists() else None

    return DataPaths(train, optional(config.eval.questions, "eval.jsonl"), optional(config.eval.passages,
                                                                                     "passages.jsonl"))


def read_records(path: Path, on_error: str, workdir: Path):
    """Training records; with ``on_error="skip"`` the bad ones are reported (and listed in the workdir)."""
    from dpr_jax.data.training_data import read_training_records

    records, problems = read_training_records(path, on_error=on_error)
    if problems:
        _log(f"skipped {len(problems)} bad training record(s) of {len(problems) + len(records)} in {path}:")
        for p in problems[:5]:
            _log(f"  {p}")
        if distributed.is_main_process():
            with atomic_open(workdir / "skipped_records.txt") as f:
                f.writelines(f"{p}\n" for p in problems)
            _log(f"  (all {len(problems)} listed in {workdir / 'skipped_records.txt'})")
    return records, problems


def _tri_state(value) -> bool | None:
    text = str(value).lower()
    return None if text == "auto" else text in ("true", "yes", "1", "on")


def build_model(config):
    """The initial dual encoder (:class:`~dpr_jax.models.loading.LoadedModel`) the config describes."""
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model, load_model, resolve_model_dir
    from dpr_jax.models.tokenizer import TextTokenizer

    m = config.model
    pooling = None if m.pooling == "auto" else m.pooling
    projection = None if m.projection_dim < 0 else m.projection_dim
    if m.init == "pretrained":
        return load_model(m.name, pooling=pooling, normalize=_tri_state(m.normalize), shared=m.shared,
                          projection_dim=projection, dtype=m.dtype, seed=config.seed)
    # random init: the architecture from model.bert, the vocabulary from model.tokenizer
    tokenizer_spec = m.tokenizer or m.name
    tokenizer = TextTokenizer.from_dir(resolve_model_dir(tokenizer_spec))
    b = m.bert
    vocab = b.vocab_size or len(tokenizer.hf)
    if vocab < len(tokenizer.hf):
        raise DprJaxError(f"model.bert.vocab_size {vocab} is smaller than the tokenizer's {len(tokenizer.hf)} tokens")
    bert = BertConfig(vocab_size=vocab, hidden_size=b.hidden_size,
                      num_hidden_layers=b.num_hidden_layers, num_attention_heads=b.num_attention_heads,
                      intermediate_size=b.intermediate_size, max_position_embeddings=b.max_position_embeddings,
                      hidden_dropout_prob=b.hidden_dropout_prob,
                      attention_probs_dropout_prob=b.attention_probs_dropout_prob, pad_token_id=tokenizer.pad_id)
    enc = EncoderConfig(pooling=pooling or "cls", normalize=bool(_tri_state(m.normalize)),
                        projection_dim=projection or 0, dtype=m.dtype)
    loaded = init_random_model(bert, enc, tokenizer, shared=m.shared, seed=config.seed)
    return dataclasses.replace(loaded, source=f"random:{tokenizer_spec}")


def total_steps_of(config, steps_per_epoch: int) -> int:
    return config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * steps_per_epoch


def step_options(config, group_size: int) -> StepOptions:
    t = config.train
    return StepOptions(group_size=group_size, temperature=t.temperature, mask_false_negatives=t.mask_false_negatives,
                       dropout=config.model.dropout, gradcache=t.gradcache, question_chunk=t.gradcache_question_chunk,
                       passage_chunk=t.gradcache_passage_chunk, nan_at_step=t.nan_at_step)


def check_layout(config, mesh, group_size: int) -> None:
    """The global batch must split evenly over devices (and, with GradCache, into chunks)."""
    n_dev = mesh.devices.size
    batch = config.train.batch_size
    if batch % n_dev:
        raise DprJaxError(f"train.batch_size {batch} is not a multiple of the {n_dev} devices")
    if config.train.gradcache:
        per_device = batch // n_dev
        qc, pc = config.train.gradcache_question_chunk, config.train.gradcache_passage_chunk
        if qc and per_device % qc:
            raise DprJaxError(f"train.gradcache_question_chunk {qc} does not divide the {per_device} "
                              f"questions per device")
        if pc and (per_device * group_size) % pc:
            raise DprJaxError(f"train.gradcache_passage_chunk {pc} does not divide the "
                              f"{per_device * group_size} passages per device")


def make_evaluator(config, paths: DataPaths, tokenizer, fmodel, mesh):
    """A :class:`~dpr_jax.train.evaluation.RetrievalEvaluator`, or None when evaluation is off."""
    if config.eval.every <= 0:
        return None
    if paths.eval_questions is None or paths.eval_passages is None:
        raise DprJaxError("eval.every is set but there is no eval set: give --config.eval.questions and "
                          "--config.eval.passages (or a data.dir with eval.jsonl and passages.jsonl)")
    from dpr_jax.data.passages import read_passages
    from dpr_jax.data.questions import read_questions
    from dpr_jax.train.evaluation import RetrievalEvaluator

    questions = read_questions(paths.eval_questions)
    if config.eval.max_questions > 0:
        questions = questions[:config.eval.max_questions]
    passages = list(read_passages(paths.eval_passages))
    return RetrievalEvaluator(questions, passages, tokenizer, fmodel, mesh,
                              question_max_length=config.data.question_max_length,
                              passage_max_length=config.data.passage_max_length,
                              batch_size=config.eval.batch_size, top_k=config.eval.top_k, match=config.eval.match)


# ---------------------------------------------------------------------------------------------
# run-time helpers


class MetricsLog:
    """``metrics.jsonl``, appended by process 0; on resume, rows past the restored step are dropped."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.enabled = distributed.is_main_process()
        if self.enabled and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start_step:
                        kept.append(line + "\n")
                except json.JSONDecodeError:
                    pass  # a line cut short by a kill
            with atomic_open(path) as f:
                f.writelines(kept)

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


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

    workdir = Path(workdir).absolute()
    main = distributed.is_main_process()
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
    distributed.sync("dpr_jax_workdir")
    mesh = make_mesh(config.train.num_devices or None)

    paths = resolve_data(config, workdir)
    records, _ = read_records(paths.train, config.data.on_error, workdir)
    loaded = build_model(config)
    if main:
        write_json(workdir / run_dir.CONFIG_FILE, to_json(config))
        run_dir.write_model_description(workdir, loaded)

    d = config.data
    spec = BatchSpec(global_batch_size=config.train.batch_size, question_max_length=d.question_max_length,
                     passage_max_length=d.passage_max_length, hard_negatives=d.hard_negatives,
                     random_negatives=d.random_negatives, shuffle=d.shuffle, shuffle_positives=d.shuffle_positives,
                     seed=config.seed)
    batches = TrainBatches(records, loaded.tokenizer, spec)
    check_layout(config, mesh, batches.group_size)
    total_steps = total_steps_of(config, batches.steps_per_epoch)
    t = config.train
    optimizer, schedule = make_optimizer(t.learning_rate, warmup_steps=t.warmup_steps, total_steps=total_steps,
                                         weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, b1=t.adam_b1,
                                         b2=t.adam_b2, eps=t.adam_eps)
    fmodel, params = FunctionalModel.split(loaded.model)
    loaded.model = None  # free the host copy; the parameters live on in `params`
    state = init_train_state(params, optimizer, mesh)
    del params

    data_meta = {"seed": config.seed, "global_batch_size": spec.global_batch_size, "num_records": len(records),
                 "steps_per_epoch": batches.steps_per_epoch, "group_size": batches.group_size,
                 "total_steps": total_steps}
    checkpointer = Checkpointer(workdir / run_dir.CHECKPOINT_DIR, keep=t.keep_checkpoints,
                                async_save=t.async_checkpoints)
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
        metrics_log = MetricsLog(workdir / run_dir.METRICS_FILE, start)
        if start >= total_steps:
            _log(f"already trained: step {start} of {total_steps}")
            return TrainResult(workdir, start, start, total_steps, False, {})

        step_fn = make_train_step(fmodel, mesh, optimizer, schedule, step_options(config, batches.group_size))
        evaluator = make_evaluator(config, paths, batches.tokenizer, fmodel, mesh)
        base_key = replicate(jax.random.PRNGKey(config.seed), mesh)
        rows = distributed.process_slice(spec.global_batch_size)
        _log(f"{len(records)} records, {batches.steps_per_epoch} steps/epoch, {total_steps} steps of "
             f"{spec.global_batch_size} questions x {batches.group_size} passages on {mesh.devices.size} device(s)")

        def save(step: int) -> None:
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
                state, metrics = step_fn(state, global_batch(local, mesh), base_key)
                n = s + 1  # completed steps
                pending.append((n, metrics))
                if s == start:  # exclude compilation from the throughput
                    window.extend(_check(pending, keep=0))
                    window.reset_timer()
                log_now = n % t.log_every == 0 or n == total_steps
                save_now = n % t.checkpoint_every == 0 or n == total_steps
                eval_now = evaluator is not None and (n % config.eval.every == 0 or n == total_steps)
                stop_now = stop.should_stop(n)
                sync_now = log_now or save_now or eval_now or stop_now
                window.extend(_check(pending, keep=0 if sync_now else 1))
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
        checkpointer.wait()
        checkpointer.close()


def _check(pending: list, keep: int) -> list[dict]:
    """Fetch the metrics of all but the last ``keep`` pending steps; raise on a non-finite loss."""
    out = []
    while len(pending) > keep:
        n, m = pending.pop(0)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        if not m.pop("finite") or not math.isfinite(m["loss"]):
            raise DprJaxError(
                f"the loss became {m['loss']} at step {n} (learning rate {m['lr']:.3g}, gradient norm "
                f"{m['grad_norm']:.3g}); stopped without saving that state - the last checkpoint is intact. "
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
        return {"step": step, "epoch": epoch, "loss": mean("loss"), "accuracy": mean("accuracy"),
                "grad_norm": mean("grad_norm"), "lr": rows[-1]["lr"] if rows else 0.0,
                "pairs_per_s": None if (pps := self.pairs_per_s(batch_size)) is None else round(pps, 2)}
