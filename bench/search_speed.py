"""Exact search speed: dpr-jax ``exact_search`` vs faiss ``IndexFlatIP`` vs NumPy matmul + argpartition.

All answer the same question exactly: top-k inner products of Q queries against an in-memory
float32 corpus (seeded Gaussian; 1M x 768, 1,000 queries, k=100 by default). dpr-jax runs twice:
its default engine here (``blas`` on CPU) and ``engine="xla"`` (the JAX path; ``--skip xla`` drops
it). Contenders run in turn for several rounds (see ``bench/common.py``); the table gives median
queries/s, GFLOP/s (2*Q*N*D / time), the percentage of the same-run sgemm ceiling, and the median
per-round time ratio to faiss. A plain NumPy sgemm (2048^3) timed in the same rounds gives that
ceiling. Results are compared id for id; where they differ the float64 scores decide whether the
difference is a float32 rounding tie.

    python bench/search_speed.py                      # full size (about 10 minutes on 2 cores)
    python bench/search_speed.py --corpus 100000 --queries 200 --rounds 2

Writes bench/results/search_speed.md and .json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternate, fair_blas_env, load_warning, log, machine_info, machine_line,  # noqa: E402
                          markdown_table, portable_config, write_results)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=int, default=1_000_000, help="corpus rows (default 1M)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--chunk-rows", type=int, default=None, help="exact_search chunk_rows (default: its own)")
    p.add_argument("--query-batch", type=int, default=None, help="exact_search query_batch (default: its own)")
    p.add_argument("--numpy-block", type=int, default=32768, help="corpus rows per NumPy matmul block")
    p.add_argument("--sgemm", type=int, default=2048, help="size n of the n x n x n NumPy sgemm ceiling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablation", action="store_true",
                   help="also time exact_search with one 1024-query batch per step (no top_k/matmul overlap)")
    p.add_argument("--skip", nargs="*", default=[], choices=["faiss", "numpy", "xla"], help="contenders to leave out")
    p.add_argument("--out-dir", type=Path, default=None, help="default bench/results")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="do not unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this run")
    return p.parse_args(argv)


def numpy_topk(queries, corpus, k, block):
    """Blockwise q @ C.T, argpartition per block, merged into a running top-k; sorted at the end."""
    import numpy as np

    best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    for start in range(0, corpus.shape[0], block):
        s = queries @ corpus[start : start + block].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        kk = min(k, cand_s.shape[1])
        keep = np.argpartition(-cand_s, kk - 1, axis=1)[:, :kk]
        best_s, best_i = np.take_along_axis(cand_s, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def compare_ids(name, rows, ref_rows, queries, corpus, k):
    """Exact-match statistics of ``rows`` vs the reference, with float64 adjudication of differences.

    A differing query is "a rounding tie" when both lists are valid top-k lists in float64 up to a
    tolerance far above float32 rounding of these dot products (1e-3 absolute on scores ~ +-30) and
    far below the typical gap between neighbouring scores.
    """
    import numpy as np

    same_order = np.all(rows == ref_rows, axis=1)
    same_set = np.array([set(a) == set(b) for a, b in zip(rows.tolist(), ref_rows.tolist())])
    bad = np.nonzero(~same_order)[0]
    unexplained = []
    for qi in bad:
        q = queries[qi].astype(np.float64)
        mine = corpus[rows[qi]].astype(np.float64) @ q
        ref = corpus[ref_rows[qi]].astype(np.float64) @ q
        # Both lists must hold the same sorted score profile within tolerance.
        if not np.allclose(np.sort(mine)[::-1], np.sort(ref)[::-1], atol=1e-3, rtol=0):
            unexplained.append(int(qi))
    return {
        "contender": name,
        "queries": int(rows.shape[0]),
        "identical_ids_and_order": int(same_order.sum()),
        "identical_id_sets": int(same_set.sum()),
        "differences_that_are_float32_ties": int(len(bad) - len(unexplained)),
        "unexplained_differences": unexplained,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    fair_blas_env(args.keep_openblas_env)

    import jax
    import numpy as np

    from dpr_jax.index.search import (DEFAULT_BATCHES_PER_STEP, DEFAULT_CHUNK_ROWS, DEFAULT_QUERY_BATCH,
                                      DEFAULT_TOPK_GROUP, choose_engine, exact_search)

    chunk_rows = args.chunk_rows or DEFAULT_CHUNK_ROWS
    query_batch = args.query_batch or DEFAULT_QUERY_BATCH
    if "faiss" not in args.skip:
        import faiss  # noqa: F401  (loaded before machine_info so its BLAS is listed too)
    info = machine_info()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    log(machine_line(info))

    n, d, nq, k = args.corpus, args.dim, args.queries, args.k
    log(f"generating corpus {n} x {d} float32 (seed {args.seed})")
    rng = np.random.default_rng(args.seed)
    corpus = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        corpus[s : s + 100_000] = rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
    queries = rng.standard_normal((nq, d), dtype=np.float32)

    engine = choose_engine("auto", None, None, np.float32)
    ref_name = f"dpr-jax exact_search ({engine}, the default here)"
    contenders = {
        ref_name: lambda: exact_search(queries, corpus, k, chunk_rows=chunk_rows, query_batch=query_batch),
    }
    if "xla" not in args.skip and engine != "xla":
        contenders["dpr-jax exact_search (engine='xla')"] = lambda: exact_search(
            queries, corpus, k, chunk_rows=chunk_rows, query_batch=query_batch, engine="xla")
    if args.ablation:
        contenders["dpr-jax xla, 1 query batch of 1024 per step"] = lambda: exact_search(
            queries, corpus, k, chunk_rows=chunk_rows, query_batch=1024, batches_per_step=1, engine="xla")
    if "faiss" not in args.skip:
        import faiss

        log("building faiss IndexFlatIP")
        index = faiss.IndexFlatIP(d)
        index.add(corpus)
        contenders["faiss IndexFlatIP"] = lambda: index.search(queries, k)
    if "numpy" not in args.skip:
        contenders["numpy matmul+argpartition"] = lambda: numpy_topk(queries, corpus, k, args.numpy_block)
    a = np.random.default_rng(1).standard_normal((args.sgemm, args.sgemm), dtype=np.float32)
    sgemm_reps = 5
    contenders[f"numpy sgemm {args.sgemm}^3 (ceiling)"] = lambda: [a @ a for _ in range(sgemm_reps)][-1]

    baseline = "faiss IndexFlatIP" if "faiss" not in args.skip else ref_name
    res = alternate(contenders, args.rounds, baseline=baseline, log=log)

    search_flop = 2.0 * nq * n * d
    sgemm_flop = 2.0 * args.sgemm**3 * sgemm_reps
    ref_rows = np.asarray(res["result"][ref_name][1])
    checks = []
    for name in contenders:
        if "sgemm" in name or name == ref_name or not isinstance(res["result"][name], tuple):
            continue
        rows = np.asarray(res["result"][name][1], dtype=np.int64)
        checks.append(compare_ids(name, rows, ref_rows, queries, corpus, k))
        log(f"ids {name} vs {ref_name}: {checks[-1]}")

    sgemm_name = f"numpy sgemm {args.sgemm}^3 (ceiling)"
    sgemm_times = res["times_s"][sgemm_name]
    table, out_rows = [], {}
    for name, med in res["median_s"].items():
        is_sgemm = name == sgemm_name
        flop = sgemm_flop if is_sgemm else search_flop
        gflops = flop / med / 1e9
        qps = None if is_sgemm else nq / med
        # per round, this contender's GFLOP/s over the sgemm's a few seconds apart: drift cancels
        fraction = statistics.median((flop / t) / (sgemm_flop / c) for t, c in zip(res["times_s"][name], sgemm_times))
        out_rows[name] = {"median_s": med, "times_s": res["times_s"][name], "queries_per_s": qps,
                          "gflop_per_s": gflops, "fraction_of_sgemm_ceiling": fraction,
                          "time_ratio_vs_baseline": res["ratio_vs_baseline"][name]}
        table.append([name, f"{med:.2f}", "" if qps is None else f"{qps:.1f}", f"{gflops:.0f}",
                      f"{100 * fraction:.0f}%",
                      "" if is_sgemm else f"{res['ratio_vs_baseline'][baseline] / res['ratio_vs_baseline'][name]:.2f}x"])
    md = [
        "# Exact search speed",
        "",
        f"Corpus {n:,} x {d} float32 (seeded Gaussian, in memory), {nq:,} queries, k={k}; "
        f"{args.rounds} timed rounds after one warm-up, contenders alternating each round. "
        f"dpr-jax: chunk_rows={chunk_rows}, float32 compute, on {info['jax_devices'][0]}; its XLA path with "
        f"query_batch={query_batch}, batches_per_step={DEFAULT_BATCHES_PER_STEP}, topk_group={DEFAULT_TOPK_GROUP}. "
        f"Speed vs {baseline} = median over rounds of (its time / contender's time), higher is faster. "
        f"GFLOP/s counts 2*Q*N*D for search; the sgemm row ({sgemm_reps} x {args.sgemm}^3) is the NumPy BLAS ceiling; "
        f"% of sgemm ceiling = median over rounds of the contender's GFLOP/s over the same round's sgemm GFLOP/s.",
        "",
        markdown_table(["contender", "median s", "queries/s", "GFLOP/s", "% of sgemm ceiling", f"speed vs {baseline}"],
                       table),
        "",
        "Agreement with dpr-jax ids (Gaussian data has float32 near-ties; differing queries are checked in float64):",
        "",
        markdown_table(
            ["contender", "identical ids+order", "identical id sets", "diffs that are float32 ties", "unexplained"],
            [[c["contender"], f"{c['identical_ids_and_order']}/{c['queries']}", f"{c['identical_id_sets']}/{c['queries']}",
              c["differences_that_are_float32_ties"], len(c["unexplained_differences"])] for c in checks],
        ),
        "",
        f"Machine: {machine_line(info)}",
    ]
    info["loadavg_1min_end"] = os.getloadavg()[0]
    md[-1] += f"; load average {info['loadavg_1min_end']:.1f} at the end"
    caveat = load_warning(max(info["loadavg_1min"] or 0, info["loadavg_1min_end"]), info["usable_cores"])
    if caveat:
        md += ["", caveat]
    data = {"config": portable_config(args) | {"engine": engine, "chunk_rows": chunk_rows, "query_batch": query_batch,
                                    "batches_per_step": DEFAULT_BATCHES_PER_STEP, "topk_group": DEFAULT_TOPK_GROUP},
            "machine": info, "baseline": baseline, "results": out_rows, "id_checks": checks}
    md_path, _ = write_results("search_speed", "\n".join(md), data, args.out_dir)
    print("\n".join(md))
    log(f"wrote {md_path}")
    return 0 if all(not c["unexplained_differences"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
