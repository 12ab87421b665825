"""dpr_jax.storage on local paths and on gs:// against a real GCS API server (gcp-storage-emulator).

Every helper runs twice, once on a local directory and once on a fresh ``gs://`` prefix served by
the session's emulator (tests/gcs_emulator.py, fixtures in conftest.py), and must give the same
result. Library behaviours the module exists to work around (a plain ``fs.open`` commits a failed
write, an object appears only when its upload completes, appends overwrite) are pinned down here
too, so an upgrade that changes them is noticed.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dpr_jax import storage
from dpr_jax.errors import DprJaxError, InputError


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
    """A directory to write under: local, or a fresh gs:// prefix on the emulator."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_dir")


def _exists(path) -> bool:
    return storage.as_path(path).exists()


# ------------------------------------------------------------------------------------------------
# Telling URLs from local paths


def test_urls_become_epath_and_local_paths_stay_pathlib(tmp_path):
    from pathlib import Path

    from etils import epath

    url = storage.as_path("gs://bucket/runs/x")
    assert isinstance(url, epath.Path) and str(url) == "gs://bucket/runs/x"
    assert str(url / "checkpoints") == "gs://bucket/runs/x/checkpoints" and url.name == "x"
    assert str(storage.as_path("GS://bucket/x")) == "gs://bucket/x"  # epath knows only lower case
    assert storage.as_path(url) == url  # idempotent on path objects
    local = storage.as_path("runs/x")
    assert type(local) is type(Path("runs/x")) and local == Path("runs/x")
    assert storage.is_remote("gs://b/x") and storage.is_remote(url) and not storage.is_remote("runs/x")
    assert storage.url_scheme("s3://b/x") == "s3" and storage.url_scheme(tmp_path) is None
    assert storage.absolute("runs/x") == Path.cwd() / "runs/x"
    # etils' own absolute() of a gs:// path prepends the working directory; ours must not
    assert str(storage.absolute("gs://bucket/x")) == "gs://bucket/x"
    with pytest.raises(DprJaxError, match="unsupported URL scheme 'ftp://'"):
        storage.as_path("ftp://host/x")


