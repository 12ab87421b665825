"""BM25 speed: dpr-jax ``BM25Index`` vs ``bm25s`` used directly (index build and top-k query rate).

The corpus is every SQuAD v1.1 dev paragraph (2,067; ``--repeat R`` repeats them R times under new
ids for a larger index), written as a passages JSON-lines file; the queries are all 10,570 dev
questions. Both sides use the same settings (Lucene BM25, k1=0.9, b=0.4, lower-case, English stop
words, Snowball English stemmer, title + text), one thread, no progress bars:

- dpr-jax: ``BM25Index.build(passages_path)`` (streaming read with validation, tokenise, index) and
  ``index.search(questions, k)`` (tokenise, retrieve, map rows to passage ids);
- bm25s directly, as its README shows: read the same file with ``json.loads``, ``bm25s.tokenize``,
  ``BM25(...).index``; ``bm25s.tokenize(questions)`` + ``retrieve`` (+ rows to ids).

Contenders alternate for several rounds (see ``bench/common.py``); the table gives medians and the
median per-round overhead ratio (dpr-jax time / bm25s time). The top-k ids of both are compared.

    python bench/bm25_speed.py                 # 2,067 passages, 10,570 questions, k=100
    python bench/bm25_speed.py --repeat 50     # ~100k passages

Writes bench/results/bm25_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternate, fair_blas_env, log, machine_info, machine_line, markdown_table,  # noqa: E402
                          portable_config, write_results)

PACKAGES = ("numpy", "scipy", "bm25s", "PyStemmer", "jax")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad", default=None, help="SQuAD v1.1 dev JSON (default: dpr_jax.settings.squad_dev_path())")
    p.add_argument("--repeat", type=int, default=1, help="repeat the 2,067 paragraphs this many times")
    p.add_argument("--queries", type=int, default=0, help="use the first N questions (default all)")
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one untimed warm-up round")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--keep-openblas-env", action="store_true")
    return p.parse_args(argv)


def write_corpus(articles, repeat: int, path: Path) -> int:
    """Passages JSON lines ``{"id", "title", "text"}``: every paragraph, ``repeat`` times."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in range(repeat):
            for a in articles:
                for i, p in enumerate(a["paragraphs"]):
                    pid = f"{a['title']}#{i}" + (f"~{r}" if r else "")
                    f.write(json.dumps({"id": pid, "title": a["title"].replace("_", " "), "text": p["context"]}) + "\n")
                    n += 1
    return n


class DirectBM25:
    """bm25s used as its README shows, over the same passages file."""

    def __init__(self, settings):
        self.s = settings

    def _stemmer(self):
        import Stemmer

        return Stemmer.Stemmer(self.s.stemmer)

    def build(self, path):
        import bm25s

        ids, texts = [], []
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                ids.append(rec["id"])
                texts.append(f"{rec['title']} {rec['text']}" if rec.get("title") else rec["text"])
        tokens = bm25s.tokenize(texts, lower=True, stopwords=self.s.stopwords, stemmer=self._stemmer(),
                                show_progress=False)
        retriever = bm25s.BM25(k1=self.s.k1, b=self.s.b, method=self.s.method)
        retriever.index(tokens, show_progress=False)
        self.ids, self.retriever = ids, retriever
        return self

    def search(self, queries, k):
        import bm25s

        tokens = bm25s.tokenize(queries, lower=True, stopwords=self.s.stopwords, stemmer=self._stemmer(),
                                show_progress=False)
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [[self.ids[int(j)] for j in row] for row in docs], scores


def compare(a_ids, a_scores, b_ids, b_scores) -> dict:
    """How often the two top-k lists agree; score differences."""
    import numpy as np

    same_order = sum(x == y for x, y in zip(a_ids, b_ids))
    same_set = sum(set(x) == set(y) for x, y in zip(a_ids, b_ids))
    same_top1 = sum(x[:1] == y[:1] for x, y in zip(a_ids, b_ids))
    max_score_diff = float(np.max(np.abs(np.asarray(a_scores, np.float64) - np.asarray(b_scores, np.float64))))
    return {"queries": len(a_ids), "identical_lists": same_order, "identical_sets": same_set,
            "identical_top1": same_top1, "max_abs_score_diff_by_rank": max_score_diff}


