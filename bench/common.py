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
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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


def write_results(stem: str, markdown: str, data: dict, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.md`` and ``.json`` (bench/results by default), atomically."""
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    for path, text in ((md, markdown.rstrip() + "\n"), (js, json.dumps(data, indent=2, default=str) + "\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return md, js


def log(msg: str) -> None:
    """Progress to stderr with a timestamp (stdout stays for the result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
