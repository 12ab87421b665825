"""The 21M-passage rehearsal: DPR's Wikipedia corpus size end to end on this machine, memory watched.

What a pod user does with ``psgs_w100.tsv`` (21,015,324 passages), at full size but with a tiny
model so it fits on a small CPU machine:

1. **generate**: a synthetic file in ``psgs_w100.tsv`` format (``id<TAB>text<TAB>title`` with DPR's
   header, ids 1..N, short random text from the tokenizer's words), made on the fly under
   ``bench/_work/`` (git-ignored; never committed);
2. **validate**: ``dpr-jax data validate FILE --kind passages`` reads the whole file (every record,
   duplicate ids included);
3. **encode**: two ``dpr-jax encode --shard I/2`` processes at once, as two hosts of a pod would,
   with a tiny random BERT (hidden 32, 1 layer, max length 32) into float16 shards on disk; the
   job that finishes last checks every id on the ``.ids`` files and writes ``meta.json``. With
   ``--rows R`` below the file's size only the first R passages are encoded (a prefix file written
   in the same pass), and the encode rate is extrapolated to the full corpus;
4. **search**: ``dpr-jax search`` as a 2-process run (the ``DPR_JAX_*`` environment of
   ``launch/local.sh``), 1,000 synthetic questions, k=100, exact, each process scoring its half.

Every process's memory is sampled from ``/proc/PID/status`` (``VmRSS``, ``VmHWM``: the process's
own peak; ``ru_maxrss`` would start at the parent's) once per ``--sample-s``, with its progress:
for validate, the offset of its descriptor on the passages file (``/proc/PID/fdinfo``); for
encode, the rows in finished shards. Reported: peak RSS per process when ``--checkpoint-rows``
(1M) rows are done and at the end (it must stay flat), the curve, disk used, wall time per stage.

Then a projection for the real job (bert-base, 21M passages x 256 tokens, and NQ training with
``configs/nq.py``) on one H100, 8 x H100 and a TPU v4-32 pod: ``time = FLOPs / (devices x peak x
MFU)``, FLOPs from ``bench/common.py``'s ``forward_flops``; MFU measured on a GPU where
``bench/results/accelerator_suite_gpu.json`` (``bench/accelerator_suite.sh``) exists, otherwise
an assumed value that the table states.

    python bench/scale_rehearsal.py                       # the full rehearsal (see BENCHMARKS.md for time)
    python bench/scale_rehearsal.py --rows 5000000        # encode only the first 5M, extrapolate
    python bench/scale_rehearsal.py --total-rows 200000 --checkpoint-rows 50000 --out-dir bench/_work/smoke

Writes bench/results/scale_rehearsal.md and .json (no machine paths). ``--keep`` keeps the
generated files; otherwise the work directory is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (FLOP_FORMULA, RESULTS_DIR, forward_flops, log, machine_info, machine_line,  # noqa: E402
                          markdown_table, write_results)

REPO = Path(__file__).resolve().parents[1]
DPR_WIKI_ROWS = 21_015_324
NQ_TRAIN_QUESTIONS = 58_880  # facebookresearch/DPR's biencoder-nq-train.json
TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGES = ("numpy", "jax", "jaxlib", "flax", "tokenizers")
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "vocab_size": 30522}
# Dense bfloat16 peak per device (TFLOP/s): NVIDIA H100 SXM datasheet; Cloud TPU v4 (per chip; a v4-32
# slice is 16 chips = 32 TensorCores).
TARGETS = [("one H100", 1, 989.0), ("8 x H100", 8, 989.0), ("TPU v4-32 (16 chips)", 16, 275.0)]
ASSUMED_MFU = 0.40


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--total-rows", type=int, default=DPR_WIKI_ROWS, help="rows of the generated passages file")
    p.add_argument("--rows", type=int, default=None, help="passages to encode (default: all of them)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--block-size", type=int, default=100_000, help="passages per shard")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--checkpoint-rows", type=int, default=1_000_000, help="report peak RSS when this many rows are done")
    p.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work" / "scale_rehearsal")
    p.add_argument("--keep", action="store_true", help="keep the generated files and index")
    p.add_argument("--out-dir", type=Path, default=None, help="default bench/results")
    p.add_argument("--name", default="scale_rehearsal")
    p.add_argument("--calibrate-passages", type=int, default=16,
                   help="passages of 256 tokens the bert-base CPU calibration times (0: skip it)")
    p.add_argument("--calibrate-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rows = min(args.rows or args.total_rows, args.total_rows)
    return args


# ---------------------------------------------------------------- /proc sampling


def _status_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    if "VmHWM" not in values:
        return None
    return int(values.get("VmRSS", 0)), int(values["VmHWM"])


class FileOffset:
    """How far a process has read a file: the offset of its descriptor on it, with passes counted.

    ``dpr-jax data validate`` reads the file twice (a line count for the progress total, then the
    records); a new pass shows as the offset falling back.
    """

    def __init__(self, path: Path, total_rows: int):
        self.path, self.size, self.rows = path.resolve(), path.stat().st_size, total_rows
        self.passes, self.last = 0, -1

    def __call__(self, pid: int) -> dict:
        pos = None
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(self.path):
                        text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                        pos = int(re.search(r"^pos:\s+(\d+)", text, re.M).group(1))
                        break
                except (OSError, AttributeError):
                    continue
        except OSError:
            pass
        if pos is None:
            return {"pass": self.passes, "rows": None}
        if pos < self.last - (1 << 20) or self.last < 0:
            self.passes += 1
        self.last = pos
        return {"pass": self.passes, "rows": int(self.rows * min(pos / self.size, 1.0))}


class ShardRows:
    """Rows in finished shards of an index directory (both encode jobs together)."""

    def __init__(self, index_dir: Path, block_size: int, rows: int):
        self.dir, self.block, self.rows = index_dir, block_size, rows

    def __call__(self, pid: int) -> dict:
        done = len(list(self.dir.glob("shard-*.ids"))) if self.dir.is_dir() else 0
        return {"rows": min(done * self.block, self.rows)}


class Sampler(threading.Thread):
    """Samples RSS/HWM (and progress) of processes every ``period`` seconds until stopped."""

    def __init__(self, period: float):
        super().__init__(daemon=True)
        self.period, self.stop_event = period, threading.Event()
        self.tracked: dict[str, tuple[int, object]] = {}
        self.samples: dict[str, list[dict]] = {}
        self.t0 = time.perf_counter()

    def track(self, name: str, pid: int, progress=None) -> None:
        self.tracked[name] = (pid, progress)
        self.samples[name] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.period)

    def sample(self) -> None:
        now = time.perf_counter() - self.t0
        for name, (pid, progress) in list(self.tracked.items()):
            st = _status_kib(pid)
            if st is None:
                continue
            row = {"t": round(now, 2), "rss_mib": round(st[0] / 1024, 1), "hwm_mib": round(st[1] / 1024, 1)}
            if progress is not None:
                row |= progress(pid)
            self.samples[name].append(row)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def run_processes(stage: str, commands: dict[str, tuple[list[str], dict]], log_dir: Path, period: float,
                  progress=None) -> dict:
    """Start the commands at once, sample them, wait; per process: wall, status, output, samples."""
    sampler = Sampler(period)
    procs, started = {}, {}
    logs = {}
    for name, (argv, env) in commands.items():
        logs[name] = open(log_dir / f"{stage}-{name.replace('/', '-').replace(' ', '-')}.log", "w+")
        procs[name] = subprocess.Popen(argv, env=env, cwd=REPO, stdout=logs[name], stderr=subprocess.STDOUT)
        started[name] = time.perf_counter()
        sampler.track(name, procs[name].pid, progress)
    sampler.start()
    walls = {}
    pending = dict(procs)
    while pending:
        for name, proc in list(pending.items()):
            if proc.poll() is not None:
                walls[name] = time.perf_counter() - started[name]
                del pending[name]
        time.sleep(0.2)
    sampler.stop()
    out = {}
    for name, proc in procs.items():
        logs[name].seek(0)
        text = logs[name].read()
        logs[name].close()
        text = _clean(text)
        out[name] = {"wall_s": walls[name], "returncode": proc.returncode, "samples": sampler.samples[name],
                     "output": text}
        if proc.returncode:
            log(f"{stage} {name} exited with {proc.returncode}:\n{text[-3000:]}")
    return out


def _clean(text: str) -> str:
    """Output with each progress bar reduced to its last state."""
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if ln.strip())


# ---------------------------------------------------------------- the stages


def tokenizer_words() -> list[str]:
    from dpr_jax.models.loading import resolve_model_dir

    vocab = (resolve_model_dir(TOKENIZER) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return [w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3]


def write_corpus(path: Path, total: int, prefix: Path | None, prefix_rows: int, words: list[str], seed: int) -> None:
    """``total`` rows of ``id<TAB>text<TAB>title`` (DPR header; ids 1..total); the first ``prefix_rows`` also to ``prefix``.

    Texts are two random fragments of 6-10 words (from 20,000 fragments: 400M combinations),
    titles one of 5,000 random 1-3-word titles: about 20 tokens a passage.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    words_arr = np.array(words)
    frags = [" ".join(words_arr[rng.integers(0, len(words), rng.integers(6, 11))]) for _ in range(20_000)]
    titles = [" ".join(words_arr[rng.integers(0, len(words), rng.integers(1, 4))]).title() for _ in range(5_000)]
    block = 100_000
    with open(path, "w", encoding="utf-8") as f, (open(prefix, "w", encoding="utf-8") if prefix else open(os.devnull, "w")) as g:
        f.write("id\ttext\ttitle\n")
        g.write("id\ttext\ttitle\n")
        for start in range(0, total, block):
            n = min(block, total - start)
            a, b, t = (rng.integers(0, len(x), n) for x in (frags, frags, titles))
            lines = [f"{start + i + 1}\t{frags[a[i]]} {frags[b[i]]}\t{titles[t[i]]}\n" for i in range(n)]
            f.write("".join(lines))
            if prefix and start < prefix_rows:
                g.write("".join(lines[: prefix_rows - start]))