def main(argv=None) -> int:
    args = parse_args(argv)
    fair_blas_env(args.keep_openblas_env)

    from bench.common import squad_articles
    from dpr_jax.index.bm25 import BM25Index, BM25Settings

    info = machine_info(PACKAGES)
    log(machine_line(info))
    articles = squad_articles(args.squad)
    questions = [qa["question"] for a in articles for p in a["paragraphs"] for qa in p["qas"]]
    if args.queries:
        questions = questions[: args.queries]
    settings = BM25Settings()
    with tempfile.TemporaryDirectory(prefix="bm25-speed-") as tmp:
        path = Path(tmp) / "passages.jsonl"
        n = write_corpus(articles, args.repeat, path)
        log(f"{n:,} passages, {len(questions):,} questions, k={args.k}")
        direct = DirectBM25(settings)
        build = alternate({"dpr-jax BM25Index.build": lambda: BM25Index.build(path, show_progress=False),
                           "bm25s direct": lambda: direct.build(path)},
                          args.rounds, baseline="bm25s direct", log=lambda m: log(f"build {m}"))
        index = build["result"]["dpr-jax BM25Index.build"]
        search = alternate({"dpr-jax BM25Index.search": lambda: index.search(questions, args.k, show_progress=False),
                            "bm25s direct": lambda: direct.search(questions, args.k)},
                           args.rounds, baseline="bm25s direct", log=lambda m: log(f"search {m}"))
    ours, theirs = search["result"]["dpr-jax BM25Index.search"], search["result"]["bm25s direct"]
    agreement = compare(ours[0], ours[1], theirs[0], theirs[1])
    log(f"agreement: {agreement}")

    rows, out = [], {}
    for what, res, unit in (("build", build, None), ("search", search, "queries/s")):
        for name, med in res["median_s"].items():
            rate = len(questions) / med if unit else n / med
            ratio = res["ratio_vs_baseline"][name]
            out[f"{what}: {name}"] = {"median_s": med, "times_s": res["times_s"][name],
                                      ("queries_per_s" if unit else "passages_per_s"): rate,
                                      "time_ratio_vs_bm25s": ratio}
            rows.append([what, name, f"{med:.3f}", f"{rate:,.0f} {unit or 'passages/s'}",
                         "" if name == "bm25s direct" else f"{ratio:.2f}x"])
    md = "\n".join([
        "# BM25 speed: dpr-jax BM25Index vs bm25s directly",
        "",
        f"Corpus: {n:,} SQuAD v1.1 dev paragraphs (title + text{f', {args.repeat} copies' if args.repeat > 1 else ''}), "
        f"{len(questions):,} dev questions, k={args.k}; Lucene BM25 k1={settings.k1}, b={settings.b}, English stop "
        f"words and stemmer, one thread. Build times include reading the passages file. {args.rounds} rounds after "
        f"one warm-up, contenders alternating; overhead = median over rounds of t_dpr-jax / t_bm25s (1.00x = none).",
        "",
        markdown_table(["stage", "contender", "median s", "rate", "overhead vs bm25s"], rows),
        "",
        f"Agreement of the top-{args.k} lists: {agreement['identical_lists']:,}/{agreement['queries']:,} identical "
        f"(ids and order), {agreement['identical_sets']:,} identical sets, {agreement['identical_top1']:,} identical "
        f"top-1; largest score difference at equal rank {agreement['max_abs_score_diff_by_rank']:.2e}.",
        "",
        f"Machine: {machine_line(info)}",
    ])
    data = {"config": portable_config(args), "passages": n, "questions": len(questions),
            "machine": info, "results": out, "agreement": agreement}
    md_path, _ = write_results("bm25_speed", md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
