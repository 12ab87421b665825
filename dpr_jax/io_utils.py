"""Atomic writes and JSON lines: now in :mod:`dpr_jax.storage`, which also handles URLs.

Kept so that existing imports keep working until every module imports :mod:`dpr_jax.storage`.
"""

from dpr_jax.storage import atomic_open, atomic_path, write_json, write_jsonl

__all__ = ["atomic_open", "atomic_path", "write_json", "write_jsonl"]
