"""Host memory: the process's peak RSS, and handing freed memory back to the OS between stages.

XLA compiles on several threads; glibc keeps what a compilation frees in per-thread arenas instead
of returning it, so a freshly compiled program leaves hundreds of MB of resident but unused memory
behind (measured: ~500 MB after compiling the all-MiniLM-L6-v2 training step), on top of which the
program's own buffers are then allocated. :func:`release_memory` returns those pages
(``malloc_trim``), and between pipeline stages also drops the compiled programs of the stages before
(``jax.clear_caches``), so a pipeline run in one process (the quickstart) peaks at its largest stage,
not at the sum of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys

_libc = None


def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (macOS, musl: nothing to do there)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc = lib if hasattr(lib, "malloc_trim") else False
            except OSError:
                pass
    return _libc.malloc_trim if _libc else None


def release_memory(*, clear_compiled: bool = False) -> None:
    """Collect garbage and give freed heap pages back to the OS; ``clear_compiled`` also drops every
    cached compiled JAX program (the next call of a jitted function compiles, or reads the on-disk
    compilation cache)."""
    if clear_compiled and "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