def write_questions(path: Path, n: int, words: list[str], seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = " ".join(rng.choice(words, rng.integers(5, 11)))
            f.write(json.dumps({"id": f"q{i}", "question": q + "?", "answers": [str(rng.choice(words))]}) + "\n")


def write_model(path: Path, hidden: int, layers: int, max_length: int, seed: int) -> dict:
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.export import export_model
    from dpr_jax.models.loading import init_random_model

    heads = max(1, hidden // 16)
    bert = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=4 * hidden, max_position_embeddings=max(64, max_length))
    loaded = init_random_model(bert, EncoderConfig(pooling="cls"), TOKENIZER, shared=True, seed=seed)
    export_model(loaded, path, "hf", overwrite=True)
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden, "vocab_size": 30522}


def mean_tokens(passages: Path, max_length: int, n: int = 4000) -> float:
    """Mean token count (title + text, truncated at max_length) of the first ``n`` passages."""
    import itertools

    from dpr_jax.data.passages import read_passages
    from dpr_jax.models.loading import resolve_model_dir
    from dpr_jax.models.tokenizer import TextTokenizer, passage_inputs

    tok = TextTokenizer.from_dir(resolve_model_dir(TOKENIZER))
    sample = list(itertools.islice(read_passages(passages, check_duplicates=False), n))
    enc = tok.encode_raw(passage_inputs([p.title for p in sample], [p.text for p in sample]), max_length)
    return sum(len(e.ids) for e in enc) / len(enc)


