"""Approximate indexes (``dpr-jax index build``, faiss) vs exact search: recall, speed, memory, disk.

Corpora, written once under ``--work-dir`` as dpr-jax shards (float16, as ``dpr-jax encode`` writes)
and reused on reruns:

* ``real-1M``: all-MiniLM-L6-v2 vectors (384-d, unit length) of every SQuAD v1.1 dev paragraph
  and every sentence of them (~12k texts), then noisy copies up to ``--real-rows``: a copy is a real
  vector plus Gaussian noise, re-normalised, at cosine ``--noise-cos`` (0.9) to its source.
  Queries: SQuAD dev questions encoded by the same model.
* ``synth-1M``, ``synth-10M``: 768-d clustered vectors, a mixture of ``--clusters`` Gaussians around
  random centres: cluster weights from a Dirichlet(1), centre norms 0.5-1.5, each cluster its own
  spread (0.2-0.8 of a centre's norm), and a decaying per-dimension scale shared by all (encoder
  outputs have such spectra). Not isotropic noise, which is ANN's worst case and unlike any
  encoder. Written shard by shard (one shard in memory; 10M x 768 float32 would be 31 GB).
  Queries: fresh draws from the same mixture.

Per corpus: the exact top-100 of 1,000 queries by dpr-jax ``exact_search`` (the ground truth, and
the exact row of the table); then for each index type whose index fits in ``--ram-budget``
(hnsw, ivf-flat, ivf-pq, sq8), a build (``dpr_jax.index.ann.build_ann``) and a search, each in a
fresh process so each peak RSS is its own: build time and peak RSS, file size on disk, RAM to serve
(peak RSS of the search process, index loaded, 1,000 queries searched), and at two operating points
(``nprobe`` / ``efSearch``): recall@100 against the exact top-100, queries/s with one 1,000-query
batch and with 1-query batches (up to ``--single`` queries, at most ~30 s). faiss uses every core.

SQuAD: all 10,570 dev questions over ``real-1M`` with exact search and with every index: top-k
accuracy, a hit counting when the text its vector came from contains an answer (DPR ``has_answer``).

Goal search: on the largest synthetic corpus, IVF-PQ variants (PQ96x8 and PQ128x8 codes, an OPQ
rotation, 4-bit fast-scan codes re-ranked by 8-bit codes in RAM, or shortlists re-scored exactly from
the shards on disk with ``rerank``) over an ``nprobe`` sweep, each projected to
21M x 768 (``--goal-rows``) and checked against: RAM <= 4 GB, recall@100 >= 0.95 of exact,
>= 100 queries/s (1,000-query batches) on the machine that runs this. Projection from N measured
rows (formulas in the output):

    bytes/vector b = faiss code size (+ refine code size) + 8 (the stored row id)
    fixed F       = index file size - b * N          (centroids, codebooks, rotation)
    RAM(21M)      = serve overhead + F + b * 21M      (overhead = serving RSS - file size, measured)
    q/s(21M)      = q/s(N) * N / 21M                  (conservative: every per-query cost taken as
                                                       proportional to N, same nlist and nprobe)
    recall(21M)   = recall(N) at the same nprobe/nlist (assumption; the 1M vs 10M rows show the trend)

    python bench/ann_speed.py                                   # full run (see the time below)
    python bench/ann_speed.py --quick --out-dir /tmp/ann-smoke  # tiny sizes (own work dir): not figures

Expected time on a quiet 2-core machine: about 3 hours (2.5-4), and ~40 GB of disk under
--work-dir (17.7 GB of shards, the rest indexes). Roughly: encoding 12k texts and 10,570 questions
3 min; writing 12M rows 7 min; exact ground truth 6 min; real-1M builds 15 min; synth-1M builds
25 min (hnsw most of it); synth-10M ivf-pq and sq8 20 min (hnsw and ivf-flat would need >15 GB of
RAM: skipped); the goal search, 5 candidates x 5 nprobe x 1-3 settings at 10M, 75 min; SQuAD
accuracy 3 min.
Every finished step is cached under --work-dir, so an interrupted run resumes where it stopped.
``--skip`` drops parts (hnsw, squad, goal, synth-10M). Writes bench/results/ann_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (fair_blas_env, load_warning, log, machine_info, machine_line,  # noqa: E402
                          markdown_table, write_results)

PACKAGES = ("numpy", "jax", "jaxlib", "faiss-cpu", "threadpoolctl")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GOAL_RAM_BYTES = 4e9
GOAL_RECALL = 0.95
GOAL_QPS = 100.0
SINGLE_BUDGET_S = 30.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=None,
                   help="corpora, indexes and cached measurements (kept; delete it afterwards; default "
                        "/tmp/dpr-jax-ann-bench, or /tmp/dpr-jax-ann-bench-quick with --quick)")
    p.add_argument("--real-rows", type=int, default=1_000_000)
    p.add_argument("--synth-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--synth-dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--noise-cos", type=float, default=0.9, help="cosine of a noisy copy to its real source")
    p.add_argument("--shard-rows", type=int, default=500_000)
    p.add_argument("--queries", type=int, default=1000, help="queries for recall and batch speed")
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time (at most ~30 s)")
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--nlist", type=int, default=4096, help="IVF lists for every IVF index (1M and 10M rows)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ram-budget", type=float, default=None,
                   help="GB an index may take in RAM (default 60%% of this machine's memory)")
    p.add_argument("--squad", default=None, help="SQuAD v1.1 dev JSON (default: dpr_jax.settings.squad_dev_path())")
    p.add_argument("--real-texts", type=int, default=None, help="encode only this many texts (smoke runs)")
    p.add_argument("--squad-questions", type=int, default=None, help="SQuAD questions for accuracy (default all)")
    p.add_argument("--goal-rows", type=int, default=21_000_000)
    p.add_argument("--goal-nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--goal-kept-only", action="store_true",
                   help="goal search: report only the candidates already measured in --work-dir (to finish a run "
                        "that ran out of time); the others are named as not measured")
    p.add_argument("--skip", nargs="*", default=[], choices=["hnsw", "squad", "goal", "synth-10M", "real"])
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs (not figures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=None, help="default bench/results")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="do not unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this run")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.real_rows, args.synth_rows, args.synth_dim, args.clusters = 20_000, [20_000, 60_000], 128, 64
        args.shard_rows, args.queries, args.single, args.nlist = 16_384, 100, 10, 64
        args.real_texts, args.squad_questions, args.goal_nprobe = args.real_texts or 600, 200, [4, 16]
    args.work_dir = args.work_dir or Path("/tmp/dpr-jax-ann-bench" + ("-quick" if args.quick else ""))
    return args


# ------------------------------------------------------------------ small helpers


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


def run_phase(args, phase: str, spec: dict) -> dict:
    """Run one phase in a fresh process (its own peak RSS); it prints its result as the last stdout line."""
    argv = [sys.executable, __file__, *args.argv, "--work-dir", str(args.work_dir), "--phase", phase,
            "--spec", json.dumps(spec)]  # the parent's flags: every child sees the same settings
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} {spec} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cached(path: Path, make, spec=None):
    """``make()`` once; its JSON result is kept at ``path`` so a rerun resumes where it stopped.

    With ``spec`` (the phase's inputs: corpus, index settings, operating points...), a kept result is
    used only when it was made from the same spec; otherwise it is made again (a rerun with other
    ``--nprobe`` values or settings never reports the old ones).
    """
    if path.is_file():
        kept = json.loads(path.read_text())
        if spec is None or kept.get("__spec__", spec) == spec:  # results kept before specs were: trusted
            return {k: v for k, v in kept.items() if k != "__spec__"}
        log(f"{path.name}: kept for other inputs, measuring again")
    result = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result if spec is None else {**result, "__spec__": spec}))
    os.replace(tmp, path)
    return result


def cached_phase(args, path: Path, phase: str, spec: dict) -> dict:
    """:func:`run_phase` once per spec (see :func:`cached`)."""
    key = json.loads(json.dumps({"phase": phase, **spec}))  # as it reads back (tuples become lists)
    return cached(path, lambda: run_phase(args, phase, spec), spec=key)


# ------------------------------------------------------------------ corpora


def split_sentences(text: str) -> list[str]:
    """Sentence-ish pieces: split after . ! ? followed by space and a capital, digit or quote."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])", text) if len(s.strip()) > 1]


