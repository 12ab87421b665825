"""Training speed: the dpr-jax train step vs sentence-transformers ``MultipleNegativesRankingLoss`` + AdamW.

Both train the same model (all-MiniLM-L6-v2 by default, one shared tower, mean pooling, L2
normalisation) on the same real SQuAD (question, gold paragraph) pairs, batch 32, questions
truncated to 64 tokens and passages (text only) to 128, in-batch negatives only, dropout on,
AdamW (lr 2e-5, weight decay 0.01, gradient clipping at norm 1), a constant learning rate.
Every batch holds 32 distinct paragraphs (one question per paragraph), so false-negative masking
has nothing to mask and both losses are the same function.

- dpr-jax: ``make_train_step`` (:mod:`dpr_jax.train.step`) with ``StepOptions(LossOptions(group_size=1,
  temperature=1/20))``, batches from :class:`dpr_jax.data.batches.TrainBatches` (padded to the
  maximum lengths, as training does), dispatched asynchronously, synchronised at the end of a round.
- sentence-transformers: a plain PyTorch loop, no Trainer: ``model.preprocess`` (``tokenize`` on
  older versions; pads to the longest sequence of the batch), ``MultipleNegativesRankingLoss``
  (scale 20 on cosine similarity), ``backward``, ``clip_grad_norm_``, ``AdamW.step``, ``zero_grad``:
  the work ``SentenceTransformerTrainer`` does per step, without its data-loader and logging.

Tokenisation is inside each step for both. Contenders alternate for several rounds of
``--steps`` steps each (see ``bench/common.py``); dpr-jax's first step (the jit compile) is timed
separately. Before timing, the first-step loss of both is computed with dropout off from the same
weights on the same batch and printed with the difference. ``--device gpu`` adds MFU (training
FLOPs = 3 x forward FLOPs over real tokens; see ``bench/encode_speed.py``); ``--model DIR
--random-init`` runs without installed weights.

    python bench/train_speed.py                         # CPU: 3 rounds x 3 steps of batch 32
    python bench/train_speed.py --device gpu --dtype bfloat16 --steps 20 --batch-size 32 128

Writes bench/results/train_speed[_gpu].md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (DEFAULT_MODEL, FLOP_FORMULA, PACKAGES, CompileTimer, alternate, bert_shape,  # noqa: E402
                          device_title, portable_config,
                          check_jax_device, device_name, fair_blas_env, forward_flops, log, machine_info, machine_line,
                          markdown_table, peak_tflops, prepare_model_dir, select_platform, squad_articles, torch_device,
                          write_results)

SCALE = 20.0  # MultipleNegativesRankingLoss's default scale; dpr-jax's temperature is 1/SCALE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--random-init", action="store_true", help="same architecture, random weights")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="compute dtype (float32 params and optimizer; torch.autocast for bfloat16)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[32])
    p.add_argument("--question-length", type=int, default=64)
    p.add_argument("--passage-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="training steps per contender per round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one untimed warm-up round")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--squad", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss-tolerance", type=float, default=None,
                   help="largest accepted |loss difference| (default 1e-4 float32, 5e-2 bfloat16)")
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--name", default=None, help="results file stem (default train_speed[_gpu])")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--keep-openblas-env", action="store_true")
    return p.parse_args(argv)


def squad_records(path, seed: int):
    """One TrainRecord per SQuAD paragraph (a seeded choice of its questions), in a seeded order.

    Passages carry no title so both libraries see exactly the paragraph text.
    """
    import numpy as np

    from dpr_jax.data.records import Passage, TrainRecord

    rng = np.random.default_rng(seed)
    records = []
    for article in squad_articles(path):
        for i, para in enumerate(article["paragraphs"]):
            if not para["qas"]:
                continue
            qa = para["qas"][rng.integers(len(para["qas"]))]
            passage = Passage(id=f"{article['title']}#{i}", text=para["context"], title="")
            answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
            records.append(TrainRecord(question=qa["question"], answers=answers, positives=(passage,),
                                       negatives=(), hard_negatives=(), source=f"squad:{qa['id']}"))
    return [records[i] for i in rng.permutation(len(records))]


class JaxTrainer:
    """The dpr-jax side: a train step, its state, and the deterministic batches."""

    def __init__(self, loaded, batches, mesh, lr: float, temperature: float, dropout: bool):
        import jax
        import jax.numpy as jnp

        from dpr_jax.train.optim import make_optimizer
        from dpr_jax.models.functional import FunctionalModel
        from dpr_jax.train.loss import LossOptions
        from dpr_jax.train.step import StepOptions, init_train_state, make_train_step

        fmodel, params = FunctionalModel.split(loaded.model)
        params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)  # the step donates its state
        optimizer, schedule = make_optimizer(lr, warmup_steps=0, total_steps=10**9, weight_decay=0.01,
                                             max_grad_norm=1.0)
        opts = StepOptions(LossOptions(group_size=1, temperature=temperature), dropout=dropout)
        self.step_fn = make_train_step(fmodel, mesh, optimizer, schedule, opts)
        self.state = init_train_state(params, optimizer, mesh)
        self.batches, self.mesh = batches, mesh
        self.key = jax.random.key(0)

    def run(self, steps) -> dict:
        """Run the given step indices; block on the last metrics; return them as floats."""
        import jax

        from dpr_jax.mesh import global_batch

        metrics = None
        for s in steps:
            self.state, metrics = self.step_fn(self.state, global_batch(self.batches.batch(s), self.mesh), self.key)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}


class STTrainer:
    """The sentence-transformers side: MNRL + AdamW in a plain PyTorch loop."""

    def __init__(self, model_dir, device: str, dtype: str, lr: float, qlen: int, plen: int):
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        except ImportError:  # sentence-transformers < 6.2
            from sentence_transformers.losses import MultipleNegativesRankingLoss
        self.torch = torch
        self.model = SentenceTransformer(str(model_dir), device=device)
        self.loss = MultipleNegativesRankingLoss(self.model, scale=SCALE)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        self.device, self.qlen, self.plen = device, qlen, plen
        self.autocast = (lambda: torch.autocast(device_type="cuda" if device == "cuda" else "cpu",
                                                dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
        self.preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    def features(self, texts, max_length):
        self.model.max_seq_length = max_length
        feats = self.preprocess(list(texts))
        return {k: v.to(self.device) if self.torch.is_tensor(v) else v for k, v in feats.items()}

    def loss_value(self, questions, passages) -> float:
        with self.autocast():
            return self.loss([self.features(questions, self.qlen), self.features(passages, self.plen)], None)

    def first_loss(self, questions, passages) -> float:
        self.model.eval()
        with self.torch.no_grad():
            value = float(self.loss_value(questions, passages))
        self.model.train()
        return value

    def run(self, examples_per_step) -> float:
        loss = None
        for questions, passages in examples_per_step:
            loss = self.loss_value(questions, passages)
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())  # synchronises the device


def texts_of(batches, step):
    ex = batches.examples(step)
    return [e.question for e in ex], [e.passages[0].text for e in ex]


def real_lengths(tokenizer, batches, steps, qlen, plen):
    q, p = [], []
    for s in steps:
        questions, passages = texts_of(batches, s)
        q += [len(e.ids) for e in tokenizer.encode_raw(questions, qlen)]
        p += [len(e.ids) for e in tokenizer.encode_raw(passages, plen)]
    return q, p


def run_batch_size(args, model_dir, loaded, records, batch_size, st_dev, shape, peak, compile_timer):
    import jax
    import numpy as np

    from dpr_jax.data.batches import BatchSpec, TrainBatches
    from dpr_jax.mesh import make_mesh

    spec = BatchSpec(global_batch_size=batch_size, question_max_length=args.question_length,
                     passage_max_length=args.passage_length, hard_negatives=0, random_negatives=0, shuffle=False,
                     seed=args.seed)
    batches = TrainBatches(records, loaded.tokenizer, spec)
    total_steps = 1 + (1 + args.rounds) * args.steps
    if total_steps > batches.steps_per_epoch:
        log(f"note: {total_steps} steps exceed one epoch ({batches.steps_per_epoch}); batches repeat")
    mesh = make_mesh()
    cell = {"batch_size": batch_size, "steps_per_round": args.steps, "devices": mesh.devices.size}

    # 1. First-step loss, dropout off, same weights and batch.
    check = JaxTrainer(loaded, batches, mesh, args.lr, 1.0 / SCALE, dropout=False)
    t0 = time.perf_counter()
    jax_loss = check.run([0])["loss"]
    cell["dpr_jax_nodropout_first_step_s"] = time.perf_counter() - t0
    del check
    st = None
    if not args.skip_st:
        st = STTrainer(model_dir, st_dev, args.dtype, args.lr, args.question_length, args.passage_length)
        st_loss = st.first_loss(*texts_of(batches, 0))
        cell |= {"first_loss_dpr_jax": jax_loss, "first_loss_st": st_loss, "first_loss_abs_diff": abs(jax_loss - st_loss)}
        log(f"batch {batch_size}: first-step loss (dropout off) dpr-jax {jax_loss:.6f}  sentence-transformers "
            f"{st_loss:.6f}  |diff| {abs(jax_loss - st_loss):.2e}")

    # 2. Timed training with dropout on.
    trainer = JaxTrainer(loaded, batches, mesh, args.lr, 1.0 / SCALE, dropout=True)
    compile_timer.reset()
    t0 = time.perf_counter()
    trainer.run([0])
    cell["dpr_jax_first_step_s"] = time.perf_counter() - t0
    cell["dpr_jax_compile_s"] = compile_timer.seconds
    counter = {"jax": 1, "st": 1}

    def next_steps(who):
        s0 = counter[who]
        counter[who] += args.steps
        return [s % batches.steps_per_epoch for s in range(s0, s0 + args.steps)]

    contenders = {"dpr-jax": lambda: trainer.run(next_steps("jax"))["loss"]}
    if st is not None:
        st.run([texts_of(batches, 0)])  # its first step (allocator, optimizer state) outside the rounds
        contenders["sentence-transformers"] = lambda: st.run([texts_of(batches, s) for s in next_steps("st")])
    res = alternate(contenders, args.rounds, baseline="sentence-transformers" if st is not None else "dpr-jax",
                    log=lambda m: log(f"batch {batch_size} {m}"))
    cell["dpr_jax_compile_s_during_rounds"] = compile_timer.seconds - cell["dpr_jax_compile_s"]

    q, p = real_lengths(loaded.tokenizer, batches, range(1, total_steps), args.question_length, args.passage_length)
    flops_per_pair = 3 * (forward_flops(shape, q) + forward_flops(shape, p)) / len(q)
    cell |= {"real_tokens_per_pair": (sum(q) + sum(p)) / len(q),
             "dpr_jax_tokens_per_pair": args.question_length + args.passage_length,
             "train_flops_per_pair": flops_per_pair, "contenders": {}}
    pairs = batch_size * args.steps
    for name in contenders:
        med = res["median_s"][name]
        row = {"median_s": med, "times_s": res["times_s"][name], "pairs_per_s": pairs / med,
               "tflop_per_s": flops_per_pair * pairs / med / 1e12, "last_loss": res["result"][name]}
        if peak:
            row["mfu"] = row["tflop_per_s"] / peak
        cell["contenders"][name] = row
    if st is not None:
        cell["speedup_vs_st"] = 1.0 / res["ratio_vs_baseline"]["dpr-jax"]
        log(f"batch {batch_size}: speed-up {cell['speedup_vs_st']:.2f}x")
    cell["real_tokens_mean"] = {"question": float(np.mean(q)), "passage": float(np.mean(p))}
    return cell


def main(argv=None) -> int:
    args = parse_args(argv)
    fair_blas_env(args.keep_openblas_env)
    select_platform(args.device)

    import jax
    import torch

    from dpr_jax.models.loading import load_model

    platform = check_jax_device(args.device)
    st_dev = torch_device(args.device)
    dev_name = device_name(platform)
    peak = peak_tflops(dev_name, args.dtype, args.peak_tflops) if platform == "gpu" else None
    info = machine_info(PACKAGES)
    info |= {"jax_devices": [str(d) for d in jax.devices()], "device": dev_name, "torch_device": st_dev,
             "torch_threads": torch.get_num_threads()}
    log(machine_line(info))
    tol = args.loss_tolerance or (1e-4 if args.dtype == "float32" else 5e-2)
    records = squad_records(args.squad, args.seed)
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        model_dir, model_desc = prepare_model_dir(args.model, args.random_init, args.seed, Path(tmp))
        shape = bert_shape(model_dir)
        loaded = load_model(str(model_dir), dtype=args.dtype, shared=True, pooling="mean", normalize=True)
        log(f"model: {model_desc}; {loaded.describe()}; {len(records)} (question, paragraph) pairs")
        compile_timer = CompileTimer()
        cells = [run_batch_size(args, model_dir, loaded, records, bs, st_dev, shape, peak, compile_timer)
                 for bs in args.batch_size]
    ok = all(c.get("first_loss_abs_diff", 0.0) <= tol for c in cells)
    md = render(args, cells, info, model_desc, peak, tol, platform)
    name = args.name or ("train_speed" if platform == "cpu" else "train_speed_gpu")
    data = {"config": portable_config(args), "model": model_desc, "shape": shape,
            "flop_formula": FLOP_FORMULA, "peak_tflops": peak, "machine": info, "cells": cells, "loss_check_ok": ok}
    md_path, _ = write_results(name, md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}")
    return 0 if ok else 1


def render(args, cells, info, model_desc, peak, tol, platform) -> str:
    mfu = peak is not None
    header = ["batch", "contender", "median s / round", "pairs/s", "TFLOP/s"] + (["MFU"] if mfu else []) + [
        "speed vs ST", "compile s"]
    rows = []
    for c in cells:
        for name, r in c["contenders"].items():
            is_jax = name == "dpr-jax"
            rows.append([c["batch_size"], name, f"{r['median_s']:.2f}", f"{r['pairs_per_s']:.2f}",
                         f"{r['tflop_per_s']:.3f}"] + ([f"{100 * r['mfu']:.1f}%"] if mfu else []) + [
                f"{c['speedup_vs_st']:.2f}x" if is_jax and "speedup_vs_st" in c else "",
                f"{c['dpr_jax_compile_s']:.1f}" if is_jax else ""])
    where = ("JAX on " + info["device"] + f", PyTorch on {info['torch_device']}" if platform == "gpu"
             else f"CPU (torch {info['torch_threads']} threads, JAX {len(info['jax_devices'])} device)")
    loss_rows = [[c["batch_size"], f"{c['first_loss_dpr_jax']:.6f}", f"{c['first_loss_st']:.6f}",
                  f"{c['first_loss_abs_diff']:.2e}"] for c in cells if "first_loss_st" in c]
    lines = [
        f"# Training speed {device_title(platform, info.get('device'))}: dpr-jax train step vs "
        "sentence-transformers MultipleNegativesRankingLoss",
        "",
        f"Model: {model_desc}, one shared tower, mean pooling, L2-normalised, scale 20 (temperature 0.05); "
        f"real SQuAD v1.1 dev (question, gold paragraph) pairs, one question per paragraph, passages text only; "
        f"questions <= {args.question_length} tokens, passages <= {args.passage_length}; in-batch negatives only; "
        f"dropout on; AdamW lr {args.lr:g}, weight decay 0.01, clip norm 1; compute dtype {args.dtype}; {where}. "
        f"sentence-transformers runs as a plain PyTorch loop (preprocess, MNRL, backward, clip, AdamW step), "
        f"no Trainer. Tokenisation is inside every step for both. {args.rounds} rounds of {args.steps} steps "
        f"after one warm-up round, contenders alternating; speed vs ST = median over rounds of t_ST / t_dpr-jax. "
        f"'compile s' = JAX's own tracing + compilation time in dpr-jax's first (untimed) step.",
        "",
        markdown_table(header, rows),
        "",
    ]
    if loss_rows:
        lines += [f"First-step loss, dropout off, same initial weights and batch (accepted |diff| <= {tol:g}):", "",
                  markdown_table(["batch", "dpr-jax", "sentence-transformers", "|diff|"], loss_rows), ""]
    lines += [
        "Padding: dpr-jax pads every batch to the maximum lengths (fixed shapes, one compilation: "
        f"{args.question_length}+{args.passage_length} tokens per pair); sentence-transformers pads to the longest "
        "sequence of each batch. Real tokens per pair: " + "; ".join(
            f"batch {c['batch_size']}: {c['real_tokens_per_pair']:.1f}" for c in cells) + ".",
        "",
        f"FLOPs: {FLOP_FORMULA}." + (f" MFU against a peak of {peak:g} TFLOP/s ({args.dtype})." if mfu else ""),
        "",
        f"Machine: {machine_line(info)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