def calibrate_child(n: int) -> int:
    """Time bert-base (random init) encoding ``n`` passages of 256 tokens on this CPU; print JSON."""
    import numpy as np

    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model

    loaded = init_random_model(BertConfig(**BERT_BASE), EncoderConfig(pooling="cls"), TOKENIZER, shared=True)
    words = tokenizer_words()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 300)) for _ in range(n)]
    encoder = TextEncoder(loaded, batch_size=min(n, 16), max_length=256)
    encoder.encode_passages([""] * n, texts)  # compile + warm up
    t0 = time.perf_counter()
    encoder.encode_passages([""] * n, texts)
    seconds = time.perf_counter() - t0
    lengths = [len(e.ids) for e in loaded.tokenizer.encode_raw(texts, 256)]
    print(json.dumps({"passages": n, "seconds": seconds, "mean_tokens": sum(lengths) / n,
                      "tflops": forward_flops(BERT_BASE, lengths) / seconds / 1e12}))
    return 0


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPR_JAX_", "SLURM_", "OMPI_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# ---------------------------------------------------------------- analysis


def flatness(samples: list[dict], checkpoint_rows: int, final_pass: int | None = None) -> dict:
    """Peak RSS (VmHWM) when ``checkpoint_rows`` were done, at the end, and the growth between."""
    if not samples:
        return {}
    at = None
    for s in samples:
        if s.get("rows") is not None and s["rows"] >= checkpoint_rows and (final_pass is None or s.get("pass") == final_pass):
            at = s
            break
    end = samples[-1]
    out = {"hwm_end_mib": end["hwm_mib"], "rss_max_mib": max(s["rss_mib"] for s in samples)}
    if at is not None:
        out |= {"checkpoint_t": at["t"], "hwm_at_checkpoint_mib": at["hwm_mib"],
                "growth_after_checkpoint_mib": round(end["hwm_mib"] - at["hwm_mib"], 1)}
    return out