def phase_encode_real(args, spec) -> dict:
    """Encode every SQuAD dev paragraph and sentence, and every question, with all-MiniLM-L6-v2."""
    import numpy as np

    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.models.loading import load_model
    from dpr_jax.settings import squad_dev_path

    path = Path(args.squad) if args.squad else squad_dev_path()
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    titles, texts, questions = [], [], []
    for article in data:
        title = article["title"].replace("_", " ")
        for para in article["paragraphs"]:
            for text in [para["context"], *split_sentences(para["context"])]:
                titles.append(title)
                texts.append(text)
            for qa in para["qas"]:
                questions.append({"question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    if args.real_texts:
        keep = np.random.default_rng(args.seed).permutation(len(texts))[: args.real_texts]
        titles, texts = [titles[i] for i in sorted(keep)], [texts[i] for i in sorted(keep)]
    if args.squad_questions:
        keep = np.random.default_rng([args.seed, 6]).permutation(len(questions))[: args.squad_questions]
        questions = [questions[i] for i in sorted(keep)]
    loaded = load_model(MODEL)
    t0 = time.perf_counter()
    vecs = TextEncoder(loaded, batch_size=64, max_length=256).encode_passages(titles, texts)
    q_vecs = TextEncoder(loaded, batch_size=128, max_length=64).encode_questions([q["question"] for q in questions])
    out = args.work_dir / "real"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "text_vecs.npy", vecs)
    np.save(out / "question_vecs.npy", q_vecs)
    (out / "texts.json").write_text(json.dumps({"titles": titles, "texts": texts, "questions": questions}))
    return {"texts": len(texts), "paragraphs": sum(len(a["paragraphs"]) for a in data), "questions": len(questions),
            "texts_limit": args.real_texts, "questions_limit": args.squad_questions,
            "encode_s": time.perf_counter() - t0, "dim": int(vecs.shape[1])}


def _write_corpus(directory: Path, rows: int, dim: int, shard_rows: int, make_shard, **meta) -> dict:
    """Write ``rows`` vectors shard by shard (``make_shard(shard_no, start, n)`` -> float32 [n, dim])."""
    from dpr_jax.index.store import shard_done, write_meta, write_shard

    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    num_shards = -(-rows // shard_rows)
    for shard in range(num_shards):
        if shard_done(directory, shard):
            continue
        start = shard * shard_rows
        n = min(shard_rows, rows - start)
        write_shard(directory, shard, make_shard(shard, start, n), [f"r{start + i}" for i in range(n)],
                    dtype="float16")
    write_meta(directory, dim=dim, dtype="float16", count=rows, num_shards=num_shards, **meta)
    return {"rows": rows, "dim": dim, "write_s": time.perf_counter() - t0,
            "bytes": sum(p.stat().st_size for p in directory.iterdir())}


def phase_write_real(args, spec) -> dict:
    """Real vectors first, then noisy copies (row r comes from text r mod n_texts) up to ``rows``."""
    import numpy as np

    src = np.load(args.work_dir / "real" / "text_vecs.npy")
    n_src, dim = src.shape
    sigma = math.sqrt((1 / args.noise_cos**2 - 1) / dim)  # |noise| ~ sigma sqrt(dim) -> cosine ~ noise_cos

    def make(shard, start, n):
        rng = np.random.default_rng([args.seed, 1, shard])
        rows = np.arange(start, start + n)
        x = src[rows % n_src].astype(np.float32)
        copy = rows >= n_src
        x[copy] += sigma * rng.standard_normal((int(copy.sum()), dim), dtype=np.float32)
        x[copy] /= np.linalg.norm(x[copy], axis=1, keepdims=True)
        return x

    return _write_corpus(Path(spec["dir"]), spec["rows"], dim, args.shard_rows, make, model=MODEL,
                         normalize=True, source_texts=n_src, noise_cos=args.noise_cos)


class Mixture:
    """The clustered synthetic distribution (seeded): see the module docstring."""

    def __init__(self, dim: int, clusters: int, seed: int):
        import numpy as np

        rng = np.random.default_rng([seed, 2])
        self.dim = dim
        self.weights = rng.dirichlet(np.ones(clusters))
        spectrum = 1.0 / np.sqrt(1.0 + np.arange(dim) / 16.0)
        self.scale = (spectrum / np.sqrt(np.mean(spectrum**2))).astype(np.float32)  # mean square 1
        centres = rng.standard_normal((clusters, dim)).astype(np.float32) * self.scale
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        self.centres = centres * rng.uniform(0.5, 1.5, (clusters, 1)).astype(np.float32)
        self.spread = (rng.uniform(0.2, 0.8, clusters) * np.linalg.norm(self.centres, axis=1)).astype(np.float32)

    def sample(self, n: int, rng):
        import numpy as np

        c = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.dim), np.float32)
        for s in range(0, n, 65536):
            cc = c[s:s + 65536]
            noise = rng.standard_normal((len(cc), self.dim), dtype=np.float32) * self.scale / math.sqrt(self.dim)
            out[s:s + 65536] = self.centres[cc] + self.spread[cc, None] * noise
        return out


