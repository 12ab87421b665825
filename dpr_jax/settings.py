"""Where dpr-jax finds shared data, with one place to change it.

The SQuAD dev set is read from ``$DPR_JAX_DATA/squad/dev-v1.1.json`` (a local directory or a
``gs://`` URL); without the variable, the first of ``./shared/data``, ``../shared/data`` (relative
to the working directory, then to this checkout) that exists is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from dpr_jax import storage

SQUAD_DEV_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"
SQUAD_DEV_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"


def data_dir():
    """The shared data directory (may not exist; callers report that with a clear message)."""
    env = os.environ.get("DPR_JAX_DATA")
    if env:
        return storage.as_path(env)
    repo = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), repo):
        for rel in ("shared/data", "../shared/data"):
            cand = (base / rel).resolve()
            if cand.is_dir():
                return cand
    return (repo / "../shared/data").resolve()


def squad_dev_path():
    """Default location of the official SQuAD v1.1 dev JSON."""
    return data_dir() / "squad" / "dev-v1.1.json"
