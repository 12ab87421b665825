"""Peak memory of offline corpus encoding (``encode_corpus``, i.e. ``dpr-jax encode``) vs corpus size.

``encode_corpus`` streams the passages file and encodes it block by block, so its peak resident
memory should depend on ``block_size`` (fixed here) and the model, not on the number of passages.
This benchmark encodes synthetic corpora of several sizes (1k and 100k passages by default) with
the same settings and compares the peak RSS of each run.

- Passages: each is 3-6 sentences drawn at random (seeded) from the real SQuAD v1.1 dev paragraphs,
  with a random article title; every size is its own file.
- Model: a tiny randomly initialised BERT (2 layers, hidden 64, 2 heads, feed-forward 256, mean
  pooling, normalised; the all-MiniLM-L6-v2 tokenizer and vocabulary) with max length 128, so 100k
  passages encode in minutes on 2 cores. The memory that does not scale with the corpus (the model,
  jit programs, one block) is what such a model keeps small; a corpus-size leak would show the same.
- Each size runs in a fresh Python process (``--child``), started by a fresh measuring process
  (``--measure``) that reads ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits, so
  one size's peak never masks another's. The child also records its own peak right after loading
  the model (before encoding), and the shards it wrote are checked (rows = passages).

    python bench/encode_memory.py                               # 1k and 100k passages, block 1,000
    python bench/encode_memory.py --sizes 1000 10000 100000 --block-size 2000

Writes bench/results/encode_memory.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, machine_info, machine_line, markdown_table, portable_config, write_results  # noqa: E402

TINY = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)
PACKAGES = ("numpy", "jax", "jaxlib", "flax", "tokenizers", "transformers")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--block-size", type=int, default=1000, help="passages per shard/block (fixed for every size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--tokenizer", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="tokenizer directory or name (its vocabulary size must fit the tiny model's 30,522)")
    p.add_argument("--squad", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="where corpora and indexes go (default a temp dir)")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--child", nargs=2, metavar=("PASSAGES", "INDEX_DIR"), help=argparse.SUPPRESS)
    p.add_argument("--measure", nargs=2, metavar=("PASSAGES", "INDEX_DIR"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def maxrss_mib(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def sentences_of(squad) -> tuple[list[str], list[str]]:
    from bench.common import squad_articles

    sentences, titles = [], []
    for a in squad_articles(squad):
        titles.append(a["title"].replace("_", " "))
        for p in a["paragraphs"]:
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", p["context"]) if len(s) > 20]
    return sentences, titles


def write_corpus(path: Path, n: int, sentences, titles, seed: int) -> int:
    """``n`` synthetic passages (3-6 shuffled real sentences each) as JSON lines; returns the file size."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.sample(sentences, rng.randint(3, 6)))
            f.write(json.dumps({"id": f"syn-{i}", "title": rng.choice(titles), "text": text}) + "\n")
    return path.stat().st_size


def child(args) -> int:
    """Encode one corpus; print a JSON line with timings, counts and peak RSS."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from dpr_jax.index.encode import encode_corpus
    from dpr_jax.index.store import shard_paths
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model

    passages, out = args.child
    loaded = init_random_model(BertConfig(**TINY), EncoderConfig(pooling="mean", normalize=True), args.tokenizer,
                               shared=True, seed=args.seed)
    rss_loaded = maxrss_mib(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    summary = encode_corpus(loaded, passages, out, block_size=args.block_size, batch_size=args.batch_size,
                            max_length=args.max_length, out_dtype="float16", progress=False)
    seconds = time.perf_counter() - t0
    rows = sum(np.load(shard_paths(out, b)[0], mmap_mode="r").shape[0] for b in range(summary["num_shards"]))
    print(json.dumps({"count": summary["count"], "num_shards": summary["num_shards"], "rows_written": int(rows),
                      "encode_s": seconds, "maxrss_after_model_mib": rss_loaded,
                      "maxrss_self_mib": maxrss_mib(resource.RUSAGE_SELF)}))
    return 0


def measure(args) -> int:
    """Run one child; add RUSAGE_CHILDREN's peak (this fresh process has had no other child)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args.measure,
           "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--tokenizer", args.tokenizer, "--seed", str(args.seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return proc.returncode
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result |= {"maxrss_children_mib": maxrss_mib(resource.RUSAGE_CHILDREN), "process_wall_s": wall}
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.measure:
        return measure(args)
    info = machine_info(PACKAGES)
    log(machine_line(info))
    sentences, titles = sentences_of(args.squad)
    log(f"{len(sentences):,} SQuAD sentences to draw from")
    runs = []
    with tempfile.TemporaryDirectory(prefix="encode-memory-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            corpus = work / f"passages-{n}.jsonl"
            size = write_corpus(corpus, n, sentences, titles, args.seed)
            index = work / f"index-{n}"
            log(f"{n:,} passages ({size / 2**20:.1f} MiB): encoding in a fresh process")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(corpus), str(index),
                   "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--tokenizer", args.tokenizer, "--seed", str(args.seed)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode:
                log(f"encoding {n} passages failed (exit {proc.returncode})")
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"passages": n, "file_mib": size / 2**20}
            r["ok"] = r["rows_written"] == n == r["count"]
            log(f"{n:,}: peak RSS {r['maxrss_children_mib']:.0f} MiB, {r['encode_s']:.1f} s "
                f"({n / r['encode_s']:.0f} passages/s), rows ok: {r['ok']}")
            runs.append(r)
    base = runs[0]["maxrss_children_mib"]
    rows = [[f"{r['passages']:,}", f"{r['file_mib']:.1f}", r["num_shards"], f"{r['encode_s']:.1f}",
             f"{r['passages'] / r['encode_s']:,.0f}", f"{r['maxrss_after_model_mib']:.0f}",
             f"{r['maxrss_children_mib']:.0f}", f"{r['maxrss_children_mib'] / base:.2f}x"] for r in runs]
    growth = runs[-1]["maxrss_children_mib"] - base
    md = "\n".join([
        "# Peak memory of offline encoding vs corpus size",
        "",
        f"`encode_corpus` (what `dpr-jax encode` runs) with block size {args.block_size:,}, batch {args.batch_size}, "
        f"max length {args.max_length}, float16 shards, on synthetic passages (3-6 random real SQuAD dev sentences "
        f"each). Model: tiny random-init BERT ({TINY['num_hidden_layers']} layers, hidden {TINY['hidden_size']}, "
        f"{TINY['num_attention_heads']} heads, feed-forward {TINY['intermediate_size']}, "
        f"all-MiniLM-L6-v2 tokenizer), CPU. Each size runs in a fresh process; peak RSS is "
        f"`getrusage(RUSAGE_CHILDREN).ru_maxrss` read by a fresh parent after it exits; 'after model' is the "
        f"child's own peak before encoding started (imports, model, tokenizer).",
        "",
        markdown_table(["passages", "file MiB", "shards", "encode s", "passages/s", "peak RSS after model MiB",
                        "peak RSS MiB", f"vs {runs[0]['passages']:,}"], rows),
        "",
        f"Peak RSS grows by {growth:+.0f} MiB from {runs[0]['passages']:,} to {runs[-1]['passages']:,} passages "
        f"({runs[-1]['passages'] / runs[0]['passages']:.0f}x the corpus). Every shard was read back: rows written = "
        f"passages for every size: {all(r['ok'] for r in runs)}.",
        "",
        f"Machine: {machine_line(info)}",
    ])
    data = {"config": portable_config(args),
            "model": TINY, "machine": info, "runs": runs}
    md_path, _ = write_results("encode_memory", md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
