"""Duplicate passage ids are still caught, in memory that does not grow with the corpus.

* :class:`IdChecker` against a brute-force dict on random ids with repeats, in memory and spilled
  to its hash buckets, and with every hash forced equal (collisions must be told apart by string);
* ``read_passages``: a repeat among the first ids is an error at its line (naming the first line);
  past the in-memory part, the repeat is still reported with both lines, after the last passage;
* ``encode_corpus``: ids are checked on the finished shards' ``.ids`` files, a repeat names the
  shards and lines and leaves ``meta.json`` unwritten;
* memory: peak RSS growth while checking 2M ids stays under a bound that a set of the same 2M
  strings exceeds more than twice (measured side by side, so the bound means something).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpr_jax.data import unique_ids
from dpr_jax.data.passages import read_passages
from dpr_jax.data.unique_ids import Duplicate, IdChecker
from dpr_jax.errors import DprJaxError, InputError


def _stream_with_repeats(n: int, n_repeats: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = [f"id-{i}-{rng.integers(1 << 30)}" for i in range(n)]
    for pos in sorted(rng.choice(np.arange(1, n), n_repeats, replace=False)):
        ids[pos] = ids[rng.integers(pos)]  # a copy of an earlier id (maybe itself a copy)
    return ids


def _brute_force(ids: list[str]) -> list[Duplicate]:
    first: dict[str, int] = {}
    out = []
    for loc, pid in enumerate(ids):
        if pid in first:
            out.append(Duplicate(loc, first[pid], pid))
        else:
            first[pid] = loc
    return out


@pytest.mark.parametrize("in_memory,expected", [(10**9, None), (0, 5000), (700, 3000), (0, None)])
def test_checker_finds_exactly_the_repeats(in_memory, expected, monkeypatch):
    monkeypatch.setattr(unique_ids, "BUCKET_IDS", 512)  # several buckets for a few thousand ids
    monkeypatch.setattr(unique_ids, "_BUFFER_IDS", 300)  # several flushes
    ids = _stream_with_repeats(4000, 60, seed=1)
    want = _brute_force(ids)
    with IdChecker(in_memory=in_memory, expected=expected) as checker:
        immediate = checker.add_many(ids, 0)
        later, total = checker.duplicates(limit=10**6)
        assert checker.spilled == (in_memory < 4000)
        if checker.spilled:
            assert len(list(checker._dir.iterdir())) > 2 or expected is None
    assert sorted(immediate + later) == want and len(want) == 60
    assert total == len(later)


def test_limit_keeps_the_earliest_repeats_and_counts_all(monkeypatch):
    ids = _stream_with_repeats(3000, 40, seed=2)
    want = _brute_force(ids)
    with IdChecker(in_memory=0, expected=3000) as checker:
        assert checker.add_many(ids, 100) == []  # spilled from the start: nothing known yet
        found, total = checker.duplicates(limit=5)
    assert total == 40
    assert found == [Duplicate(d.second + 100, d.first + 100, d.id) for d in want[:5]]


def test_hash_collisions_are_not_duplicates(monkeypatch):
    monkeypatch.setattr(unique_ids, "_hash", lambda s: 42)  # every id collides with every other
    ids = [f"p{i}" for i in range(500)] + ["p7", "p300"]
    with IdChecker(in_memory=0, expected=10) as checker:
        checker.add_many(ids, 0)
        found, total = checker.duplicates(limit=10)
    assert found == [Duplicate(500, 7, "p7"), Duplicate(501, 300, "p300")] and total == 2


def test_temporary_files_are_removed():
    checker = IdChecker(in_memory=0, expected=10)
    checker.add_many(["a", "b", "a"], 0)
    tmp = checker._dir
    assert tmp.is_dir()
    assert checker.duplicates()[0] == [Duplicate(2, 0, "a")]
    checker.close()
    assert not tmp.exists()


# ---- read_passages ------------------------------------------------------------------------------


def _tsv(path, ids):
    path.write_text("id\ttext\ttitle\n" + "".join(f"{pid}\ttext {i}\tT\n" for i, pid in enumerate(ids)))
    return path


def test_small_file_repeat_is_an_error_at_its_line(tmp_path):
    f = _tsv(tmp_path / "p.tsv", ["a", "b", "c", "b", "d"])
    seen = []
    with pytest.raises(InputError, match=r"p\.tsv:5: field 'id': duplicate passage id 'b' \(first on line 3\)"):
        for p in read_passages(f):
            seen.append(p.id)
    assert seen == ["a", "b", "c"]  # raised when read, before later passages


def test_large_file_repeat_is_reported_with_both_lines_after_the_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(unique_ids, "IN_MEMORY_IDS", 5)  # "large": past the in-memory part at once
    ids = [f"p{i}" for i in range(40)]
    ids[30] = "p12"
    ids[35] = "p2"
    f = _tsv(tmp_path / "big.tsv", ids)
    seen = []
    with pytest.raises(InputError, match=r"big\.tsv:32: field 'id': duplicate passage id 'p12' \(first on line 14\)"):
        for p in read_passages(f):
            seen.append(p.id)
    assert len(seen) == 40  # after the last passage
    problems = []
    assert len(list(read_passages(f, problems=problems))) == 40
    assert [str(p) for p in problems] == [f"{f}:32: field 'id': duplicate passage id 'p12' (first on line 14)",
                                          f"{f}:37: field 'id': duplicate passage id 'p2' (first on line 4)"]
    assert list(read_passages(f, check_duplicates=False))[30].id == "p12"


def test_validate_command_reports_late_duplicates(tmp_path, monkeypatch, capsys):
    from dpr_jax.cli import main

    monkeypatch.setattr(unique_ids, "IN_MEMORY_IDS", 3)
    f = _tsv(tmp_path / "c.tsv", ["x", "y", "z", "w", "y"])
    assert main(["data", "validate", str(f), "--kind", "passages"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and f"{f}:6: field 'id': duplicate passage id 'y' (first on line 3)" in out


# ---- encode: after the fact, on the .ids files ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(minilm_dir):
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model

    bert = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    return init_random_model(bert, EncoderConfig(pooling="mean"), minilm_dir, shared=True)


def test_encode_checks_ids_on_the_shards_and_leaves_the_index_unfinished(tmp_path, tiny_model):
    from dpr_jax.index.encode import encode_corpus

    rows = [{"id": f"d{i}", "text": f"passage number {i}"} for i in range(25)]
    rows[21]["id"] = "d6"  # shard 0 line 7 and shard 2 line 2 (block size 10)
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(block_size=10, batch_size=8, max_length=16, progress=False)
    with pytest.raises(DprJaxError, match=r"passage id 'd6' occurs twice: row 6 = shard-00000\.ids line 7 and "
                                          r"row 21 = shard-00002\.ids line 2\. .*c\.jsonl.*meta\.json was not written"):
        encode_corpus(tiny_model, path, tmp_path / "index", **kw)
    assert not (tmp_path / "index" / "meta.json").exists()
    assert len(list((tmp_path / "index").glob("shard-*.ids"))) == 3

    rows[21]["id"] = "d21"  # fixed corpus, new index: finishes
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert encode_corpus(tiny_model, path, tmp_path / "index2", **kw)["meta"]["count"] == 25


# ---- memory ---------------------------------------------------------------------------------------

_MEMORY_CHILD = """
import sys
from dpr_jax.data.unique_ids import IdChecker

