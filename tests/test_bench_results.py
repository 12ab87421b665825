"""Committed benchmark results are portable and BENCHMARKS.md is what bench/collect.py makes of them.

Results are read on other machines: an absolute path (a home directory, site-packages, a scratch
directory) means nothing there. Sections of BENCHMARKS.md are linked by title, so two must not share one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import collect, common  # noqa: E402

# an absolute POSIX path of two or more components, or a Windows drive path, inside a string or after a space
ABSOLUTE = re.compile(r'(?:^|[\s"(\'=])(/[\w.+-]+/[\w.+/-]+|[A-Za-z]:\\[\w\\. -]+)')


def _result_files():
    return sorted(p for p in (ROOT / "bench" / "results").rglob("*") if p.is_file())


def test_committed_results_name_no_absolute_paths():
    found = []
    for path in _result_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in ABSOLUTE.finditer(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(1)}")
    assert not found, "absolute paths in committed results:\n" + "\n".join(found)
    assert _result_files(), "no results found: the test looks in the wrong place"


def test_benchmarks_md_titles_are_unique_and_collected(tmp_path, monkeypatch):
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(titles) == len(set(titles)), f"repeated section titles: {titles}"
    assert len(titles) == len(list((ROOT / "bench" / "results").glob("*.md")))
    # BENCHMARKS.md is exactly what collect.py writes from bench/results (no hand edits drifting away)
    monkeypatch.setattr(collect, "ROOT", tmp_path)
    (tmp_path / "bench").symlink_to(ROOT / "bench")
    collect.main()
    assert (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8") == text


def test_write_results_scrubs_machine_paths(tmp_path):
    home, prefix = str(Path.home()), sys.base_prefix
    common.write_results("x", f"model at {home}/models/minilm; error in {prefix}/lib/x.py:3",
                         {"dir": f"{common.REPO_ROOT}/bench/results", "error": f"'{tmp_path}' is full"}, out_dir=tmp_path)
    md, js = (tmp_path / "x.md").read_text(), (tmp_path / "x.json").read_text()
    assert "model at ~/models/minilm; error in <python>/lib/x.py:3" in md
    assert '"dir": "./bench/results"' in js and "'<tmp>/" in js
    for text in (md, js):
        assert not ABSOLUTE.search(text), text
    assert common.scrub_machine_paths("/tmpfoo and a/tmp/b") == ("/tmpfoo and a/tmp/b", 0)  # not a prefix of those


def test_portable_path_and_config(tmp_path):
    import argparse

    assert common.portable_path(ROOT / "bench" / "results") == "bench/results"
    assert common.portable_path("/somewhere/else/index") == ".../index"
    assert common.portable_path("data/squad") == "data/squad"
    args = argparse.Namespace(dir=Path("/scratch/idx"), squad="/data/dev-v1.1.json", out_dir=tmp_path, k=100)
    assert common.portable_config(args) == {"dir": ".../idx", "squad": ".../dev-v1.1.json", "k": 100}


def test_device_titles_differ():
    assert common.device_title("cpu") == "on CPU"
    assert common.device_title("gpu", "NVIDIA H100 80GB HBM3") == "on GPU (NVIDIA H100 80GB HBM3)"