@pytest.mark.parametrize("name", ["gs:/bucket/x", "gs:", "gs:bucket/x", "GS:/b", "s3:/b/k"])
def test_a_mangled_url_is_refused_and_never_created_locally(name, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    for attempt in (lambda: storage.as_path(name), lambda: storage.as_path(Path(name)),
                    lambda: storage.write_json(f"{name}/meta.json", {}), lambda: storage.make_dirs(name),
                    lambda: storage.append_text(f"{name}/metrics.jsonl", "{}\n")):
        with pytest.raises(DprJaxError, match="lost a '/'"):
            attempt()
    assert list(tmp_path.iterdir()) == []  # no local "gs:" folder (or anything else) was made
    # pathlib.Path is what mangles a URL: the error says so when a mangled path object comes back in
    with pytest.raises(DprJaxError, match=r"write gs://"):
        storage.as_path(Path("gs://bucket/x"))


def test_a_local_name_with_a_colon_is_still_a_local_path(tmp_path):
    p = tmp_path / "a:b"
    storage.write_text(p, "x")
    assert storage.as_path(str(p)).read_text() == "x"


# ------------------------------------------------------------------------------------------------
# Writing and reading


def test_writes_and_reads_round_trip(root):
    storage.make_dirs(root)
    storage.write_text(f"{root}/t.txt", "héllo\nworld\n")
    storage.write_bytes(f"{root}/b.bin", bytes(range(256)))
    storage.write_json(f"{root}/sub/m.json", {"dim": 4, "name": "é"})
    assert storage.write_jsonl(f"{root}/r.jsonl", ({"i": i} for i in range(3))) == 3

    assert storage.as_path(f"{root}/t.txt").read_text() == "héllo\nworld\n"
    with storage.open_read(f"{root}/t.txt", "r") as f:
        assert f.readlines() == ["héllo\n", "world\n"]
    with storage.open_read(f"{root}/b.bin") as f:
        assert f.read() == bytes(range(256))
    assert json.loads(storage.as_path(f"{root}/sub/m.json").read_text()) == {"dim": 4, "name": "é"}
    with storage.open_read(f"{root}/r.jsonl", "r") as f:
        assert [json.loads(line) for line in f] == [{"i": 0}, {"i": 1}, {"i": 2}]
    names = sorted(p.name for p in storage.as_path(root).iterdir())
    assert names == ["b.bin", "r.jsonl", "sub", "t.txt"]  # no temporary names left behind


def test_open_read_gunzips_a_gz_name_and_streams_lines(root):
    lines = [f"line {i}\t{'x' * (i % 50)}\n" for i in range(5000)]
    with storage.atomic_open(f"{root}/c.tsv.gz", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb") as g:
            g.write("".join(lines).encode())
    with storage.open_read(f"{root}/c.tsv.gz") as f:
        assert f.readline() == lines[0].encode()
        assert sum(1 for _ in f) == len(lines) - 1
    with storage.open_read(f"{root}/c.tsv.gz", "r") as f:
        assert f.read() == "".join(lines)


def test_open_read_reports_missing_files_and_directories(root):
    with pytest.raises(InputError, match="file not found") as e:
        storage.open_read(f"{root}/missing.tsv")
    assert e.value.path == f"{root}/missing.tsv"
    storage.write_text(f"{root}/d/x.txt", "x")
    with pytest.raises(InputError, match="is a directory"):
        storage.open_read(f"{root}/d")


def test_a_failed_write_leaves_nothing_and_keeps_the_old_version(root):
    target = f"{root}/meta.json"
    for mode, chunk in (("w", "x" * 1000), ("wb", b"\0" * (3 << 20))):  # small, and several MiB
        with pytest.raises(RuntimeError, match="boom"):
            with storage.atomic_open(target, mode) as f:
                f.write(chunk)
                raise RuntimeError("boom")
        assert not _exists(target)
    storage.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with storage.atomic_open(target) as f:
            f.write('{"version": 2, "trunc')
            raise RuntimeError("boom")
    assert json.loads(storage.as_path(target).read_text()) == {"version": 1}
    assert sorted(p.name for p in storage.as_path(root).iterdir()) == ["meta.json"]


def test_atomic_path_writes_files_and_directories_for_tools_that_need_a_name(root):
    arr = np.arange(10, dtype=np.float32)
    with storage.atomic_path(f"{root}/v.npy") as tmp:
        assert tmp.name.endswith(".tmp") or tmp.name == "v.npy"
        with open(tmp, "wb") as f:
            np.save(f, arr)
    with storage.open_read(f"{root}/v.npy") as f:
        assert np.array_equal(np.load(f), arr)
    if storage.is_remote(root):  # a directory output (tokenizer, bm25s index) is uploaded file by file
        with storage.atomic_path(f"{root}/tok") as tmp:
            (tmp / "sub").mkdir(parents=True)
            (tmp / "vocab.txt").write_text("a\nb\n")
            (tmp / "sub" / "c.json").write_text("{}")
        assert storage.as_path(f"{root}/tok/vocab.txt").read_text() == "a\nb\n"
        assert storage.as_path(f"{root}/tok/sub/c.json").read_text() == "{}"
    with pytest.raises(RuntimeError):
        with storage.atomic_path(f"{root}/w.npy") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not _exists(f"{root}/w.npy")


def test_atomic_path_replaces_a_directory_whole(root):
    """A directory output replaces an older version entirely: no file of the old one survives (an
    export switching layouts, a rebuilt BM25 index), locally by rename, remotely by pruning."""
    def write(files: dict, fail: bool = False):
        with storage.atomic_path(f"{root}/out", last="done.json") as tmp:
            for name, text in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_text(text)
            if fail:
                raise RuntimeError("boom")

    def listing() -> dict:
        if storage.is_remote(root):  # epath has no recursive glob on gs://
            fs, inner = storage.filesystem(f"{root}/out")
            return {name[len(inner) + 1:]: fs.cat(name).decode() for name in fs.find(inner)}
        out = storage.as_path(f"{root}/out")
        return {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}

    write({"a.txt": "1", "sub/b.txt": "2", "done.json": "{}"})
    assert listing() == {"a.txt": "1", "sub/b.txt": "2", "done.json": "{}"}
    write({"c.txt": "3", "done.json": '{"v": 2}'})
    assert listing() == {"c.txt": "3", "done.json": '{"v": 2}'}
    with pytest.raises(RuntimeError):
        write({"d.txt": "4", "done.json": '{"v": 3}'}, fail=True)
    assert listing() == {"c.txt": "3", "done.json": '{"v": 2}'}
    if not storage.is_remote(root):  # no temporary directories left beside it
        assert sorted(os.listdir(root)) == ["out"]


def test_upload_deletes_the_marker_first_and_writes_it_last(gcs_dir, tmp_path, monkeypatch):
    """While a directory is being uploaded over an older version, its completion marker is absent."""
    storage.write_text(f"{gcs_dir}/idx/meta.json", "old")
    local = tmp_path / "idx"
    local.mkdir()
    for name in ("a.bin", "meta.json", "z.bin"):
        (local / name).write_text(name)
    fs, inner = storage.filesystem(gcs_dir)  # fsspec caches instances: upload() gets this one
    seen = []
    put_file = fs.put_file

    def spy(lpath, rpath, *args, **kwargs):
        seen.append((os.path.basename(rpath), fs.exists(f"{inner}/idx/meta.json")))
        return put_file(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", spy)
    storage.upload(local, f"{gcs_dir}/idx", last="meta.json", replace=True)
    assert seen == [("a.bin", False), ("z.bin", False), ("meta.json", False)]
    assert storage.as_path(f"{gcs_dir}/idx/meta.json").read_text() == "meta.json"


def test_file_size_and_fingerprint_change_when_a_file_is_rewritten(root):
    path = f"{root}/corpus.tsv"
    storage.write_text(path, "id\ttext\n")
    assert storage.file_size(path) == 8
    first = storage.fingerprint(path)
    assert first == storage.fingerprint(path)
    if storage.is_remote(root):
        assert first["url"] == path and first["generation"]
    time.sleep(0.01)
    storage.write_text(path, "id\ttexT\n")  # same size: only the mtime / generation tells
    assert storage.file_size(path) == 8 and storage.fingerprint(path) != first
    with pytest.raises(InputError, match="file not found"):
        storage.fingerprint(f"{root}/missing")
    with pytest.raises(InputError, match="file not found"):
        storage.file_size(f"{root}/missing")


def test_append_text_creates_then_appends(root):
    path = f"{root}/metrics.jsonl"
    storage.make_dirs(root)
    storage.append_text(path, '{"step": 1}\n')
    storage.append_text(path, '{"step": 2}\n{"step": 3}\n')
    assert storage.as_path(path).read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'


def test_make_dirs_and_remove_tree(root):
    storage.make_dirs(f"{root}/a/b")
    storage.write_text(f"{root}/a/b/f.txt", "x")
    storage.write_text(f"{root}/a/g.txt", "y")
    assert storage.as_path(f"{root}/a").is_dir()
    storage.remove_tree(f"{root}/a")
    assert not _exists(f"{root}/a/b/f.txt") and not _exists(f"{root}/a/g.txt")
    storage.remove_tree(f"{root}/a")  # missing: fine
    with pytest.raises((FileNotFoundError, OSError)):
        storage.remove_tree(f"{root}/a", missing_ok=False)


def test_make_dirs_refuses_a_bucket_that_does_not_exist_and_creates_none(gcs_emulator):
    fs, _ = storage.filesystem(f"gs://{gcs_emulator.bucket}")
    with pytest.raises(DprJaxError, match="bucket 'no-such-bucket' does not exist"):
        storage.make_dirs("gs://no-such-bucket/runs/x")
    assert not fs.exists("no-such-bucket")


# ------------------------------------------------------------------------------------------------
# .npy row ranges


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_read_npy_rows_equals_slicing_the_array(root, dtype):
    arr = np.random.default_rng(0).standard_normal((1000, 24)).astype(dtype)
    with storage.atomic_open(f"{root}/shard.npy", "wb") as f:
        np.save(f, arr, allow_pickle=False)
    header = storage.read_npy_header(f"{root}/shard.npy")
    assert header.shape == (1000, 24) and header.dtype == np.dtype(dtype) and not header.fortran_order
    assert header.data_offset % 64 == 0 and header.row_bytes == 24 * arr.itemsize
    for start, stop in [(0, 1000), (0, 1), (999, 1000), (123, 457), (500, 500)]:
        rows = storage.read_npy_rows(f"{root}/shard.npy", start, stop, header)
        assert rows.dtype == arr.dtype and np.array_equal(rows.view(np.uint8), arr[start:stop].view(np.uint8))
        rows[...] = 0  # a fresh, writable array
    assert np.array_equal(storage.read_npy_rows(f"{root}/shard.npy", 10, 20), arr[10:20])  # header read itself
    with pytest.raises(DprJaxError, match="out of range"):
        storage.read_npy_rows(f"{root}/shard.npy", 990, 1001, header)


def test_read_npy_handles_format_2_and_reports_bad_files(root):
    arr = np.arange(30, dtype=np.float32).reshape(10, 3)
    with storage.atomic_open(f"{root}/v2.npy", "wb") as f:
        np.lib.format.write_array(f, arr, version=(2, 0))
    assert storage.read_npy_header(f"{root}/v2.npy").shape == (10, 3)
    assert np.array_equal(storage.read_npy_rows(f"{root}/v2.npy", 4, 7), arr[4:7])

    storage.write_bytes(f"{root}/not.npy", b"just some bytes, not an array")
    with pytest.raises(InputError, match="not a readable .npy array"):
        storage.read_npy_header(f"{root}/not.npy")
    with storage.open_read(f"{root}/v2.npy") as f:
        data = f.read()
    storage.write_bytes(f"{root}/cut.npy", data[: len(data) - 5])  # a truncated shard
    with pytest.raises(InputError, match="truncated"):
        storage.read_npy_rows(f"{root}/cut.npy", 0, 10)
    with pytest.raises(InputError, match="file not found"):
        storage.read_npy_header(f"{root}/missing.npy")


# ------------------------------------------------------------------------------------------------
# local_copy


def test_local_copy_of_a_local_path_is_the_path_itself(tmp_path):
    storage.write_text(tmp_path / "f.txt", "x")
    with storage.local_copy(tmp_path / "f.txt") as p:
        assert p == tmp_path / "f.txt"
    with pytest.raises(InputError, match="not found"):
        with storage.local_copy(tmp_path / "missing"):
            pass


def test_local_copy_downloads_files_and_directories_once_and_again_when_changed(gcs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DPR_JAX_CACHE", str(tmp_path / "cache"))
    storage.write_text(f"{gcs_dir}/index/a.json", '{"a": 1}')
    storage.write_bytes(f"{gcs_dir}/index/sub/b.bin", b"\1\2\3")
    with storage.local_copy(f"{gcs_dir}/index") as d:
        assert d.is_dir() and str(d).startswith(str(tmp_path / "cache"))
        assert (d / "a.json").read_text() == '{"a": 1}' and (d / "sub" / "b.bin").read_bytes() == b"\1\2\3"
        first = d
    (first / "a.json").write_text("changed locally")  # a cache hit is not downloaded again...
    with storage.local_copy(f"{gcs_dir}/index") as d:
        assert d == first and (d / "a.json").read_text() == "changed locally"
    storage.write_text(f"{gcs_dir}/index/a.json", '{"a": 2}')  # ...but a rewritten object is
    with storage.local_copy(f"{gcs_dir}/index") as d:
        assert d != first and (d / "a.json").read_text() == '{"a": 2}'
    with storage.local_copy(f"{gcs_dir}/index/a.json", cache=False) as f:
        assert f.is_file() and f.read_text() == '{"a": 2}'
    assert not f.exists()
    with pytest.raises(InputError, match="not found"):
        with storage.local_copy(f"{gcs_dir}/nothing-here"):
            pass


# ------------------------------------------------------------------------------------------------
# What the libraries underneath do on GCS (docs/storage.md), pinned against the emulator


def test_gcsfs_commits_a_failed_write_unless_autocommit_is_off(gcs_dir):
    """Why atomic_open exists: leaving ``with fs.open(url, "wb")`` by an exception commits the partial
    object. And the GCS property it relies on: an upload's object appears only when it completes."""
    fs, inner = storage.filesystem(gcs_dir)
    with pytest.raises(RuntimeError):
        with fs.open(f"{inner}/plain", "wb") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert fs.cat(f"{inner}/plain") == b"partial"  # committed despite the exception

    data = np.random.default_rng(1).bytes((12 << 20) + 7)  # several resumable-upload chunks
    f = fs.open(f"{inner}/resumable", "wb", autocommit=False)
    f.write(data)
    f.close()  # every chunk but the last is uploaded
    assert not fs.exists(f"{inner}/resumable")
    f.commit()
    assert fs.cat(f"{inner}/resumable") == data


def test_epath_file_operations_on_gcs(gcs_dir):
    from etils import epath

    d = epath.Path(gcs_dir)
    assert type(d._backend).__name__ == "_FileSystemSpecBackend"  # gcsfs, not tf.io.gfile
    (d / "a.txt").write_text("a")
    (d / "s" / "b.txt").write_text("b")
    assert (d / "a.txt").exists() and (d / "a.txt").is_file() and d.is_dir() and (d / "s").is_dir()
    assert (d / "a.txt").stat().length == 1
    assert not (d / "nope").exists() and not (d / "nope").is_dir()
    assert sorted(p.name for p in d.iterdir()) == ["a.txt", "s"]
    assert [p.name for p in d.glob("*.txt")] == ["a.txt"]
    (d / "x" / "y").mkdir(parents=True, exist_ok=True)  # no directories on GCS: nothing is made
    assert not (d / "x").exists()
    with pytest.warns(UserWarning, match="Append mode"):
        with (d / "a.txt").open("a") as f:  # gcsfs has no append: "a" silently overwrites
            f.write("more")
    assert (d / "a.txt").read_text() == "more"
    (d / "a.txt").unlink()
    assert not (d / "a.txt").exists()
    d.rmtree()
    assert not d.exists()


def test_subprocesses_inherit_the_emulator_settings(gcs_dir):
    storage.write_text(f"{gcs_dir}/hello.txt", "from the test process")
    code = ("import sys; from dpr_jax import storage; "
            "print(storage.as_path(sys.argv[1]).read_text()); "
            "storage.write_text(sys.argv[1] + '.reply', 'from the child')")
    result = subprocess.run([sys.executable, "-c", code, f"{gcs_dir}/hello.txt"], capture_output=True,
                            text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from the test process"
    assert storage.as_path(f"{gcs_dir}/hello.txt.reply").read_text() == "from the child"


# ------------------------------------------------------------------------------------------------
# orbax checkpoints on gs:// (tensorstore for arrays, etils epath for orbax's own files)


def test_checkpointer_round_trip_on_gcs_is_bitwise(gcs_dir, tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp
    import optax

    from dpr_jax.checkpoint import Checkpointer

    monkeypatch.chdir(tmp_path)  # so a stray local "gs:" folder would show up here
    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32),
                        "bias": jnp.asarray(rng.standard_normal(16), jnp.float32)},
              "emb": jnp.asarray(rng.standard_normal((5, 8)), jnp.bfloat16)}
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments and a count of 1
    meta = {"step": 7, "seed": 3, "layout": {"global_batch": 16}}

    ckpt = Checkpointer(f"{gcs_dir}/checkpoints", keep=1)
    assert str(ckpt.directory) == f"{gcs_dir}/checkpoints"
    for step in (6, 7):
        ckpt.save(step, params, opt_state, dict(meta, step=step))
    ckpt.wait()
    ckpt.close()
    assert list(tmp_path.iterdir()) == []

    reader = Checkpointer(f"{gcs_dir}/checkpoints", read_only=True)
    assert reader.steps() == [7] and reader.latest_step() == 7  # keep=1 deleted step 6 on GCS
    zeros = jax.tree.map(jnp.zeros_like, params)
    got_params, got_opt, got_meta = reader.restore(None, zeros, tx.init(zeros))
    reader.close()
    assert got_meta == meta

    def bits(tree):
        return [(np.asarray(x).dtype, np.asarray(x).reshape(-1).view(np.uint8).tobytes()) for x in jax.tree.leaves(tree)]

    assert jax.tree.structure(got_params) == jax.tree.structure(params)
    assert bits(got_params) == bits(params) and bits(got_opt) == bits(opt_state)
    names = {p.name for p in storage.as_path(f"{gcs_dir}/checkpoints").iterdir()}
    assert names == {"7"}

    # No rename on GCS: orbax writes a step in place and marks it finished with a commit file last.
    # A step killed before that file (here: step 7's objects copied to 8, all but that file) is not
    # a checkpoint, so a resume never restores a half-written step.
    fs, inner = storage.filesystem(f"{gcs_dir}/checkpoints")
    objects = fs.find(f"{inner}/7")
    assert [o for o in objects if o.endswith("commit_success.txt")]
    for o in objects:
        if not o.endswith("commit_success.txt"):
            fs.copy(o, f"{inner}/8/{o[len(inner) + 3:]}")
    reader = Checkpointer(f"{gcs_dir}/checkpoints", read_only=True)
    assert reader.steps() == [7]
    reader.close()
    fs.copy(f"{inner}/7/commit_success.txt", f"{inner}/8/commit_success.txt")  # now step 8 is complete
    reader = Checkpointer(f"{gcs_dir}/checkpoints", read_only=True)
    assert reader.steps() == [7, 8]  # (seen at once: gcsfs listing caches are off, see storage.py)
    reader.close()


def test_emulator_downloads_carry_the_object_generation(gcs_emulator, gcs_dir):
    """tensorstore reads generations from ``x-goog-generation``; gcs_emulator.py adds it (see there)."""
    import urllib.parse
    import urllib.request

    storage.write_text(f"{gcs_dir}/g.txt", "x")
    fs, inner = storage.filesystem(f"{gcs_dir}/g.txt")
    generation = str(fs.info(inner)["generation"])
    name = urllib.parse.quote(inner.split("/", 1)[1], safe="")
    with urllib.request.urlopen(f"{gcs_emulator.url}/storage/v1/b/{gcs_emulator.bucket}/o/{name}?alt=media") as r:
        assert r.headers["x-goog-generation"] == generation and r.read() == b"x"