def phase_write_synth(args, spec) -> dict:
    import numpy as np

    mix = Mixture(args.synth_dim, args.clusters, args.seed)
    make = lambda shard, start, n: mix.sample(n, np.random.default_rng([args.seed, 3, shard]))  # noqa: E731
    return _write_corpus(Path(spec["dir"]), spec["rows"], args.synth_dim, args.shard_rows, make,
                         model="synthetic-mixture", normalize=False, clusters=args.clusters)


def queries_for(args, corpus: dict):
    import numpy as np

    if corpus["kind"] == "real":
        q = np.load(args.work_dir / "real" / "question_vecs.npy")
        pick = np.random.default_rng([args.seed, 4]).permutation(len(q))[: args.queries]
        return q[np.sort(pick)]
    return Mixture(args.synth_dim, args.clusters, args.seed).sample(args.queries, np.random.default_rng([args.seed, 5]))


# ------------------------------------------------------------------ measurements (child processes)


def phase_truth(args, spec) -> dict:
    """Exact top-k of the queries (saved as the ground truth) with its speed: the table's exact row."""
    import numpy as np

    from dpr_jax.index.search import DEFAULT_CHUNK_ROWS, exact_search
    from dpr_jax.index.store import open_index

    corpus = spec["corpus"]
    index = open_index(corpus["dir"])
    queries = queries_for(args, corpus)
    # compile outside the timings: one block of the same shape and dtype as the shards' chunks gives
    # the same programs (a pass over the real corpus would double the time at 10M rows)
    warm = np.zeros((min(DEFAULT_CHUNK_ROWS, index.count), index.dim), index.dtype)
    exact_search(queries, warm, args.k)
    exact_search(queries[:1], warm, args.k)
    t0 = time.perf_counter()
    scores, rows = exact_search(queries, index, args.k)
    batch_s = time.perf_counter() - t0
    np.save(Path(spec["out"]), rows)
    single, t_single = 0, 0.0
    while single < min(args.single, 5) and t_single < SINGLE_BUDGET_S:
        t0 = time.perf_counter()
        exact_search(queries[single:single + 1], index, args.k)
        t_single += time.perf_counter() - t0
        single += 1
    return {"qps_batch": len(queries) / batch_s, "qps_single": single / t_single, "single_timed": single,
            "peak_rss": peak_rss_bytes(), "disk": sum(p.stat().st_size for p in Path(corpus["dir"]).glob("shard-*"))}