def curve(samples: list[dict], points: int = 12) -> list[dict]:
    """About ``points`` evenly spaced samples (first and last included)."""
    if len(samples) <= points:
        return samples
    step = (len(samples) - 1) / (points - 1)
    return [samples[round(i * step)] for i in range(points)]


def steady_rate(samples: list[dict], total: int) -> float | None:
    """Rows per second between 10% and the last shard (a least-squares slope: start-up excluded)."""
    import numpy as np

    pts = [(s["t"], s["rows"]) for s in samples if s.get("rows") is not None and s["rows"] >= 0.1 * total]
    pts = [p for i, p in enumerate(pts) if i == 0 or p[1] != pts[i - 1][1]]  # one point per new shard
    if len(pts) < 3:
        return None
    t, r = np.array(pts, dtype=float).T
    return float(np.polyfit(t, r, 1)[0])


def gpu_mfu() -> dict:
    """MFU measured on a GPU: bert-base from the accelerator suite if it ran, else MiniLM's from the speed benches."""
    suite = RESULTS_DIR / "accelerator_suite_gpu.json"
    if suite.exists():
        s = json.loads(suite.read_text()).get("summary", {})
        if s.get("encode_mfu") and s.get("train_mfu_batch_128"):
            return {"encode": s["encode_mfu"], "train": s["train_mfu_batch_128"], "device": s.get("device"),
                    "source": "bert-base, bench/results/accelerator_suite_gpu.json"}
    out = {}
    for key, name in (("encode", "encode_speed_gpu"), ("train", "train_speed_gpu")):
        path = RESULTS_DIR / f"{name}.json"
        if path.exists():
            d = json.loads(path.read_text())
            mfus = [c["contenders"]["dpr-jax"].get("mfu") for c in d["cells"]]
            mfus = [m for m in mfus if m]
            if mfus:
                out[key] = max(mfus)
                out["device"] = d["machine"].get("device")
    if "encode" in out and "train" in out:
        out["source"] = "MiniLM (22M parameters, host-bound on an H100), bench/results/encode_speed_gpu.json, train_speed_gpu.json"
        return out
    return {}


