"""The quickstart: the whole DPR story on SQuAD in minutes, as the same ``dpr-jax`` commands a user types.

Stages (each prints its command first, and is skipped when its output already exists, so an
interrupted quickstart picks up where it stopped):

1. ``data squad``: the article split of the SQuAD v1.1 dev set (36 train / 12 eval articles).
2. ``bm25``: BM25 over all 2,067 paragraphs for the 2,142 eval questions.
3. ``mine``: BM25 hard negatives for the training questions (DPR's recipe).
4. ``encode`` + ``search`` with all-MiniLM-L6-v2 as is (zero-shot dense).
5. ``train``: a short DPR fine-tune of all-MiniLM-L6-v2 (``configs/squad_cpu.py``: ``configs/squad.py`` cut
   to 20 steps of 32 questions and 128-token passages), global in-batch softmax with one BM25
   hard negative per question, with GradCache so it fits a laptop's memory.
6. ``encode`` + ``search`` with the fine-tuned run directory.
7. ``hybrid``: BM25 + fine-tuned dense fusion.
8. ``evaluate``: one table (top-1/5/20/100, MRR@10) printed and written to ``results.md``/``results.json``,
   and the embedding-space and training plots next to it.

All stages run in this one process, so each is followed by :func:`~dpr_jax.memory.release_memory`
(compiled programs of the stage dropped, freed heap returned to the OS): the run's peak memory is
that of its largest stage, not their sum. Each stage prints its time and the process's peak RSS so far.

``recipe="best"`` (``dpr-jax quickstart --recipe best``, default workdir ``runs/quickstart-best``) runs
the best recipe of the README instead, SPAR's one concatenated index (:data:`BEST_STAGES`): the split
with a dev slice and a held-out slice of the training articles, the same DPR fine-tune, the lexical
model Λ (``configs/spar_lambda.py``) distilled from BM25 on pseudo-queries drawn from the corpus plus
BM25-labelled training questions, ``w`` tuned on the dev slice (``dpr-jax concat``), ONE index of the
concatenated vectors searched with no BM25 at query time, and the no-collapse check on the held-out
articles (recall@100 of zero-shot, fine-tuned and concatenated models on their own corpus).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from dpr_jax import storage
from dpr_jax.errors import DprJaxError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TRAIN_CONFIG = "squad_cpu"  # a shipped config, by name: installed with the package, no checkout needed
KS = (1, 5, 20, 100)


def _run(argv: list[str], done: Path | None) -> None:
    """Run one ``dpr-jax`` command in-process, unless ``done`` already exists.

    The command's own module parses ``argv`` and runs, exactly as ``dpr-jax`` would dispatch it (the
    quickstart talks to the command modules, not to :mod:`dpr_jax.cli`, which dispatches to it).
    """
    import argparse
    import importlib

    from dpr_jax.memory import peak_rss_bytes, release_memory

    shown = "dpr-jax " + " ".join(shlex.quote(a) for a in argv)
    if done is not None and done.exists():
        print(f"[skip] {shown}   ({done} exists)", file=sys.stderr, flush=True)
        return
    print(f"\n$ {shown}", file=sys.stderr, flush=True)
    start = time.time()
    name, *rest = argv
    module = importlib.import_module(f"dpr_jax.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"dpr-jax {name}")
    module.add_arguments(parser)
    args, extra = parser.parse_known_args(rest)
    if extra and not getattr(module, "ACCEPTS_EXTRA", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        status = int(module.run(args) or 0)
    except DprJaxError as e:
        raise DprJaxError(f"quickstart stage failed: {shown}: {e}") from None
    release_memory(clear_compiled=True)
    if status:
        raise DprJaxError(f"quickstart stage failed (exit {status}): {shown}")
    print(f"  ({time.time() - start:.0f} s; peak RSS so far {peak_rss_bytes() / 2**30:.2f} GiB)",
          file=sys.stderr, flush=True)


def _dense(model: str, data, work, name: str, max_length: int, questions: str = "eval.jsonl"):
    """``encode`` the passages of ``data`` with ``model``, then ``search`` its ``questions``; returns the run."""
    index, run = work / "index" / name, work / "runs" / f"{name}.json"
    _run(["encode", "--model", model, "--passages", str(data / "passages.jsonl"), "--out", str(index),
          "--max-length", str(max_length)], index / "meta.json")
    _run(["search", "--model", model, "--index", str(index), "--questions", str(data / questions),
          "--k", "100", "--out", str(run)], run)
    return run


RECIPES = ("dpr", "best")
BEST_STAGES = ("data squad (4 dev + 4 held-out training articles)", "bm25", "zero-shot encode/search",
               "mine + DPR fine-tune (configs/squad_cpu.py) + encode/search", "pseudo-queries (two span samplings + "
               "BM25-labelled training questions)", "Λ (configs/spar_lambda.py) + encode/search",
               "concat: w tuned on dev", "ONE concatenated index: encode/search", "hybrid", "held-out check")


def run_quickstart(workdir=None, squad: str | None = None, train_steps: int | None = None,
                   passage_max_length: int = 256, skip_train: bool = False, recipe: str = "dpr") -> dict:
    """Run every stage into ``workdir``; returns ``{method: metrics}``."""
    if recipe not in RECIPES:
        raise DprJaxError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
    if recipe == "best":
        if skip_train:
            raise DprJaxError("--no-train does not apply to --recipe best (it is a training recipe)")
        return run_best(workdir or "runs/quickstart-best", squad=squad, train_steps=train_steps,
                        passage_max_length=passage_max_length)
    workdir = workdir or "runs/quickstart"
    from dpr_jax.eval.metrics import format_table
    from dpr_jax.index.runs import read_run
    from dpr_jax.eval.metrics import evaluate_run

    work = storage.as_path(workdir)
    data, runs = work / "data", work / "runs"
    started = time.time()
    squad_args = ["--squad", squad] if squad else []
    _run(["data", "squad", *squad_args, "--out", str(data)], data / "split.json")
    _run(["bm25", "--passages", str(data / "passages.jsonl"), "--questions", str(data / "eval.jsonl"),
          "--k", "100", "--out", str(runs / "bm25.json")], runs / "bm25.json")
    methods = {"BM25": runs / "bm25.json"}
    methods["dense, zero-shot MiniLM"] = _dense(MODEL, data, work, "zeroshot", passage_max_length)
    if not skip_train:
        train_file = data / "train-bm25.jsonl"
        _run(["mine", "--method", "bm25", "--passages", str(data / "passages.jsonl"), "--train",
              str(data / "train.jsonl"), "--out", str(train_file), "--num", "3"], train_file)
        settings = {"data.dir": data, "data.train": train_file}
        if train_steps:
            settings["train.num_steps"] = train_steps
        overrides = [f"--config.{key}={value}" for key, value in settings.items()]
        train_dir = work / "train"
        _run(["train", "--config", TRAIN_CONFIG, "--workdir", str(train_dir), *overrides],
             None)  # a finished run resumes to its end at once
        methods["dense, DPR fine-tuned"] = _dense(str(train_dir), data, work, "finetuned", passage_max_length)
        _run(["hybrid", "--dense", str(methods["dense, DPR fine-tuned"]), "--sparse", str(runs / "bm25.json"),
              "--alpha", "1.0", "--out", str(runs / "hybrid.json")], runs / "hybrid.json")
        methods["hybrid, BM25 + fine-tuned"] = runs / "hybrid.json"
    else:
        _run(["hybrid", "--dense", str(methods["dense, zero-shot MiniLM"]), "--sparse", str(runs / "bm25.json"),
              "--alpha", "1.0", "--out", str(runs / "hybrid-zeroshot.json")], runs / "hybrid-zeroshot.json")
        methods["hybrid, BM25 + zero-shot"] = runs / "hybrid-zeroshot.json"

    results = {name: evaluate_run(read_run(path), ks=KS) for name, path in methods.items()}
    table = format_table(results, KS)
    storage.write_json(work / "results.json", {"results": results, "runs": {k: str(v) for k, v in methods.items()},
                                       "seconds": round(time.time() - started)})
    with storage.atomic_open(work / "results.md") as f:
        f.write(f"SQuAD v1.1 dev, 12 held-out articles ({next(iter(results.values()))['num_questions']} questions),"
                f" corpus of all 2,067 paragraphs.\n\n{table}\n")
    _plots(work, data, skip_train)
    print(f"\n{table}\n\nwritten to {work}/results.md ({time.time() - started:.0f} s)")
    return results


def _concat_files(out: Path, parts: list[Path]) -> None:
    """``out`` = the training records of ``parts`` one after the other (written atomically)."""
    if out.exists():
        print(f"[skip] cat {' '.join(map(str, parts))} > {out}   ({out} exists)", file=sys.stderr)
        return
    with storage.atomic_open(out) as f:
        for part in parts:
            f.write(part.read_text(encoding="utf-8"))


def run_best(workdir="runs/quickstart-best", squad: str | None = None, train_steps: int | None = None,
             passage_max_length: int = 256) -> dict:
    """The README's best recipe end to end (see the module docstring); returns ``{method: metrics}``."""
    from dpr_jax.eval.metrics import evaluate_run, format_table
    from dpr_jax.index.runs import read_run

    work = storage.as_path(workdir)
    data, runs = work / "data", work / "runs"
    passages, heldout = data / "passages.jsonl", data / "heldout"
    started = time.time()
    squad_args = ["--squad", squad] if squad else []
    _run(["data", "squad", *squad_args, "--out", str(data), "--dev-articles", "4", "--heldout-articles", "4"],
         data / "split.json")
    _run(["bm25", "--passages", str(passages), "--questions", str(data / "eval.jsonl"), "--k", "100",
          "--out", str(runs / "bm25.json")], runs / "bm25.json")
    methods = {"BM25": runs / "bm25.json"}
    methods["dense, zero-shot MiniLM"] = _dense(MODEL, data, work, "zeroshot", passage_max_length)

    train_file = data / "train-bm25.jsonl"
    _run(["mine", "--method", "bm25", "--passages", str(passages), "--train", str(data / "train.jsonl"),
          "--out", str(train_file), "--num", "3"], train_file)
    dpr = work / "train"
    steps = [f"--config.train.num_steps={train_steps}"] if train_steps else []
    _run(["train", "--config", TRAIN_CONFIG, "--workdir", str(dpr), f"--config.data.dir={data}",
          f"--config.data.train={train_file}", *steps], None)
    methods["dense, DPR fine-tuned"] = _dense(str(dpr), data, work, "finetuned", passage_max_length)

    pieces = []
    for name, extra in (("pseudo-spans", ["--seed", "0"]), ("pseudo-short-spans", ["--seed", "1", "--min-words", "4",
                                                                                   "--max-words", "12"]),
                        ("train-questions-bm25", ["--questions", str(data / "train.jsonl")])):
        out = data / f"{name}.jsonl"
        _run(["data", "pseudo-queries", "--passages", str(passages), "--out", str(out), "--exclude",
              str(heldout / "passages.jsonl"), *extra], out)
        pieces.append(out)
    lambda_train = data / "lambda-train.jsonl"
    _concat_files(lambda_train, pieces)
    lam = work / "lambda"
    _run(["train", "--config", "spar_lambda", "--workdir", str(lam),
          f"--config.data.train={lambda_train}", f"--config.eval.questions={data / 'dev.jsonl'}",
          f"--config.eval.passages={passages}"], None)
    methods["dense, Λ alone (lexical)"] = _dense(str(lam), data, work, "lambda", passage_max_length)

    concat = work / "concat"
    _run(["concat", "--dense", str(dpr), "--lexical", str(lam), "--out", str(concat), "--questions",
          str(data / "dev.jsonl"), "--dense-index", str(work / "index" / "finetuned"), "--lexical-index",
          str(work / "index" / "lambda"), "--passages", str(passages)], concat / "concat.json")
    methods["dense, DPR ⊕ Λ (one index)"] = _dense(str(concat), data, work, "concat", passage_max_length)
    _run(["hybrid", "--dense", str(methods["dense, DPR fine-tuned"]), "--sparse", str(runs / "bm25.json"),
          "--alpha", "1.0", "--out", str(runs / "hybrid.json")], runs / "hybrid.json")
    methods["hybrid, BM25 + fine-tuned"] = runs / "hybrid.json"

    # no collapse elsewhere: articles no training saw, searched in their own corpus
    heldout_runs = {}
    for tag, name, model in (("zeroshot", "dense, zero-shot MiniLM", MODEL), ("finetuned", "dense, DPR fine-tuned",
                                                                             str(dpr)),
                             ("concat", "dense, DPR ⊕ Λ (one index)", str(concat))):
        heldout_runs[name] = _dense(model, heldout, work, f"heldout-{tag}", passage_max_length, "questions.jsonl")

    results = {name: evaluate_run(read_run(path), ks=KS) for name, path in methods.items()}
    heldout_results = {name: evaluate_run(read_run(path), ks=KS) for name, path in heldout_runs.items()}
    table, heldout_table = format_table(results, KS), format_table(heldout_results, KS)
    storage.write_json(work / "results.json", {"results": results, "heldout": heldout_results,
                                       "runs": {k: str(v) for k, v in methods.items()},
                                       "seconds": round(time.time() - started)})
    n_eval = next(iter(results.values()))["num_questions"]
    n_held = next(iter(heldout_results.values()))["num_questions"]
    with storage.atomic_open(work / "results.md") as f:
        f.write(f"SQuAD v1.1 dev, 12 held-out articles ({n_eval} questions), corpus of all 2,067 paragraphs.\n\n"
                f"{table}\n\nNo-collapse check: {n_held} questions of 4 training articles held out from every "
                f"training step, searched in their own paragraphs.\n\n{heldout_table}\n")
    from dpr_jax import plots

    plots.plot_training(dpr, work / "training.png")
    plots.plot_training(lam, work / "training-lambda.png")
    print(f"\n{table}\n\nheld-out articles:\n{heldout_table}\n\nwritten to {work}/results.md "
          f"({time.time() - started:.0f} s)")
    return results


def _plots(work, data, skip_train: bool) -> None:

    """The embedding-space picture (fine-tuned model, else zero-shot) and the training curves."""
    from dpr_jax import plots
    from dpr_jax.models.loading import load_model

    loaded = load_model(str(work / "train") if not skip_train else MODEL)
    plots.plot_embeddings(loaded, data / "eval.jsonl", data / "passages.jsonl", work / "embeddings.png")
    if not skip_train:
        plots.plot_training(work / "train", work / "training.png")


def load_results(workdir) -> dict:
    return json.loads((storage.as_path(workdir) / "results.json").read_text(encoding="utf-8"))["results"]