def phase_build(args, spec) -> dict:
    from dpr_jax.index.ann import AnnSettings, build_ann
    from dpr_jax.index.store import open_index

    index = open_index(spec["corpus"]["dir"])
    t0 = time.perf_counter()
    desc = build_ann(index, AnnSettings(**spec["settings"]), spec["out"], progress=True)
    return {"build_s": time.perf_counter() - t0, "peak_rss": peak_rss_bytes(), "disk": desc["faiss_bytes"],
            "factory": desc["factory"], "train_size": desc["settings"]["train_size"]}


def _bytes_per_vector(faiss, fidx) -> int | None:
    """Code bytes per vector held by the index (+ 8 for the stored id of an IVF list entry)."""
    fidx = faiss.downcast_index(fidx)
    if isinstance(fidx, faiss.IndexRefine):
        return _bytes_per_vector(faiss, fidx.base_index) + faiss.downcast_index(fidx.refine_index).sa_code_size()
    if isinstance(fidx, faiss.IndexPreTransform):
        return _bytes_per_vector(faiss, fidx.index)
    try:
        return int(faiss.extract_index_ivf(fidx).code_size) + 8
    except RuntimeError:
        pass
    try:
        return int(fidx.sa_code_size())
    except RuntimeError:  # HNSW: no standalone codec (only the goal projection, over IVF indexes, needs it)
        return None


def phase_search(args, spec) -> dict:
    """Load an ANN index, search the queries at each operating point, compare with the ground truth."""
    import faiss
    import numpy as np

    from dpr_jax.index.ann import open_ann, rerank_exact
    from dpr_jax.index.store import open_index

    corpus = spec["corpus"]
    index = open_index(corpus["dir"])
    t0 = time.perf_counter()
    ann = open_ann(spec["ann"], index)
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_bytes()
    queries = queries_for(args, corpus)
    truth = np.load(spec["truth"])
    points = []
    for point in spec["points"]:
        kw = {k: v for k, v in point.items() if k in ("nprobe", "ef_search")}
        rerank = point.get("rerank")
        params = {k: v for k, v in point.items() if k not in kw and k != "rerank"}

        def search(q):
            scores, rows = ann.search(q, rerank or args.k, params=params, **kw)
            return rerank_exact(index, q, rows, args.k)[1] if rerank else rows

        search(queries[:8])  # warm-up
        t0 = time.perf_counter()
        rows = search(queries)
        batch_s = time.perf_counter() - t0
        single, t_single = 0, 0.0
        while spec.get("single", True) and single < min(args.single, len(queries)) and t_single < SINGLE_BUDGET_S:
            t0 = time.perf_counter()
            search(queries[single:single + 1])
            t_single += time.perf_counter() - t0
            single += 1
        rec = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows.tolist(), truth.tolist())]))
        points.append({"point": point, "recall": rec, "qps_batch": len(queries) / batch_s,
                       "qps_single": single / t_single if single else None, "single_timed": single,
                       "shard_bytes_read_per_query": (rerank or 0) * index.dim * index.shard_vectors(0).itemsize})
    return {"load_s": load_s, "rss_loaded": rss_loaded, "peak_rss": peak_rss_bytes(),
            "file_bytes": Path(spec["ann"]).stat().st_size, "bytes_per_vector": _bytes_per_vector(faiss, ann.index),
            "points": points}


