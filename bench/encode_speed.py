"""Encoding speed: dpr-jax ``TextEncoder.encode_passages`` vs sentence-transformers ``encode``, same model.

Both encode the same real SQuAD paragraphs (text only, so the token ids are identical) with the same
model (all-MiniLM-L6-v2 by default), batch size and maximum length; each contender's call includes
its own tokenisation. The contenders alternate for several rounds (see ``bench/common.py``) and the
table gives median passages/s and the median per-round speed ratio. The vectors of the two are
compared row by row (cosine) so the comparison is of the same work. dpr-jax's first call compiles
one program per length bucket: it is timed separately ("compile") and excluded from the rounds.

On a GPU (``--device gpu``) the table adds MFU: model FLOPs over real (unpadded) tokens only,
per sequence of ``n`` tokens ``2 * n * P_matmul + 4 * layers * n^2 * hidden`` (``P_matmul`` = the
encoder's matmul weights, ``layers * (4 h^2 + 2 h i)``; the second term is ``QK^T`` and ``PV``;
embeddings, LayerNorm, softmax and GELU are not counted), divided by time and by the device's peak
(H100/H200 dense: 989 TFLOP/s bfloat16, 67 TFLOP/s float32; ``--peak-tflops`` for another device).

Where the weights are not installed, ``--model DIR --random-init`` takes only ``config.json`` and
the tokenizer files from DIR and gives both libraries the same randomly initialised weights (a
temporary model directory): speed does not depend on the weights' values.

    python bench/encode_speed.py                                  # CPU, 512 paragraphs, lengths 128 and 256
    python bench/encode_speed.py --device gpu --dtype bfloat16 --passages 8192 --batch-size 64 256
    python bench/encode_speed.py --device gpu --model /path/to/cfg_and_tokenizer --random-init

Writes bench/results/encode_speed[_gpu].md and .json. The helpers it imports from ``bench/common.py`` (SQuAD loading,
random-init model directories, FLOP counts, device peaks) are shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (DEFAULT_MODEL, FLOP_FORMULA, PACKAGES, CompileTimer, alternate, bert_shape,  # noqa: E402
                          device_title, portable_config,
                          check_jax_device, device_name, fair_blas_env, forward_flops, log, machine_info, machine_line,
                          markdown_table, matmul_params, peak_tflops, prepare_model_dir, sample_texts, select_platform, squad_paragraphs,
                          st_model, torch_device, write_results)

# ---------------------------------------------------------------- benchmark

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory or name (default {DEFAULT_MODEL})")
    p.add_argument("--random-init", action="store_true", help="same architecture, random weights (only config.json "
                   "and tokenizer files of --model are needed)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="compute dtype of both (float32 params; sentence-transformers under torch.autocast for bfloat16)")
    p.add_argument("--passages", type=int, default=512, help="number of SQuAD paragraphs (repeated past 2,067)")
    p.add_argument("--max-lengths", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one untimed warm-up round")
    p.add_argument("--squad", default=None, help="SQuAD v1.1 dev JSON (default: dpr_jax.settings.squad_dev_path())")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-cosine", type=float, default=None,
                   help="agreement threshold (default 0.999 float32, 0.99 bfloat16)")
    p.add_argument("--skip-st", action="store_true", help="time dpr-jax alone")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--name", default=None, help="results file stem (default encode_speed[_gpu])")
    p.add_argument("--out-dir", type=Path, default=None, help="default bench/results")
    p.add_argument("--keep-openblas-env", action="store_true")
    return p.parse_args(argv)


def run_config(args, model_dir, loaded, texts, max_length, batch_size, st_dev, shape, peak, compile_timer):
    """One (max_length, batch size) cell: compile, alternate rounds, agreement, FLOPs."""
    import contextlib

    import numpy as np
    import torch

    from dpr_jax.index.encode import TextEncoder, bucket_length

    encoder = TextEncoder(loaded, batch_size=batch_size, max_length=max_length)
    compile_timer.reset()
    t0 = time.perf_counter()
    encoder.encode_passages([""] * len(texts), texts)
    first_s = time.perf_counter() - t0
    compile_s, programs = compile_timer.seconds, compile_timer.programs
    lengths = np.array([len(e.ids) for e in loaded.tokenizer.encode_raw(texts, max_length)])
    sorted_lengths = np.sort(lengths)[::-1]
    padded = sum(bucket_length(int(sorted_lengths[s]), max_length) * min(batch_size, len(texts) - s)
                 for s in range(0, len(texts), batch_size))
    contenders = {"dpr-jax": lambda: encoder.encode_passages([""] * len(texts), texts)}
    if not args.skip_st:
        st = st_model(model_dir, max_length, st_dev)
        autocast = (torch.autocast(device_type="cuda" if st_dev == "cuda" else "cpu", dtype=torch.bfloat16)
                    if args.dtype == "bfloat16" else contextlib.nullcontext())

        def st_encode():
            with torch.inference_mode(), autocast:
                return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

        contenders["sentence-transformers"] = st_encode
    res = alternate(contenders, args.rounds, baseline="sentence-transformers" if not args.skip_st else "dpr-jax",
                    log=lambda m: log(f"len {max_length} bs {batch_size} {m}"))
    flops = forward_flops(shape, lengths)
    cell = {"max_length": max_length, "batch_size": batch_size, "passages": len(texts),
            "real_tokens": int(lengths.sum()), "dpr_jax_padded_tokens": int(padded),
            "dpr_jax_first_call_s": first_s, "dpr_jax_compile_s": compile_s, "dpr_jax_programs_compiled": programs,
            "dpr_jax_compile_s_during_rounds": compile_timer.seconds - compile_s,
            "forward_flops_real_tokens": flops, "contenders": {}}
    for name in contenders:
        med = res["median_s"][name]
        row = {"median_s": med, "times_s": res["times_s"][name], "passages_per_s": len(texts) / med,
               "tflop_per_s": flops / med / 1e12}
        if peak:
            row["mfu"] = flops / med / (peak * 1e12)
        cell["contenders"][name] = row
    if not args.skip_st:
        # alternate() reports median(t_name / t_st): speed vs ST is its inverse.
        cell["speedup_vs_st"] = 1.0 / res["ratio_vs_baseline"]["dpr-jax"]
        a, b = (np.asarray(res["result"][n], np.float64) for n in ("dpr-jax", "sentence-transformers"))
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        cell["cosine_min"], cell["cosine_mean"] = float(cos.min()), float(cos.mean())
        log(f"len {max_length} bs {batch_size}: speed-up {cell['speedup_vs_st']:.2f}x, cosine min {cos.min():.6f}")
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
    min_cos = args.min_cosine or (0.999 if args.dtype == "float32" else 0.99)

    texts = sample_texts(squad_paragraphs(args.squad), args.passages, args.seed)
    with tempfile.TemporaryDirectory(prefix="encode-speed-") as tmp:
        model_dir, model_desc = prepare_model_dir(args.model, args.random_init, args.seed, Path(tmp))
        shape = bert_shape(model_dir)
        loaded = load_model(str(model_dir), dtype=args.dtype)
        log(f"model: {model_desc}; {loaded.describe()}")
        compile_timer = CompileTimer()
        cells = [run_config(args, model_dir, loaded, texts, ml, bs, st_dev, shape, peak, compile_timer)
                 for ml in args.max_lengths for bs in args.batch_size]

    ok = all(c.get("cosine_min", 1.0) >= min_cos for c in cells)
    md = render(args, cells, info, model_desc, shape, peak, min_cos, platform)
    name = args.name or ("encode_speed" if platform == "cpu" else "encode_speed_gpu")
    data = {"config": portable_config(args), "model": model_desc, "shape": shape,
            "matmul_params": matmul_params(shape), "flop_formula": FLOP_FORMULA, "peak_tflops": peak,
            "machine": info, "cells": cells, "agreement_ok": ok}
    md_path, _ = write_results(name, md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}")
    return 0 if ok else 1


def render(args, cells, info, model_desc, shape, peak, min_cos, platform) -> str:
    mfu = peak is not None
    header = ["max len", "batch", "contender", "median s", "passages/s", "TFLOP/s"] + (["MFU"] if mfu else []) + [
        "speed vs ST", "cosine min", "compile s (programs)"]
    rows = []
    for c in cells:
        for name, r in c["contenders"].items():
            is_jax = name == "dpr-jax"
            rows.append([c["max_length"], c["batch_size"], name, f"{r['median_s']:.2f}", f"{r['passages_per_s']:.1f}",
                         f"{r['tflop_per_s']:.3f}"] + ([f"{100 * r['mfu']:.1f}%"] if mfu else []) + [
                f"{c['speedup_vs_st']:.2f}x" if is_jax and "speedup_vs_st" in c else "",
                f"{c['cosine_min']:.6f}" if is_jax and "cosine_min" in c else "",
                f"{c['dpr_jax_compile_s']:.1f} ({c['dpr_jax_programs_compiled']})" if is_jax else ""])
    where = ("JAX on " + info["device"] + f", sentence-transformers on {info['torch_device']}" if platform == "gpu"
             else f"CPU (torch {info['torch_threads']} threads)")
    lines = [
        f"# Encoding speed {device_title(platform, info.get('device'))}: dpr-jax vs sentence-transformers",
        "",
        f"Model: {model_desc} (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers); "
        f"{args.passages} SQuAD v1.1 dev paragraphs (seed {args.seed}), text only, the same for both; "
        f"compute dtype {args.dtype}; {where}. Each timed call encodes every passage, tokenisation included; "
        f"{args.rounds} rounds after one warm-up, contenders alternating; speed vs ST = median over rounds of "
        f"t_ST / t_dpr-jax. 'compile s' = JAX's own tracing + compilation time in dpr-jax's first (untimed) call, "
        f"one program per length bucket. "
        f"Vectors agree when the minimum row cosine is >= {min_cos}.",
        "",
        markdown_table(header, rows),
        "",
        "Tokens: " + "; ".join(f"len {c['max_length']} bs {c['batch_size']}: {c['real_tokens']:,} real, "
                               f"{c['dpr_jax_padded_tokens']:,} computed by dpr-jax (length buckets)" for c in cells),
        "",
        f"FLOPs: {FLOP_FORMULA}." + (f" MFU against a peak of {peak:g} TFLOP/s ({args.dtype})." if mfu else ""),
        "",
        f"Machine: {machine_line(info)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
