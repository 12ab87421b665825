"""Shared benchmark helpers: a fair BLAS environment, a machine description, alternating timing.

Benchmarks here run on small shared machines where the speed of a core drifts over a minute, so
contenders are never timed in blocks (all of A, then all of B): :func:`alternate` runs them in
turn, A B C A B C ..., for several rounds, and reports per-contender medians and the median of the
per-round ratios, which cancels most of the drift.

Some machines set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (older OpenBLAS builds need them); they
slow a current NumPy. :func:`fair_blas_env` re-executes the benchmark once without both (for that
command only, never for tests or CI) and :func:`machine_info` records which BLAS kernel then runs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_UNSET_MARK = "DPR_JAX_BENCH_UNSET_OPENBLAS"


def fair_blas_env(keep: bool = False) -> None:
    """Re-exec this script without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (both together) if either is set.

    Call it first thing, before NumPy is imported (OpenBLAS reads them when it loads). What was
    unset is remembered in the environment so :func:`machine_info` can report it.
    """
    present = {v: os.environ[v] for v in _BLAS_VARS if v in os.environ}
    if keep or not present or _UNSET_MARK in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    env[_UNSET_MARK] = ",".join(f"{k}={v}" for k, v in present.items())
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(packages=("numpy", "jax", "jaxlib", "faiss-cpu", "threadpoolctl")) -> dict:
    """Cores, CPU model, memory, Python and library versions, BLAS kernels, relevant env vars."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: v for p in packages if (v := _version(p))},
        "openblas_env_unset_for_this_run": os.environ.get(_UNSET_MARK),
        "openblas_env": {v: os.environ.get(v) for v in _BLAS_VARS},
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "prefix", "version", "architecture", "num_threads")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = None
    return info