def phase_squad(args, spec) -> dict:
    """SQuAD top-k accuracy of exact search and of each index over the real corpus (hits by source text)."""
    import numpy as np

    from dpr_jax.eval.has_answer import AnswerMatcher
    from dpr_jax.index.ann import open_ann
    from dpr_jax.index.search import exact_search
    from dpr_jax.index.store import open_index

    corpus = spec["corpus"]
    real = json.loads((args.work_dir / "real" / "texts.json").read_text())
    texts, questions = real["texts"], real["questions"]
    q_vecs = np.load(args.work_dir / "real" / "question_vecs.npy")  # --squad-questions applied when encoding
    index = open_index(corpus["dir"])
    runs = {"exact (JAX)": exact_search(q_vecs, index, args.k)[1]}
    for name, (path, point) in spec["anns"].items():
        kw = {k: v for k, v in point.items() if k in ("nprobe", "ef_search")}
        runs[name] = open_ann(path, index).search(q_vecs, args.k, **kw)[1]
    ks = [k for k in (1, 5, 20, 100) if k <= args.k]
    out = {}
    for name, rows in runs.items():
        hits = np.zeros((len(questions), len(ks)))
        for qi, (q, row) in enumerate(zip(questions, rows)):
            match, seen = AnswerMatcher(q["answers"]), {}
            flags = [seen.setdefault(r % len(texts), match(texts[r % len(texts)])) if r >= 0 else False for r in row]
            first = next((i for i, f in enumerate(flags) if f), None)
            hits[qi] = [first is not None and first < k for k in ks]
        out[name] = {f"top{k}": float(hits[:, j].mean()) for j, k in enumerate(ks)}
    return {"questions": len(questions), "accuracy": out}


PHASES = {"encode-real": phase_encode_real, "write-real": phase_write_real, "write-synth": phase_write_synth,
          "truth": phase_truth, "build": phase_build, "search": phase_search, "squad": phase_squad}


# ------------------------------------------------------------------ plan


