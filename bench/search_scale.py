"""Exact search over a corpus far larger than one chunk: 10M x 768 float16 shards on disk (~15 GB).

Three phases, each in its own process so each peak RSS (``resource.getrusage``) is its own:

1. write: seeded random vectors, generated shard by shard and written with ``write_shard`` (a
   finished shard is skipped when re-run, as the encoder does);
2. search: ``open_index`` + ``exact_search`` streaming the shards (100 queries, k=100), then the
   rows mapped to passage ids; timed, peak RSS recorded;
3. verify: a few of the queries brute-forced with NumPy, streaming the same shards, compared id
   for id (differences adjudicated in float64, as float32 near-ties can reorder).

    python bench/search_scale.py                          # 10M rows, ~15 GB under /tmp
    python bench/search_scale.py --corpus 500000 --dir /tmp/small-index
    python bench/search_scale.py --keep                   # leave the index on disk

The index directory is deleted at the end unless ``--keep``. Writes bench/results/search_scale.md/.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (fair_blas_env, load_warning, log, machine_info, machine_line, markdown_table,  # noqa: E402
                          portable_config, write_results)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/dpr-jax-search-scale-index"), help="index directory")
    p.add_argument("--corpus", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--shard-rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--verify", type=int, default=4, help="queries brute-forced with NumPy (0 to skip)")
    p.add_argument("--chunk-rows", type=int, default=None, help="exact_search chunk_rows (default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the index directory afterwards")
    p.add_argument("--out-dir", type=Path, default=None, help="default bench/results")
    p.add_argument("--phase", choices=["all", "write", "search", "verify"], default="all", help=argparse.SUPPRESS)
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="do not unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this run")
    return p.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_queries(args):
    import numpy as np

    return np.random.default_rng([args.seed, 999_999]).standard_normal((args.queries, args.dim), dtype=np.float32)


def phase_write(args) -> dict:
    import numpy as np
    from tqdm import tqdm

    from dpr_jax.index.store import shard_done, write_meta, write_shard

    t0 = time.perf_counter()
    args.dir.mkdir(parents=True, exist_ok=True)
    num_shards = -(-args.corpus // args.shard_rows)
    skipped = 0
    for shard in tqdm(range(num_shards), desc="write shards", file=sys.stderr):
        if shard_done(args.dir, shard):
            skipped += 1
            continue
        start = shard * args.shard_rows
        rows = min(args.shard_rows, args.corpus - start)
        rng = np.random.default_rng([args.seed, shard])  # per-shard stream: resumable, order-free
        vectors = np.empty((rows, args.dim), np.float16)
        for s in range(0, rows, 65536):
            vectors[s : s + 65536] = rng.standard_normal((min(65536, rows - s), args.dim), dtype=np.float32)
        write_shard(args.dir, shard, vectors, [f"p{start + i}" for i in range(rows)])
        del vectors
    write_meta(args.dir, model="random-normal", pooling="none", dim=args.dim, dtype="float16",
               count=args.corpus, num_shards=num_shards, seed=args.seed, shard_rows=args.shard_rows)
    size = sum(p.stat().st_size for p in args.dir.iterdir())
    return {"write_s": time.perf_counter() - t0, "shards": num_shards, "shards_already_done": skipped,
            "bytes_on_disk": size, "peak_rss_mib": peak_rss_mib()}


def phase_search(args) -> dict:
    import numpy as np

    from dpr_jax.index.search import DEFAULT_CHUNK_ROWS, exact_search
    from dpr_jax.index.store import open_index

    queries = make_queries(args)
    chunk_rows = args.chunk_rows or DEFAULT_CHUNK_ROWS
    t0 = time.perf_counter()
    index = open_index(args.dir)
    t_open = time.perf_counter() - t0
    rss_open = peak_rss_mib()
    t0 = time.perf_counter()
    scores, rows = exact_search(queries, index, args.k, chunk_rows=chunk_rows, progress=True)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = index.id_at(rows)
    t_ids = time.perf_counter() - t0
    out_rows = args.dir / ".bench-rows.npy"
    np.save(out_rows, rows)
    assert ids[0][0] == f"p{rows[0, 0]}"  # ids in this synthetic index are "p<row>"
    return {"open_s": t_open, "search_s": t_search, "id_map_s": t_ids, "chunk_rows": chunk_rows,
            "queries_per_s": args.queries / t_search, "rows_per_s": index.count / t_search,
            "gb_per_s_read": index.count * index.dim * 2 / t_search / 1e9,
            "peak_rss_mib": peak_rss_mib(), "peak_rss_after_open_mib": rss_open}


def phase_verify(args) -> dict:
    import numpy as np

    from dpr_jax.index.store import open_index

    queries = make_queries(args)[: args.verify]
    rows = np.load(args.dir / ".bench-rows.npy")[: args.verify]
    index = open_index(args.dir)
    t0 = time.perf_counter()
    k = args.k
    best_s = np.full((len(queries), 0), -np.inf, np.float64)
    best_i = np.zeros((len(queries), 0), np.int64)
    q64 = queries.astype(np.float64)
    for offset, chunk in index.iter_chunks(65536):  # NumPy streaming brute force, float64 scores
        s = q64 @ chunk.astype(np.float64).T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(offset, offset + chunk.shape[0]), s.shape)], axis=1)
        keep = np.argpartition(-cand_s, min(k, cand_s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    ref_s, ref_i = np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)
    identical = [bool(np.array_equal(a, b)) for a, b in zip(rows, ref_i)]
    ties_only = []
    for qi in range(len(queries)):
        if not identical[qi]:
            mine = np.sort(np.concatenate([index_scores(index, q64[qi], rows[qi])]))[::-1]
            ties_only.append(bool(np.allclose(mine, ref_s[qi], atol=1e-3, rtol=0)))
    return {"verify_s": time.perf_counter() - t0, "verified_queries": len(queries),
            "identical_ids_and_order": int(sum(identical)), "differences_that_are_float32_ties": int(sum(ties_only)),
            "unexplained_differences": int(len(ties_only) - sum(ties_only)), "peak_rss_mib": peak_rss_mib()}


def index_scores(index, q64, rows):
    """float64 scores of the given global rows, read from the shards."""
    import numpy as np

    out = np.empty(len(rows))
    starts = np.concatenate([[0], np.cumsum(index.shard_rows)])
    for j, r in enumerate(rows):
        s = int(np.searchsorted(starts, r, side="right") - 1)
        out[j] = index.shard_vectors(s)[r - starts[s]].astype(np.float64) @ q64
    return out


def run_phase(phase: str, argv: list[str]) -> dict:
    """Run one phase in a fresh process (own peak RSS); it prints its result as the last stdout line."""
    proc = subprocess.run([sys.executable, __file__, *argv, "--phase", phase], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    fair_blas_env(args.keep_openblas_env)
    if args.phase != "all":
        result = {"write": phase_write, "search": phase_search, "verify": phase_verify}[args.phase](args)
        print(json.dumps(result))
        return 0

    import os

    import numpy  # noqa: F401  (loads OpenBLAS so machine_info can name its kernel)

    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    log(machine_line(info))
    log(f"index dir {args.dir}: {args.corpus:,} x {args.dim} float16 in shards of {args.shard_rows:,}")
    free = shutil.disk_usage(args.dir.parent if not args.dir.exists() else args.dir).free
    need = args.corpus * args.dim * 2
    if free < need * 1.1 and not args.dir.exists():
        raise SystemExit(f"not enough disk under {args.dir.parent}: {free / 1e9:.1f} GB free, ~{need / 1e9:.1f} GB needed")
    try:
        write = run_phase("write", argv)
        log(f"write: {write}")
        search = run_phase("search", argv)
        log(f"search: {search}")
        verify = run_phase("verify", argv) if args.verify else None
        log(f"verify: {verify}")
    finally:
        if not args.keep and args.dir.exists():
            shutil.rmtree(args.dir)
            log(f"deleted {args.dir}")
    info["loadavg_end"] = os.getloadavg()

    size_gb = write["bytes_on_disk"] / 1e9
    rows = [
        ["write shards (generate + np.save + ids)", f"{write['write_s']:.1f}", f"{write['peak_rss_mib']:.0f}",
         f"{write['shards']} shards, {size_gb:.1f} GB on disk"],
        ["open_index (validate all shards)", f"{search['open_s']:.2f}", f"{search['peak_rss_after_open_mib']:.0f}", ""],
        ["exact_search (streamed, exact)", f"{search['search_s']:.1f}", f"{search['peak_rss_mib']:.0f}",
         f"{search['queries_per_s']:.2f} queries/s, {search['rows_per_s'] / 1e6:.2f}M rows/s, "
         f"{search['gb_per_s_read']:.2f} GB/s of float16 vectors"],
        ["rows -> passage ids (Index.id_at)", f"{search['id_map_s']:.2f}", "", ""],
    ]
    if verify:
        rows.append([f"verify {verify['verified_queries']} queries (NumPy float64 streaming)", f"{verify['verify_s']:.1f}",
                     f"{verify['peak_rss_mib']:.0f}",
                     f"{verify['identical_ids_and_order']}/{verify['verified_queries']} identical ids+order; "
                     f"{verify['differences_that_are_float32_ties']} float32 near-tie reorderings; "
                     f"{verify['unexplained_differences']} unexplained"])
    md = [
        "# Exact search at scale",
        "",
        f"{args.corpus:,} x {args.dim} float16 vectors in {write['shards']} shards ({size_gb:.1f} GB) on local disk; "
        f"{args.queries} queries, k={args.k}, float32 compute, chunk_rows={search['chunk_rows']}, 1 JAX CPU device. "
        f"Each phase ran in its own process; peak RSS is that process's `ru_maxrss`. "
        f"The corpus is {size_gb * 1e9 / 2**30 / info.get('memory_gib', 1):.2f}x this machine's RAM.",
        "",
        markdown_table(["phase", "seconds", "peak RSS MiB", "notes"], rows),
        "",
        f"Machine: {machine_line(info)}; load average at start {info['loadavg_start'][0]:.1f}, end {info['loadavg_end'][0]:.1f}",
    ]
    caveat = load_warning(max(info["loadavg_start"][0], info["loadavg_end"][0]), info["usable_cores"])
    if caveat:
        md += ["", caveat]
    data = {"config": portable_config(args),
            "machine": info, "write": write, "search": search, "verify": verify}
    md_path, _ = write_results("search_scale", "\n".join(md), data, args.out_dir)
    print("\n".join(md))
    log(f"wrote {md_path}")
    return 0 if not verify or verify["unexplained_differences"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
