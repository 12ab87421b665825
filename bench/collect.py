"""Gather every benchmark's ``bench/results/*.md`` into ``BENCHMARKS.md`` (run after the benchmarks).

  python bench/collect.py
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["encode_speed", "encode_speed_gpu", "train_speed", "train_speed_gpu", "accelerator_suite_gpu",
         "accelerator_suite_tpu", "search_speed", "search_scale", "ann_speed", "encode_memory", "scale_rehearsal",
         "host_data_memory", "bm25_speed", "bm25_memory"]
INTRO = """# Benchmarks

Every figure here was produced by a script in `bench/` (named in each section) and is a same-run
comparison: contenders alternate (A B A B ...) over several rounds, and the tables give medians and
the median ratio, because these 2-core machines drift 1.5-1.9x between runs. CPU runs shared the
machine with other work; each section's machine line gives the load. GPU runs are on one H100 lent
for the session. The SQuAD quality numbers are in the README (`bench/quality_gpu.sh`).

Long runs: `bench/scale_rehearsal.py` (DPR's 21,015,324 passages, synthetic, end to end on this
machine with every process's memory sampled; about 45 minutes) and `bench/ann_speed.py` (faiss
indexes vs exact search at 1M and 10M rows, and the 21M serving goal: 4 GB, recall@100 >= 0.95,
100 q/s on 2 cores; 1.5-3 hours). `bench/accelerator_suite.sh` (bert-base encode, train step and
10M x 768 exact search on a GPU or TPU, < 10 minutes; `--dry-run` on CPU checks it) is prepared and
its section appears once it has run on an accelerator. None of this is filled in by hand.
"""


def main() -> None:
    results = ROOT / "bench" / "results"
    names = [n for n in ORDER if (results / f"{n}.md").exists()]
    names += sorted(p.stem for p in results.glob("*.md") if p.stem not in names)
    parts = [INTRO]
    for name in names:
        body = (results / f"{name}.md").read_text().strip()
        body = "\n".join(("#" + line) if line.startswith("#") else line for line in body.splitlines())
        script = name.removesuffix("_gpu").removesuffix("_tpu")
        script = "accelerator_suite.sh" if script == "accelerator_suite" else f"{script}.py"
        parts.append(f"{body}\n\n_Source: `bench/results/{name}.md`, made by `bench/{script}`._")
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n")
    print(f"BENCHMARKS.md: {len(names)} sections")


if __name__ == "__main__":
    main()