def peak_bytes():  # VmHWM: this process's own peak (ru_maxrss would start at the forking parent's peak)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

n, mode = int(sys.argv[1]), sys.argv[2]
ids = (f"wiki:{i * 7919 % 10_000_019}" for i in range(n))  # distinct, made on the fly
before = peak_bytes()
if mode == "checker":
    with IdChecker(expected=n) as checker:
        for loc, pid in enumerate(ids):
            assert checker.add(pid, loc) is None
        assert checker.duplicates() == ([], 0)
else:
    kept = set(ids)
    assert len(kept) == n
print(peak_bytes() - before)
"""


def test_checker_memory_stays_flat_where_a_set_would_not():
    """Peak RSS growth over 2M ids, each way in a fresh process (VmHWM: no tracing overhead)."""
    import os
    import subprocess
    import sys

    from distributed_worker import REPO

    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = {mode: subprocess.Popen([sys.executable, "-c", _MEMORY_CHILD, "2000000", mode], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode in ("checker", "set")}
    growth = {}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        growth[mode] = int(out.split()[-1])
    bound = 48 * 2**20
    assert growth["checker"] < bound, f"checker grew {growth['checker'] / 2**20:.1f} MiB"
    assert growth["set"] > 2 * bound, f"a set of 2M ids grew only {growth['set'] / 2**20:.1f} MiB"