def projection(cpu_tflops: float | None) -> dict:
    """FLOPs of the real job and its time per target at the stated MFU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nq_config", REPO / "configs" / "nq.py")
    nq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nq)
    c = nq.get_config()
    qlen, plen = c.data.question_max_length, c.data.passage_max_length
    batch, epochs, group = c.train.batch_size, c.train.num_epochs, 1 + c.data.hard_negatives + c.data.random_negatives
    per_passage = forward_flops(BERT_BASE, [256])
    encode_flops = DPR_WIKI_ROWS * per_passage
    steps = epochs * (NQ_TRAIN_QUESTIONS // batch)
    step_flops = 3 * batch * (forward_flops(BERT_BASE, [qlen]) + group * forward_flops(BERT_BASE, [plen]))
    train_flops = steps * step_flops
    measured = gpu_mfu()
    rows = []
    for name, n, peak in TARGETS:
        rows.append({"target": name, "devices": n, "peak_tflops_per_device": peak, "mfu_encode": ASSUMED_MFU,
                     "mfu_train": ASSUMED_MFU, "mfu_source": f"assumed {ASSUMED_MFU:.0%}"})
        if measured and "TPU" not in name:
            rows.append({"target": name, "devices": n, "peak_tflops_per_device": peak, "mfu_encode": measured["encode"],
                         "mfu_train": measured["train"], "mfu_source": f"measured: {measured['source']}"})
    for r in rows:
        rate = r["devices"] * r["peak_tflops_per_device"] * 1e12
        r["encode_s"] = encode_flops / (rate * r["mfu_encode"])
        r["train_s"] = train_flops / (rate * r["mfu_train"])
    if cpu_tflops:
        rows.append({"target": "this CPU (all cores, 1 JAX device)", "devices": 1, "peak_tflops_per_device": None,
                     "achieved_tflops": cpu_tflops, "mfu_source": "bert-base encode FLOP/s measured in this run",
                     "encode_s": encode_flops / (cpu_tflops * 1e12), "train_s": train_flops / (cpu_tflops * 1e12)})
    return {"bert_base": BERT_BASE, "encode": {"passages": DPR_WIKI_ROWS, "tokens": 256, "flops_per_passage": per_passage,
                                                 "flops": encode_flops},
            "train": {"config": "configs/nq.py", "questions": NQ_TRAIN_QUESTIONS, "batch": batch, "epochs": epochs,
                      "group": group, "question_tokens": qlen, "passage_tokens": plen, "steps": steps,
                      "flops_per_step": step_flops, "flops": train_flops},
            "measured_gpu_mfu": measured, "rows": rows}


def _hms(seconds: float) -> str:
    if seconds >= 86400 * 2:
        return f"{seconds / 86400:,.0f} days"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.calibrate_child:
        return calibrate_child(args.calibrate_passages)
    info = machine_info(PACKAGES)
    log(machine_line(info))
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    passages = work / "psgs_w100.tsv"
    encode_file = passages if args.rows == args.total_rows else work / f"psgs_w100.first{args.rows}.tsv"
    index, run = work / "index", work / "run.json"
    questions = work / "questions.jsonl"
    stages: dict[str, dict] = {}
    ok = True

    t0 = time.perf_counter()
    model_shape = write_model(work / "model", args.hidden, args.layers, args.max_length, args.seed)
    words = tokenizer_words()
    write_corpus(passages, args.total_rows, None if encode_file == passages else encode_file, args.rows, words, args.seed)
    write_questions(questions, args.queries, words, args.seed)
    stages["generate"] = {"wall_s": time.perf_counter() - t0, "rows": args.total_rows}
    log(f"generate: {args.total_rows:,} rows, {_du(passages) / 2**30:.2f} GiB in {stages['generate']['wall_s']:.0f} s")

    cli = [sys.executable, "-m", "dpr_jax"]
    logs = work / "logs"
    offset = FileOffset(passages, args.total_rows)
    t0 = time.perf_counter()
    res = run_processes("validate", {"process": (cli + ["data", "validate", str(passages), "--kind", "passages"],
                                                 _env())}, logs, args.sample_s, offset)
    counted = re.search(r"passages: (\d+)", res["process"]["output"])
    stages["validate"] = {"wall_s": time.perf_counter() - t0, "processes": res,
                          "passages_read": int(counted.group(1)) if counted else None}
    ok &= res["process"]["returncode"] == 0 and stages["validate"]["passages_read"] == args.total_rows
    log(f"validate: {stages['validate']['passages_read']} passages in {stages['validate']['wall_s']:.0f} s")

    encode_args = ["--model", str(work / "model"), "--passages", str(encode_file), "--out", str(index),
                   "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--dtype", "float16"]
    t0 = time.perf_counter()
    res = run_processes("encode", {f"job {i}/2": (cli + ["encode", *encode_args, "--shard", f"{i}/2"], _env())
                                   for i in range(2)}, logs, args.sample_s, ShardRows(index, args.block_size, args.rows))
    wall = time.perf_counter() - t0
    meta = json.loads((index / "meta.json").read_text()) if (index / "meta.json").exists() else None
    tokens = mean_tokens(encode_file, args.max_length)
    rate = args.rows / wall
    steady = steady_rate([s for p in res.values() for s in p["samples"]], args.rows)
    stages["encode"] = {"wall_s": wall, "rows": args.rows, "processes": res, "meta_count": meta and meta["count"],
                        "num_shards": meta and meta["num_shards"], "passages_per_s": rate,
                        "steady_passages_per_s": steady, "mean_tokens": tokens,
                        "flops_per_passage": forward_flops(model_shape, [tokens]),
                        "extrapolated_full_s": DPR_WIKI_ROWS / (steady or rate)}
    stages["encode"]["achieved_tflops"] = (steady or rate) * stages["encode"]["flops_per_passage"] / 1e12
    ok &= all(p["returncode"] == 0 for p in res.values()) and meta is not None and meta["count"] == args.rows
    log(f"encode: {args.rows:,} passages in {wall:.0f} s ({rate:,.0f}/s; steady {steady or 0:,.0f}/s)")

    port = _free_port()
    search_args = ["search", "--model", str(work / "model"), "--index", str(index), "--questions", str(questions),
                   "--k", str(args.k), "--max-length", str(args.max_length), "--out", str(run)]
    t0 = time.perf_counter()
    res = run_processes("search", {f"process {i}/2": (cli + search_args, _env(
        DPR_JAX_COORDINATOR=f"127.0.0.1:{port}", DPR_JAX_NUM_PROCESSES="2", DPR_JAX_PROCESS_ID=str(i)))
        for i in range(2)}, logs, args.sample_s)
    wall = time.perf_counter() - t0
    parts = {n: re.findall(r"searched rows (\d+)-(\d+) of (\d+)", p["output"]) for n, p in res.items()}
    stages["search"] = {"wall_s": wall, "queries": args.queries, "k": args.k, "processes": res,
                        "parts": {n: [int(x) for x in v[0]] if v else None for n, v in parts.items()},
                        "queries_per_s": args.queries / wall}
    run_ok = run.exists() and len(json.loads(run.read_text())) == args.queries
    ok &= all(p["returncode"] == 0 for p in res.values()) and run_ok
    log(f"search: {args.queries} queries x top-{args.k} in {wall:.0f} s, parts {stages['search']['parts']}")

    if args.calibrate_passages:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--calibrate-child",
                               "--calibrate-passages", str(args.calibrate_passages)], env=_env(), cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            stages["calibrate"] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"wall_s": time.perf_counter() - t0}
            log(f"calibrate: bert-base on this CPU {stages['calibrate']['tflops'] * 1e3:.1f} GFLOP/s")
        else:
            ok = False
            log(f"calibrate failed:\n{proc.stderr[-3000:]}")

    disk = {"passages_file": _du(passages), "encoded_prefix_file": _du(encode_file) if encode_file != passages else 0,
            "index": _du(index), "run_file": _du(run)}
    for name, st in stages.items():
        for pname, p in st.get("processes", {}).items():
            final_pass = max((s.get("pass") or 0 for s in p["samples"]), default=None) if name == "validate" else None
            p["memory"] = flatness(p["samples"], args.checkpoint_rows, final_pass)
            p["curve"] = curve(p["samples"])
            p["samples"] = curve(p["samples"], 300)
            tail = p.pop("output")[-3000:]  # results carry no machine paths
            p["output_tail"] = tail.replace(str(work), "<workdir>").replace(str(REPO), "<repo>")
    proj = projection(stages.get("calibrate", {}).get("tflops"))
    data = {"config": {k: (str(v.resolve().relative_to(REPO)) if isinstance(v, Path) and v.resolve().is_relative_to(REPO) else
                           (f"<{k}>" if isinstance(v, Path) else v)) for k, v in vars(args).items()},
            "model": model_shape, "machine": info, "stages": stages, "disk_bytes": disk, "projection": proj,
            "flop_formula": FLOP_FORMULA, "ok": ok}
    md = render(args, data)
    md_path, _ = write_results(args.name, md, data, args.out_dir)
    print(md)
    log(f"wrote {md_path}; all stages ok: {ok}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def render(args, data) -> str:
    st, proj = data["stages"], data["projection"]
    enc = st["encode"]
    cp = f"{args.checkpoint_rows:,}"
    mem_rows = []
    for name in ("validate", "encode", "search"):
        for pname, p in st[name]["processes"].items():
            m = p["memory"]
            mem_rows.append([name, pname, f"{p['wall_s']:.0f}", f"{m.get('hwm_at_checkpoint_mib', '-')}",
                             f"{m.get('hwm_end_mib', '-')}", f"{m.get('growth_after_checkpoint_mib', '-')}",
                             "ok" if p["returncode"] == 0 else f"exit {p['returncode']}"])
    curve_rows = []
    for name in ("validate", "encode"):
        for pname, p in st[name]["processes"].items():
            pts = [f"{s['t']:.0f}s: {s['rss_mib']:.0f}/{s['hwm_mib']:.0f}" + (f" @{s['rows']:,}" if s.get("rows") is not None else "")
                   for s in p["curve"]]
            curve_rows.append([name, pname, "; ".join(pts)])
    disk = data["disk_bytes"]
    extrap = ""
    if args.rows < DPR_WIKI_ROWS:
        extrap = (f" At the steady rate all {DPR_WIKI_ROWS:,} passages would take "
                  f"**{_hms(enc['extrapolated_full_s'])}** to encode with these 2 processes.")
    t = proj["train"]
    proj_rows = []
    for r in proj["rows"]:
        mfu = (f"{r['mfu_encode']:.1%} / {r['mfu_train']:.1%}" if "mfu_encode" in r
               else f"{r['achieved_tflops'] * 1e3:.1f} GFLOP/s achieved")
        peak = f"{r['devices']} x {r['peak_tflops_per_device']:g}" if r.get("peak_tflops_per_device") else "-"
        proj_rows.append([r["target"], peak, mfu, r["mfu_source"], _hms(r["encode_s"]), _hms(r["train_s"])])
    measured = proj["measured_gpu_mfu"]
    lines = [
        "# The 21M-passage rehearsal",
        "",
        f"A synthetic `psgs_w100.tsv` of **{args.total_rows:,}** rows (DPR's header and columns, ids 1..N, ~"
        f"{enc['mean_tokens']:.0f} tokens of random words each) generated on the fly, validated in full by "
        f"`dpr-jax data validate`, its first **{args.rows:,}** passages encoded by two `dpr-jax encode --shard I/2` "
        f"processes at once (as two pod hosts would; 1 CPU device each), and searched exactly by a 2-process "
        f"`dpr-jax search` (1 device each) for {args.queries:,} questions, k={args.k}. Model: random BERT, hidden "
        f"{data['model']['hidden_size']}, {data['model']['num_hidden_layers']} layer(s), max length {args.max_length}, "
        f"batch {args.batch_size}, float16 shards of {args.block_size:,}. Memory: each process's own `/proc/PID/status` "
        f"sampled every {args.sample_s:g} s; 'peak at {cp}' is `VmHWM` when {cp} rows were done (validate: read "
        f"by its record pass; encode: in finished shards of both jobs).",
        "",
        markdown_table(["stage", "process", "wall s", f"peak RSS MiB at {cp} rows", "peak RSS MiB at end",
                        "growth MiB", "status"], mem_rows),
        "",
        f"Wall times: generate {st['generate']['wall_s']:.0f} s, validate {st['validate']['wall_s']:.0f} s, "
        f"encode {enc['wall_s']:.0f} s ({enc['passages_per_s']:,.0f} passages/s overall, start-up included"
        + (f", {enc['steady_passages_per_s']:,.0f}/s steady" if enc["steady_passages_per_s"] else "")
        + f"; {enc['achieved_tflops'] * 1e3:.1f} GFLOP/s of the tiny model; {enc['num_shards']} shards; "
        f"`meta.json` count {enc['meta_count']}), "
        f"search {st['search']['wall_s']:.0f} s ({st['search']['queries_per_s']:.1f} queries/s end to end, model "
        f"loading and passage text included; parts {', '.join(f'{n}: rows {v[0]:,}-{v[1]:,}' for n, v in st['search']['parts'].items() if v)})."
        + extrap,
        "",
        f"Disk: passages file {disk['passages_file'] / 2**30:.2f} GiB"
        + (f", encoded prefix {disk['encoded_prefix_file'] / 2**30:.2f} GiB" if disk["encoded_prefix_file"] else "")
        + f", index {disk['index'] / 2**30:.2f} GiB, run file {disk['run_file'] / 2**20:.1f} MiB; the id check's "
        f"temporary buckets (~{(20 + 9) * args.rows / 2**20:.0f} MiB under TMPDIR) are deleted after it.",
        "",
        "RSS curve (time: VmRSS/VmHWM MiB @ rows done):",
        "",
        markdown_table(["stage", "process", "samples"], curve_rows),
        "",
        "## Projected times for the real job",
        "",
        f"bert-base ({BERT_BASE['num_hidden_layers']} layers, hidden {BERT_BASE['hidden_size']}): **encode** "
        f"{DPR_WIKI_ROWS:,} passages x 256 tokens = {proj['encode']['flops']:.3g} FLOPs "
        f"({proj['encode']['flops_per_passage'] / 1e9:.1f} GFLOP a passage); **NQ training** with `configs/nq.py`: "
        f"{t['epochs']} epochs x {t['questions']:,} // {t['batch']} = {t['steps']:,} steps, each 3 x forward of "
        f"{t['batch']} questions x {t['question_tokens']} tokens + {t['batch'] * t['group']} passages x "
        f"{t['passage_tokens']} tokens (dpr-jax pads training batches to the maximum lengths) = "
        f"{t['flops_per_step'] / 1e12:.1f} TFLOP a step, {t['flops']:.3g} FLOPs in all (GradCache adds one forward: "
        f"x4/3).",
        "",
        "time = FLOPs / (devices x peak bf16 FLOP/s per device x MFU); peaks: H100 SXM 989 TFLOP/s dense bf16, TPU v4 "
        "275 TFLOP/s per chip; data-parallel scaling assumed linear (gradient all-reduce and input pipelines not "
        "modelled).",
        "",
        markdown_table(["target", "devices x peak TFLOP/s", "MFU encode / train", "MFU from", "encode 21M x 256",
                        "NQ training"], proj_rows),
        "",
        ("Measured GPU MFU: " + measured["source"] + f" on {measured.get('device')}; MiniLM's is a floor, not a bert-base figure."
         if measured else "No GPU measurement exists yet: run `bench/accelerator_suite.sh` on a GPU to replace the "
                          "assumed MFU with a measured one.")
        + (f" The CPU row uses the FLOP/s a random bert-base reached encoding {st['calibrate']['passages']} "
           f"passages of {st['calibrate']['mean_tokens']:.0f} tokens in this run (float32, after compilation), "
           f"for training too." if "calibrate" in st else ""),
        "",
        f"FLOPs: {FLOP_FORMULA}.",
        "",
        f"Machine: {machine_line(data['machine'])}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
