"""Turning a training config into the things the loop runs: data, model, batches, optimizer, step, evaluator.

:func:`prepare_run` does everything :func:`dpr_jax.train.loop.train` needs before its first step
and returns it as one :class:`RunSetup`, so the loop module reads as a loop. In order:

1. resolve the data (preparing the SQuAD split into ``WORKDIR/data`` when the config asks), index
   the training file in ``WORKDIR/data-index`` and validate its records, each process its share
   (:mod:`dpr_jax.data.host_local`; bad ones fail the run, or are skipped, reported with file:line
   and listed in the run directory);
2. build the initial dual encoder (pretrained or random init) and write ``config.json``,
   ``model.json`` and the tokenizer into the run directory;
3. the deterministic batches, the step count, the optimizer and schedule, the step options (after
   checking that the objective can use the records and the model: teacher scores for distillation,
   Matryoshka dims within the model's), and the in-training evaluator when ``eval.every`` is set.

Config values are read here and nowhere below: the model, data and step modules take plain arguments.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import optax

from dpr_jax import distributed, storage
from dpr_jax.data.batches import BatchSpec, TrainBatches
from dpr_jax.errors import DprJaxError
from dpr_jax.models import run_dir
from dpr_jax.train.config import auto_bool, auto_value, to_json
from dpr_jax.train.loss import LossOptions
from dpr_jax.train.optim import make_optimizer
from dpr_jax.train.step import StepOptions


@dataclasses.dataclass
class DataPaths:
    """Where the data is: local :class:`~pathlib.Path` objects, or etils ``epath.Path`` for URLs."""

    train: Path
    eval_questions: Path | None
    eval_passages: Path | None


@dataclasses.dataclass
class RunSetup:
    """Everything the training loop needs, built from a config."""

    paths: DataPaths
    records: object  # LazyRecords: the valid training records, parsed when a batch uses them
    loaded: object  # LoadedModel: the initial weights, tokenizer and architecture
    batches: TrainBatches
    total_steps: int
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    step_options: StepOptions
    data_meta: dict  # the data layout a resume checks against the checkpoint's


def log(msg: str) -> None:
    """A line on stderr from process 0 (the trainer's voice)."""
    if distributed.is_main_process():
        print(f"[dpr-jax train] {msg}", file=sys.stderr, flush=True)


def resolve_data(config, workdir) -> DataPaths:
    """Where the training records and the eval set are, preparing the SQuAD split if asked.

    Every path may be local or a URL (``gs://``); the split goes into ``WORKDIR/data`` either way.
    """
    d = storage.as_path(config.data.dir) if config.data.dir else None
    if not config.data.train and d is None:
        if not config.data.prepare_squad:
            raise DprJaxError("no training data: set --config.data.train=FILE or --config.data.dir=DIR "
                              "(a directory made by `dpr-jax data squad`)")
        d = run_dir.data_dir(workdir)
        if not (d / "split.json").exists():
            from dpr_jax import settings
            from dpr_jax.data.squad import prepare_squad

            squad = storage.as_path(config.data.squad_file) if config.data.squad_file else settings.squad_dev_path()
            if not squad.exists():
                raise DprJaxError(f"SQuAD file {squad} not found: set --config.data.squad_file, DPR_JAX_DATA, "
                                  f"or --config.data.dir to a `dpr-jax data squad` output")
            if distributed.is_main_process():
                log(f"preparing the SQuAD split from {squad} into {d}")
                prepare_squad(squad, d)
            distributed.sync("dpr_jax_prepare_squad")
    train = storage.as_path(config.data.train) if config.data.train else d / "train.jsonl"
    if not train.exists():
        raise DprJaxError(f"training data {train} does not exist")

    def optional(explicit: str, name: str) -> Path | None:
        if explicit:
            if not storage.as_path(explicit).exists():
                raise DprJaxError(f"eval file {explicit} does not exist")
            return storage.as_path(explicit)
        return d / name if d is not None and (d / name).exists() else None

    return DataPaths(train, optional(config.eval.questions, "eval.jsonl"), optional(config.eval.passages,
                                                                                     "passages.jsonl"))


def read_records(path, on_error: str, workdir, spec: BatchSpec):
    """The training records (:func:`dpr_jax.data.host_local.read_training_data`: each process checks its
    share, all agree); with ``on_error="skip"`` the bad ones are reported (and listed in the workdir)."""
    from dpr_jax.data.host_local import read_training_data

    data = read_training_data(path, run_dir.data_index_dir(workdir), spec, on_error=on_error,
                              progress=distributed.is_main_process())
    problems = data.problems
    if problems:
        log(f"skipped {len(problems)} bad training record(s) of {len(problems) + len(data.records)} in {path}:")
        for p in problems[:5]:
            log(f"  {p}")
        if distributed.is_main_process():
            listed = run_dir.write_skipped_records(workdir, problems)
            log(f"  (all {len(problems)} listed in {listed})")
    return data


def build_model(config):
    """The initial dual encoder (:class:`~dpr_jax.models.loading.LoadedModel`) the config describes."""
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model, load_model, resolve_model_dir
    from dpr_jax.models.tokenizer import TextTokenizer

    m = config.model
    pooling = auto_value(m.pooling)
    normalize = auto_bool(m.normalize)
    projection = None if m.projection_dim < 0 else m.projection_dim
    segments = auto_value(m.passage_segment_ids)
    if m.init == "pretrained":
        from dpr_jax.models.concat import is_concat_dir

        if is_concat_dir(m.name):
            raise DprJaxError(f"model.name {m.name} is a concatenated model (concat.json): train its dense or "
                              f"lexical part instead, then `dpr-jax concat` them again")
        return load_model(m.name, pooling=pooling, normalize=normalize, shared=m.shared,
                          projection_dim=projection, dtype=m.dtype, seed=config.seed, passage_segment_ids=segments)
    # random init: the architecture from model.bert, the vocabulary from model.tokenizer
    tokenizer_spec = m.tokenizer or m.name
    tokenizer = TextTokenizer.from_dir(resolve_model_dir(tokenizer_spec))
    b = m.bert
    bert = BertConfig(vocab_size=b.vocab_size or len(tokenizer.hf), hidden_size=b.hidden_size,
                      num_hidden_layers=b.num_hidden_layers, num_attention_heads=b.num_attention_heads,
                      intermediate_size=b.intermediate_size, max_position_embeddings=b.max_position_embeddings,
                      hidden_dropout_prob=b.hidden_dropout_prob,
                      attention_probs_dropout_prob=b.attention_probs_dropout_prob, pad_token_id=tokenizer.pad_id)
    enc = EncoderConfig(pooling=pooling or "cls", normalize=bool(normalize), projection_dim=projection or 0,
                        dtype=m.dtype, passage_segment_ids=segments or "pair")
    return init_random_model(bert, enc, tokenizer, shared=m.shared, seed=config.seed,
                             source=f"random:{tokenizer_spec}")


def batch_spec(config) -> BatchSpec:
    d = config.data
    return BatchSpec(global_batch_size=config.train.batch_size, question_max_length=d.question_max_length,
                     passage_max_length=d.passage_max_length, hard_negatives=d.hard_negatives,
                     random_negatives=d.random_negatives, shuffle=d.shuffle, shuffle_positives=d.shuffle_positives,
                     seed=config.seed)


def total_steps_of(config, steps_per_epoch: int) -> int:
    return config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * steps_per_epoch


def step_options(config, group_size: int, normalized: bool) -> StepOptions:
    """The step's static options; ``normalized``: the model L2-normalises its vectors."""
    t = config.train
    loss = LossOptions(group_size=group_size, temperature=t.temperature, mask_false_negatives=t.mask_false_negatives,
                       kind=t.loss, contrastive_weight=float(t.contrastive_weight),
                       teacher_temperature=t.teacher_temperature, dims=tuple(int(d) for d in t.matryoshka_dims),
                       dim_weights=tuple(float(w) for w in t.matryoshka_weights), normalized=normalized)
    return StepOptions(loss, dropout=config.model.dropout, gradcache=t.gradcache,
                       question_chunk=t.gradcache_question_chunk, passage_chunk=t.gradcache_passage_chunk,
                       nan_at_step=t.nan_at_step)


def check_loss_inputs(config, batches: TrainBatches, model_dim: int) -> None:
    """Refuse what the objective cannot use before any compute: Matryoshka dims beyond the model's
    dimension, distillation without teacher scores on the positives; say where scores are partial."""
    t = config.train
    too_big = [d for d in t.matryoshka_dims if d > model_dim]
    if too_big:
        raise DprJaxError(f"train.matryoshka_dims {tuple(t.matryoshka_dims)}: {too_big} exceed the model's "
                          f"{model_dim} dimensions")
    if t.loss == "contrastive":
        return
    stats = batches.stats
    if stats.no_positive_score:
        raise DprJaxError(
            f"train.loss={t.loss} needs a teacher score (a ctx 'score') on every positive the batches can draw; "
            f"{stats.no_positive_score} of {stats.records} records have none, e.g. {stats.first_no_positive_score}. "
            f"`dpr-jax mine` writes scores for positives and mined negatives.")
    if stats.placeholder_scores_only:
        log("warning: every positive has teacher score 1000, DPR's placeholder rather than a retriever's score; "
            "re-mine the file with `dpr-jax mine` for real teacher scores")
    if stats.partly_scored:
        log(f"note: {stats.partly_scored} of {stats.records} records can draw negatives without a teacher score (random "
            f"negatives or fallbacks, ctxs without 'score'); those are left out of the {t.loss} term and stay in the "
            f"contrastive one")


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


def prepare_run(config, workdir, mesh) -> RunSetup:
    """Data, initial model, batches, optimizer and step options of the run ``config`` describes.

    Process 0 writes ``config.json``, ``model.json`` and the tokenizer into ``workdir``.
    """
    paths = resolve_data(config, workdir)
    spec = batch_spec(config)
    data = read_records(paths.train, config.data.on_error, workdir, spec)
    records = data.records
    loaded = build_model(config)
    if distributed.is_main_process():
        run_dir.write_config(workdir, to_json(config))
        run_dir.write_model_description(workdir, loaded)
    batches = TrainBatches(records, loaded.tokenizer, spec, stats=data.stats)
    check_layout(config, mesh, batches.group_size)
    check_loss_inputs(config, batches, loaded.model.dim)
    total_steps = total_steps_of(config, batches.steps_per_epoch)
    t = config.train
    optimizer, schedule = make_optimizer(t.learning_rate, warmup_steps=t.warmup_steps, total_steps=total_steps,
                                         weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, b1=t.adam_b1,
                                         b2=t.adam_b2, eps=t.adam_eps)
    data_meta = {"seed": config.seed, "global_batch_size": batches.spec.global_batch_size,
                 "num_records": len(records), "steps_per_epoch": batches.steps_per_epoch,
                 "group_size": batches.group_size, "total_steps": total_steps}
    return RunSetup(paths, records, loaded, batches, total_steps, optimizer, schedule,
                    step_options(config, batches.group_size, loaded.encoder_config.normalize), data_meta)


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