def index_types(args, dim: int) -> dict:
    """Index type -> (build settings, operating points, estimated index bytes per vector)."""
    from dpr_jax.index.ann import default_pq_m

    pq_m = default_pq_m(dim)
    return {
        "hnsw": ({"type": "hnsw", "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction},
                 [{"ef_search": 128}, {"ef_search": 512}], 4 * dim + 8 * args.hnsw_m + 16),
        "ivf-flat": ({"type": "ivf-flat", "nlist": args.nlist}, [{"nprobe": 16}, {"nprobe": 64}], 4 * dim + 8),
        "ivf-pq": ({"type": "ivf-pq", "nlist": args.nlist, "pq_m": pq_m}, [{"nprobe": 16}, {"nprobe": 64}],
                   pq_m + 8),
        "sq8": ({"type": "sq8"}, [{}], dim),
    }


def goal_candidates(args, dim: int) -> dict:
    """factory string -> (extra search settings, note): IVF-PQ variants for 21M x 768 in 4 GB.

    At 768-d: 96 B (PQ96x8) or 128 B (PQ128x8) codes + 8 B ids, or 64 B fast-scan codes (PQ128x4fs)
    as a shortlist re-ranked either by 96 B PQ codes in RAM (faiss Refine, 168 B) or exactly from
    the float16 shards on disk (``rerank``: the codes are all that sits in RAM). The coarse quantiser
    is an HNSW graph over the centroids (``IVF{n}_HNSW32``): the same lists as a flat one, but
    assigning 10M rows to them takes minutes instead of most of an hour.
    """
    n = args.nlist
    m8 = max(m for m in range(1, dim // 8 + 1) if dim % m == 0)  # dim/8 sub-quantisers: 96 at 768
    m6 = max(m for m in range(1, dim // 6 + 1) if dim % m == 0 and m % 2 == 0)  # dim/6: 128 at 768
    rerank = "shortlist re-scored exactly from the shards on disk (rerank K)"
    out: dict = {}
    for factory, extra, note in [
        (f"IVF{n}_HNSW32,PQ{m8}x8np", [{}, {"rerank": 300}, {"rerank": 1000}], rerank),
        (f"OPQ{m8},IVF{n}_HNSW32,PQ{m8}x8np", [{}], "OPQ: a learned rotation before PQ"),
        (f"IVF{n}_HNSW32,PQ{m6}x8np", [{}], ""),
        (f"IVF{n}_HNSW32,PQ{m6}x4fs", [{"rerank": 300}, {"rerank": 1000}], "4-bit fast-scan codes; " + rerank),
        (f"IVF{n}_HNSW32,PQ{m6}x4fs,Refine(PQ{m8}x8np)", [{"k_factor_rf": 4}, {"k_factor_rf": 8}],
         "4-bit fast-scan shortlist of k_factor x k re-ranked by 8-bit PQ codes in RAM (faiss Refine)"),
    ]:  # at small dims m6 may equal m8: one build, every setting
        have = out.setdefault(factory, ([], note))[0]
        have += [e for e in extra if e not in have]
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = list(argv)
    fair_blas_env(args.keep_openblas_env)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args, json.loads(args.spec))))
        return 0

    import numpy  # noqa: F401  (loads OpenBLAS so machine_info can name its kernel)

    info = machine_info(PACKAGES)
    log(machine_line(info))
    budget = (args.ram_budget * 1e9) if args.ram_budget else 0.6 * info.get("memory_gib", 16) * 2**30
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    m = work / "measurements"
    need = (args.real_rows * 384 + sum(args.synth_rows) * args.synth_dim) * 2 * 2.3  # shards + indexes
    if shutil.disk_usage(work).free < need and not (work / "corpora").exists():
        raise SystemExit(f"not enough disk under --work-dir: ~{need / 1e9:.0f} GB needed")

    corpora = []
    if "real" not in args.skip:
        enc = cached(m / "encode-real.json", lambda: run_phase(args, "encode-real", {}))
        if (enc["texts_limit"], enc["questions_limit"]) != (args.real_texts, args.squad_questions):
            raise SystemExit(f"{work} holds vectors encoded with --real-texts {enc['texts_limit']} "
                             f"--squad-questions {enc['questions_limit']}: use another --work-dir")
        log(f"real texts: {enc}")
        d = work / "corpora" / f"real-{label(args.real_rows)}"
        spec = {"dir": str(d), "rows": args.real_rows}
        w = cached(m / f"write-{d.name}.json", lambda: run_phase(args, "write-real", spec))
        corpora.append({"name": d.name, "dir": str(d), "kind": "real", "rows": args.real_rows, "dim": enc["dim"],
                        "write": w})
    for rows in args.synth_rows:
        if rows >= 10_000_000 and "synth-10M" in args.skip:
            continue
        d = work / "corpora" / f"synth-{label(rows)}"
        spec = {"dir": str(d), "rows": rows}
        w = cached(m / f"write-{d.name}.json", lambda: run_phase(args, "write-synth", spec))
        corpora.append({"name": d.name, "dir": str(d), "kind": "synth", "rows": rows, "dim": args.synth_dim,
                        "write": w})
    log(f"corpora: {[c['name'] for c in corpora]}")

    results = {"corpora": {}, "squad": None, "goal": None}
    for c in corpora:
        cspec = {k: c[k] for k in ("name", "dir", "kind", "rows", "dim")}
        truth_path = work / "truth" / f"{c['name']}.npy"
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        exact = cached(m / f"truth-{c['name']}.json",
                       lambda: run_phase(args, "truth", {"corpus": cspec, "out": str(truth_path)}))
        log(f"{c['name']} exact: {exact}")
        entry = {"rows": c["rows"], "dim": c["dim"], "exact": exact, "types": {}}
        for name, (settings, points, bpv) in index_types(args, c["dim"]).items():
            if name == "hnsw" and "hnsw" in args.skip:
                continue
            est = bpv * c["rows"]
            if est > budget:
                entry["types"][name] = {"skipped": f"needs ~{est / 1e9:.1f} GB of RAM (budget {budget / 1e9:.1f} GB)"}
                log(f"{c['name']} {name}: skipped, ~{est / 1e9:.1f} GB")
                continue
            entry["types"][name] = measure(args, m, work, cspec, name, settings, points, truth_path)
        results["corpora"][c["name"]] = entry

    real = next((c for c in corpora if c["kind"] == "real"), None)
    if real and "squad" not in args.skip:
        anns = {}
        for name, t in results["corpora"][real["name"]]["types"].items():
            if "skipped" not in t:
                for p in t["search"]["points"]:
                    anns[f"{name} {fmt_point(p['point'])}"] = (str(work / t["index_file"]), p["point"])
        cspec = {k: real[k] for k in ("name", "dir", "kind", "rows", "dim")}
        results["squad"] = cached_phase(args, m / f"squad-{real['name']}.json", "squad", {"corpus": cspec, "anns": anns})
        log(f"squad: {results['squad']}")

    synth = [c for c in corpora if c["kind"] == "synth"]
    if synth and "goal" not in args.skip:
        results["goal"] = goal_search(args, m, work, synth[-1], work / "truth" / f"{synth[-1]['name']}.npy")

    results["machine"] = info
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in ("work_dir", "out_dir", "phase", "spec", "squad", "argv")}
    if str(work) in json.dumps(results) or str(work.resolve()) in json.dumps(results):
        raise SystemExit("internal error: a machine path would be written into the results")
    write_results("ann_speed", render(args, results, info), results, args.out_dir)
    log("wrote ann_speed.md/.json")
    return 0


def measure(args, m: Path, work: Path, cspec: dict, name: str, settings: dict, points: list, truth_path: Path,
            single: bool = True) -> dict:
    path = work / "indexes" / cspec["name"] / f"{name}.faiss"
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = measurement_tag(cspec, name)
    build = cached_phase(args, m / f"build-{tag}.json", "build",
                         {"corpus": cspec, "settings": settings, "out": str(path)})
    log(f"{tag} build: {build}")
    search = cached_phase(args, m / f"search-{tag}.json", "search",
                          {"corpus": cspec, "ann": str(path), "truth": str(truth_path), "points": points,
                           "single": single})
    log(f"{tag} search: {search}")
    return {"index_file": str(path.relative_to(work)), "settings": settings, "build": build, "search": search}


def measurement_tag(cspec: dict, name: str) -> str:
    """The name under which one index's build and search measurements are kept."""
    return f"{cspec['name']}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"


def project(args, rows: int, search: dict, point: dict) -> dict:
    """The 21M-row projection of one measured operating point (formulas in the module docstring)."""
    b = search["bytes_per_vector"]
    fixed = max(0, search["file_bytes"] - b * rows)
    overhead = max(0, search["peak_rss"] - search["file_bytes"])
    n = args.goal_rows
    return {"bytes_per_vector": b, "fixed_bytes": fixed, "serve_overhead_bytes": overhead,
            "ram": overhead + fixed + b * n, "qps": point["qps_batch"] * rows / n, "recall": point["recall"]}


def goal_search(args, m: Path, work: Path, corpus: dict, truth_path: Path) -> dict:
    cspec = {k: corpus[k] for k in ("name", "dir", "kind", "rows", "dim")}
    rows_out, not_measured = [], []
    for factory, (extra, note) in goal_candidates(args, corpus["dim"]).items():
        if args.goal_kept_only and not (m / f"search-{measurement_tag(cspec, 'goal ' + factory)}.json").is_file():
            not_measured.append(factory)
            continue
        points = [{"nprobe": p, **e} for p in args.goal_nprobe for e in extra]
        r = measure(args, m, work, cspec, "goal " + factory, {"type": "factory", "factory": factory}, points,
                    truth_path, single=False)  # the goal is about 1,000-query batches
        for point in r["search"]["points"]:
            proj = project(args, corpus["rows"], r["search"], point)
            meets = proj["ram"] <= GOAL_RAM_BYTES and proj["recall"] >= GOAL_RECALL and proj["qps"] >= GOAL_QPS
            rows_out.append({"factory": factory, "note": note, "point": point["point"], "measured": point,
                             "build_s": r["build"]["build_s"], "projection": proj, "meets_goal": meets})
    best = [r for r in rows_out if r["meets_goal"]]
    best = max(best, key=lambda r: r["projection"]["qps"]) if best else max(
        (r for r in rows_out if r["projection"]["ram"] <= GOAL_RAM_BYTES),
        key=lambda r: (r["projection"]["qps"] >= GOAL_QPS, r["projection"]["recall"]), default=None)
    return {"corpus": corpus["name"], "rows": corpus["rows"], "target_rows": args.goal_rows, "candidates": rows_out,
            "best": best, "met": bool(best and best["meets_goal"]), "not_measured": not_measured}


# ------------------------------------------------------------------ report


def fmt_point(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "-"


def render(args, results: dict, info: dict) -> str:
    out = ["# Approximate indexes (faiss via `dpr-jax index build`) vs exact search", ""]
    if args.quick:
        out += ["**`--quick` smoke run: tiny sizes, NOT benchmark figures.**", ""]
    out += [f"k = {args.k}; {args.queries:,} queries per corpus; recall@{args.k} = overlap with the exact "
            f"top-{args.k} of dpr-jax `exact_search`; q/s (batch) = one {args.queries:,}-query call, q/s (1) = "
            f"queries one at a time; build RSS = peak RSS of the build process; serve RSS = peak RSS of a process "
            f"that loaded the index and searched; disk = the index file (exact: the float16 shards). "
            f"IVF indexes use nlist {args.nlist}; faiss and JAX use every core.", ""]
    for name, c in results["corpora"].items():
        out += [f"## {name}: {c['rows']:,} x {c['dim']}", ""]
        e = c["exact"]
        rows = [["exact (JAX, streamed shards)", "-", "1.000", f"{e['qps_batch']:,.1f}", f"{e['qps_single']:,.2f}",
                 "-", "-", human(e["peak_rss"]), human(e["disk"])]]
        for tname, t in c["types"].items():
            if "skipped" in t:
                rows.append([tname, "-", "skipped", t["skipped"], "", "", "", "", ""])
                continue
            b, s = t["build"], t["search"]
            for i, p in enumerate(s["points"]):
                first = i == 0
                rows.append([tname if first else "", fmt_point(p["point"]), f"{p['recall']:.3f}",
                             f"{p['qps_batch']:,.1f}", f"{p['qps_single']:,.1f}",
                             f"{b['build_s']:,.0f}" if first else "", human(b["peak_rss"]) if first else "",
                             human(s["peak_rss"]) if first else "", human(b["disk"]) if first else ""])
        out += [markdown_table(["index", "search setting", f"recall@{args.k}", "q/s (batch)", "q/s (1)",
                                "build s", "build RSS", "serve RSS", "disk"], rows), ""]
    sq = results.get("squad")
    if sq:
        ks = list(next(iter(sq["accuracy"].values())))
        out += [f"## SQuAD v1.1 dev: top-k accuracy over the real corpus ({sq['questions']:,} questions)", "",
                "A hit counts when the text its vector came from (a paragraph or a sentence; noisy copies count "
                "as their source) contains an answer (DPR has_answer).", ""]
        out += [markdown_table(["search", *[k.replace("top", "top-") for k in ks]],
                               [[n, *[f"{100 * a[k]:.1f}" for k in ks]] for n, a in sq["accuracy"].items()]), ""]
    g = results.get("goal")
    if g:
        out += [f"## Goal: {g['target_rows']:,} x 768 in 4 GB, recall@{args.k} >= {GOAL_RECALL}, >= {GOAL_QPS:.0f} q/s",
                "", f"Measured on {g['corpus']} ({g['rows']:,} rows), projected to {g['target_rows']:,}:", "",
                "    bytes/vector b = code size (+ refine code size) + 8-byte id;  fixed F = file size - b * N",
                f"    RAM = (serve RSS - file size) + F + b * {g['target_rows']:,}",
                f"    q/s = measured q/s * {g['rows']:,} / {g['target_rows']:,}   (every per-query cost taken as "
                "proportional to N: conservative)",
                "    recall = measured recall at the same nlist and nprobe (assumption; compare the 1M and 10M rows "
                "above)", ""]
        rows = []
        for r in g["candidates"]:
            p, read = r["projection"], r["measured"].get("shard_bytes_read_per_query")
            rows.append([r["factory"], fmt_point(r["point"]), f"{r['measured']['recall']:.3f}",
                         f"{r['measured']['qps_batch']:,.0f}", str(p["bytes_per_vector"]), human(p["ram"]),
                         f"{p['qps']:,.0f}", human(read) if read else "-", "**yes**" if r["meets_goal"] else "no"])
        out += [markdown_table(["faiss index", "search setting", f"recall@{args.k}", "q/s measured", "B/vector",
                                "RAM projected", "q/s projected", "shard reads/query", "meets goal"], rows), "",
                "`rerank=K` rows re-score the index's top K exactly from the float16 shards (`dpr-jax search "
                "--rerank K`): only the codes sit in RAM, and each query reads K vectors from the shards. Here "
                "those reads may come from the page cache; at 21M rows (32 GB of shards) a 4 GB machine reads "
                "them from disk: K random reads per query (K=300 at 100 q/s: 30,000 reads/s, 46 MB/s, "
                "NVMe-class storage).", ""]
        if g.get("not_measured"):
            out += [f"Not measured in this run (it ran out of time): {', '.join(f'`{f}`' for f in g['not_measured'])}.",
                    ""]
        b = g["best"]
        if b:
            verdict = "met" if g["met"] else "**missed**"
            out += [f"Goal {verdict}. Best: `{b['factory']}` with {fmt_point(b['point'])}: recall@{args.k} "
                    f"{b['projection']['recall']:.3f}, {human(b['projection']['ram'])} projected RAM, "
                    f"{b['projection']['qps']:,.0f} q/s projected."
                    + (f" ({b['note']}.)" if b["note"] else ""), ""]
    out += [f"Machine: {machine_line(info)}", ""]
    warn = load_warning(info.get("loadavg_1min"), info.get("usable_cores"))
    if warn:
        out += [warn, ""]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
