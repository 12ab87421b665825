"""Memory of building a BM25 index (``BM25Index.build``, i.e. ``dpr-jax bm25``) per passage.

Two questions, each answered by building in fresh processes:

1. How many bytes per passage does the build hold? Synthetic corpora of two sizes (10k and 100k
   passages by default, 3-6 random real SQuAD dev sentences each, ~100 words, as in
   ``encode_memory.py``) are indexed; the child records its resident memory (``/proc/self/statm``)
   at the moment ``bm25s`` starts building its matrices (everything tokenised is held then) and its
   peak RSS (``ru_maxrss``) over the whole build. The difference between the two sizes divided by
   the difference in passages is the cost per passage, with the fixed cost (imports, vocabulary of
   the shared sentences) cancelled.
2. What does one huge passage cost? 1,000 passages with and without one extra 10 MB passage.

    python bench/bm25_memory.py                          # 10k and 100k passages, plus the 10 MB passage
    python bench/bm25_memory.py --sizes 20000 200000

Writes bench/results/bm25_memory.md and .json. Memory figures are RSS, fine on a loaded machine;
no timing is claimed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, machine_info, machine_line, markdown_table, write_results  # noqa: E402
from bench.encode_memory import sentences_of, write_corpus  # noqa: E402

PACKAGES = ("numpy", "scipy", "bm25s", "PyStemmer")
HUGE_MB = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    p.add_argument("--squad", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="a name for this code version in the output (e.g. before/after)")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--child", metavar="PASSAGES", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(passages: str) -> int:
    """Build the index of one corpus; print a JSON line with the memory figures."""
    import bm25s

    from dpr_jax.index.bm25 import BM25Index

    seen = {}
    index = bm25s.BM25.index

    def recording_index(self, *args, **kwargs):
        seen["rss_at_index_mib"] = rss_mib()
        return index(self, *args, **kwargs)

    bm25s.BM25.index = recording_index
    start = rss_mib()
    built = BM25Index.build(passages, show_progress=False)
    print(json.dumps({"passages": len(built), "rss_start_mib": start, **seen,
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def run_child(passages: Path) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(passages)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    info = machine_info(PACKAGES)
    log(machine_line(info))
    sentences, titles = sentences_of(args.squad)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bm25-memory-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            corpus = work / f"passages-{n}.jsonl"
            write_corpus(corpus, n, sentences, titles, args.seed)
            runs[n] = run_child(corpus)
            if runs[n]["passages"] != n:
                log(f"indexed {runs[n]['passages']} passages of {n}")
                return 1
            log(f"{n:,} passages: {runs[n]}")
        small = work / "passages-1000.jsonl"
        write_corpus(small, 1000, sentences, titles, args.seed)
        huge = work / "passages-1000-huge.jsonl"
        rng = random.Random(args.seed)
        words = " ".join(sentences).split()
        text = []
        size = 0
        while size < HUGE_MB * 2**20:
            w = rng.choice(words)
            text.append(w)
            size += len(w) + 1
        huge.write_text(small.read_text() + json.dumps({"id": "huge", "title": "Huge", "text": " ".join(text)}) + "\n")
        runs["1000"] = run_child(small)
        runs["1000+huge"] = run_child(huge)
        log(f"1,000 passages: {runs['1000']}; with a {HUGE_MB} MB passage: {runs['1000+huge']}")
    a, b = args.sizes
    per = {key: (runs[b][key] - runs[a][key]) * 2**20 / (b - a) for key in ("rss_at_index_mib", "maxrss_mib")}
    huge_cost = runs["1000+huge"]["maxrss_mib"] - runs["1000"]["maxrss_mib"]
    rows = [[f"{n:,}", f"{runs[n]['rss_at_index_mib']:.0f}", f"{runs[n]['maxrss_mib']:.0f}"] for n in args.sizes]
    rows.append([f"1,000 + one {HUGE_MB} MB passage", f"{runs['1000+huge']['rss_at_index_mib']:.0f}",
                 f"{runs['1000+huge']['maxrss_mib']:.0f}"])
    rows.append(["1,000", f"{runs['1000']['rss_at_index_mib']:.0f}", f"{runs['1000']['maxrss_mib']:.0f}"])
    label = f" ({args.label})" if args.label else ""
    md = "\n".join([
        f"# Memory of a BM25 build per passage{label}",
        "",
        "`BM25Index.build` (what `dpr-jax bm25` runs when it has no cached index) on synthetic passages of 3-6 "
        "random real SQuAD dev sentences (~100 words), each corpus in a fresh process. 'At bm25s index' is the "
        "resident memory when bm25s starts building its matrices (every passage tokenised and held); 'peak' is "
        "the process's maximum RSS over the build.",
        "",
        markdown_table(["passages", "RSS at bm25s index MiB", "peak RSS MiB"], rows),
        "",
        f"Per passage (from {a:,} to {b:,}): {per['rss_at_index_mib']:.0f} B held when bm25s starts, "
        f"{per['maxrss_mib']:.0f} B at the peak. One {HUGE_MB} MB passage adds {huge_cost:+.0f} MiB to the peak.",
        "",
        f"Machine: {machine_line(info)}",
    ])
    data = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info, "runs": {str(k): v for k, v in runs.items()}, "per_passage_bytes": per,
            "huge_passage_mib": huge_cost}
    md_path, _ = write_results("bm25_memory" + (f"_{args.label}" if args.label else ""), md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