def machine_line(info: dict) -> str:
    """One human line: CPU, cores, memory, versions, BLAS kernels and the OpenBLAS env note."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    blas = "; ".join(
        f"{p['prefix']} {p['version']} ({p['architecture']}, {p['num_threads']} threads)"
        for p in info.get("threadpools") or []
        if p["internal_api"] == "openblas"
    )
    if info["openblas_env_unset_for_this_run"]:
        env = f"unset for this run: {info['openblas_env_unset_for_this_run']}"
    else:
        env = "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set"
    load = f"; load average {info['loadavg_1min']:.1f} when described" if info.get("loadavg_1min") is not None else ""
    return (f"{info['cpu']}, {info['usable_cores']} cores, {info.get('memory_gib', '?')} GiB; "
            f"Python {info['python']}; {versions}; BLAS: {blas or 'n/a'}; {env}{load}")


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, *, warmup: int = 1,
              baseline: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Time contenders in turn (A B C, A B C, ...) for ``rounds`` rounds after ``warmup`` untimed ones.

    Returns ``{"rounds", "baseline", "times_s": {name: [per round]}, "median_s": {name: median},
    "ratio_vs_baseline": {name: median over rounds of t_name / t_baseline}, "result": {name: what
    its last call returned}}``. The per-round ratio compares runs seconds apart, so slow drift in
    machine speed cancels; a ratio below 1 means faster than the baseline.
    """
    if not contenders or rounds < 1:
        raise ValueError("need at least one contender and one round")
    names = list(contenders)
    baseline = baseline or names[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    result: dict[str, object] = {}
    for r in range(warmup + rounds):
        for name in names:
            t0 = time.perf_counter()
            result[name] = contenders[name]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
            if log:
                log(f"{'warmup' if r < warmup else f'round {r - warmup + 1}/{rounds}'} {name}: {dt:.3f} s")
    return {
        "rounds": rounds,
        "baseline": baseline,
        "times_s": times,
        "median_s": {n: statistics.median(t) for n, t in times.items()},
        "ratio_vs_baseline": {
            n: statistics.median(a / b for a, b in zip(times[n], times[baseline])) for n in names
        },
        "result": result,
    }


def load_warning(load: float | None, cores: int | None) -> str | None:
    """A caveat for results measured while other work shared the cores (load average above half of them)."""
    if load is None or not cores or load <= cores / 2:
        return None
    return (f"**Caveat: the machine was shared while this ran (load average {load:.1f} on {cores} cores).** "
            "Absolute speeds are well below a quiet machine's, and contenders that busy-wait for their "
            "threads (OpenMP, as faiss uses) lose more than others, so ratios are not quiet-machine ratios.")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def portable_path(value) -> str:
    """A path as a committed result may show it: relative to the checkout when inside it, else its name.

    Results are committed and read on other machines; an absolute path (a home directory, a
    site-packages folder, a scratch directory) says nothing there and leaks this machine's layout.
    """
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        return str(value)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return f".../{path.name}"


def portable_config(args, drop=("out_dir",)) -> dict:
    """A script's arguments for its JSON record, with paths made portable and output locations dropped."""
    out = {}
    for key, value in vars(args).items():
        if key in drop:
            continue
        if isinstance(value, Path) or (isinstance(value, str) and value.startswith(("/", "~"))):
            value = portable_path(value)
        out[key] = value
    return out


def _machine_prefixes() -> list[tuple[str, str]]:
    """``(absolute directory of this machine, what a committed result shows instead)``, longest first."""
    names = {tempfile.gettempdir(): "<tmp>", sys.base_prefix: "<python>", sys.prefix: "<python>",
             str(Path.home()): "~", str(REPO_ROOT): "."}
    return sorted(((d, n) for d, n in names.items() if d not in ("", "/")), key=lambda dn: len(dn[0]), reverse=True)


def scrub_machine_paths(text: str) -> tuple[str, int]:
    """``text`` with this machine's directories replaced (the checkout by ``.``, the home directory by ``~``,
    Python's prefix by ``<python>``, the temp dir by ``<tmp>``), and how many were replaced.

    The scripts record portable values themselves (:func:`portable_path`, :func:`portable_config`); this
    catches what they cannot foresee, such as a path inside a recorded error message, without losing a
    run's results to an exception at the very end.
    """
    count = 0
    for prefix, name in _machine_prefixes():
        text, n = re.subn(r"(?<![\w./~-])" + re.escape(prefix) + r"(?=[/\s\"')\]:,]|$)", lambda m, name=name: name, text)
        count += n
    return text, count


def write_results(stem: str, markdown: str, data: dict, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.md`` and ``.json`` (bench/results by default), atomically.

    Both are committed and read on other machines, so this machine's directories are scrubbed from
    them (:func:`scrub_machine_paths`; how many is logged).
    """
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    for path, text in ((md, markdown.rstrip() + "\n"), (js, json.dumps(data, indent=2, default=str) + "\n")):
        text, scrubbed = scrub_machine_paths(text)
        if scrubbed:
            log(f"{path.name}: {scrubbed} machine path(s) replaced by ., ~, <python> or <tmp>")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return md, js


def device_title(platform: str, device: str | None = None) -> str:
    """How a section title names where it ran ("on CPU", "on GPU (NVIDIA H100 80GB HBM3)"): CPU and GPU
    results of one script sit side by side in BENCHMARKS.md and must not share a title."""
    if platform == "cpu":
        return "on CPU"
    return f"on {platform.upper()}" + (f" ({device})" if device else "")


def log(msg: str) -> None:
    """Progress to stderr with a timestamp (stdout stays for the result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- models, devices, FLOPs, SQuAD text
# (used by encode_speed, train_speed, bm25_speed and encode_memory)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
# Dense peak TFLOP/s by (device name fragment, dtype), first match wins: vendor datasheets (Hopper
# SXM; A100 SXM; Cloud TPU per chip). JAX's device_kind is e.g. "NVIDIA H100 80GB HBM3", "TPU v4".
PEAK_TFLOPS = {("H100 PCIe", "bfloat16"): 756.0, ("H100 PCIe", "float32"): 51.0,
               ("H100", "bfloat16"): 989.0, ("H100", "float32"): 67.0,
               ("H200", "bfloat16"): 989.0, ("H200", "float32"): 67.0,
               ("A100", "bfloat16"): 312.0, ("A100", "float32"): 19.5,
               ("TPU v4", "bfloat16"): 275.0, ("TPU v5 lite", "bfloat16"): 197.0, ("TPU v5e", "bfloat16"): 197.0,
               ("TPU v5", "bfloat16"): 459.0, ("TPU v6", "bfloat16"): 918.0}
# Peak HBM bandwidth in TB/s by device name fragment, first match wins (datasheets; TPU per chip).
PEAK_HBM_TBPS = (("H100 PCIe", 2.0), ("H100", 3.35), ("H200", 4.8), ("A100", 2.0), ("TPU v4", 1.2),
                 ("TPU v5 lite", 0.82), ("TPU v5e", 0.82), ("TPU v5", 2.76), ("TPU v6", 1.64))
PACKAGES = ("numpy", "jax", "jaxlib", "flax", "torch", "sentence-transformers", "transformers", "tokenizers")


def select_platform(device: str) -> None:
    """Make JAX use the CPU or the GPU; call before jax is imported."""
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif os.environ.get("JAX_PLATFORMS") == "cpu":
        del os.environ["JAX_PLATFORMS"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def check_jax_device(device: str) -> str:
    """The JAX platform in use; exits with a message when a GPU was asked for and JAX sees none."""
    import jax

    platform = jax.devices()[0].platform
    if device == "gpu" and platform != "gpu":
        sys.exit(f"error: --device gpu but JAX sees only {jax.devices()}")
    return platform


def torch_device(device: str) -> str:
    import torch

    if device == "gpu":
        if not torch.cuda.is_available():
            log("torch sees no CUDA device: the sentence-transformers contender runs on the CPU")
            return "cpu"
        return "cuda"
    return "cpu"


def device_name(platform: str) -> str:
    import jax

    d = jax.devices()[0]
    return getattr(d, "device_kind", str(d)) if platform != "cpu" else "cpu"


def peak_tflops(name: str, dtype: str, override: float | None) -> float | None:
    if override:
        return override
    for (frag, dt), value in PEAK_TFLOPS.items():
        if frag in name and dt == dtype:
            return value
    return None


def peak_hbm_tbps(name: str, override: float | None = None) -> float | None:
    """The device's peak HBM bandwidth (TB/s) from :data:`PEAK_HBM_TBPS`, or ``override``."""
    if override:
        return override
    return next((v for frag, v in PEAK_HBM_TBPS if frag in name), None)


def squad_articles(path: str | None = None) -> list[dict]:
    """The SQuAD v1.1 dev articles (``data`` list of the official JSON)."""
    from dpr_jax.settings import squad_dev_path

    path = Path(path) if path else squad_dev_path()
    if not path.is_file():
        sys.exit(f"error: SQuAD dev file not found at {path} (set DPR_JAX_DATA or pass --squad)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["data"]


def squad_paragraphs(path: str | None = None) -> list[str]:
    """Every paragraph text of SQuAD dev (2,067), in file order."""
    return [p["context"] for a in squad_articles(path) for p in a["paragraphs"]]


def sample_texts(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` texts: a seeded shuffle of ``texts``, repeated (reshuffled) when ``n`` exceeds their number."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        out += [texts[i] for i in rng.permutation(len(texts))]
    return out[:n]


def prepare_model_dir(spec: str, random_init: bool, seed: int, workdir: Path) -> tuple[Path, str]:
    """A model directory both libraries load, and a description of it.

    Without ``random_init`` the model spec is resolved as dpr-jax does it. With it, ``config.json``
    and every non-weight file of the spec's directory are copied to ``workdir`` and a
    ``transformers.BertModel`` with seeded random weights is saved there (safetensors).
    """
    from dpr_jax.models.loading import PACKAGED_MODELS, resolve_model_dir

    src = resolve_model_dir(spec)
    where = (f"the {PACKAGED_MODELS[spec][0]} package" if spec in PACKAGED_MODELS and not Path(spec).is_dir()
             else portable_path(src))
    if not random_init:
        return src, f"{spec} ({where})" if where != spec else spec
    import torch
    from transformers import BertConfig as HFBertConfig, BertModel

    dst = workdir / "random-init-model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*WEIGHT_FILES))
    torch.manual_seed(seed)
    model = BertModel(HFBertConfig.from_pretrained(str(src)), add_pooling_layer=False)
    model.save_pretrained(str(dst), safe_serialization=True)
    return dst, f"random init (seed {seed}) with the config and tokenizer of {where}"


def bert_shape(model_dir: Path) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    return {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                "vocab_size")}


def matmul_params(shape: dict) -> int:
    """Weights of the encoder's matmuls (Q, K, V, attention output, two feed-forward), embeddings excluded."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    return shape["num_hidden_layers"] * (4 * h * h + 2 * h * i)


def forward_flops(shape: dict, lengths) -> float:
    """Forward FLOPs over real tokens: sum over sequences of ``2 n P_matmul + 4 layers n^2 h``."""
    p = matmul_params(shape)
    layers, h = shape["num_hidden_layers"], shape["hidden_size"]
    return float(sum(2 * n * p + 4 * layers * n * n * h for n in lengths))


FLOP_FORMULA = ("per sequence of n real (unpadded) tokens: forward = 2*n*P_matmul + 4*layers*n^2*hidden "
                "(P_matmul = layers*(4*h^2 + 2*h*i): Q, K, V, attention output, feed-forward; the n^2 term is "
                "QK^T and PV; embeddings, norms, softmax, GELU not counted); training = 3 x forward")


class CompileTimer:
    """Seconds JAX spends tracing, lowering and compiling (its ``/jax/core/compile/*`` duration events).

    Measured directly rather than as "first call minus a later call", which the drift of a shared
    machine makes unreliable.
    """

    def __init__(self):
        import jax.monitoring

        self.seconds = 0.0
        self.programs = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_):
        if event.startswith("/jax/core/compile/"):
            self.seconds += duration
            self.programs += event.endswith("backend_compile_duration")

    def reset(self) -> None:
        self.seconds, self.programs = 0.0, 0


def st_model(model_dir: Path, max_length: int, device: str):
    """A sentence-transformers model on ``device`` with ``max_seq_length`` set."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device)
    model.max_seq_length = max_length
    return model
