"""Each module that reads or writes files, on ``gs://`` against the real GCS API server, and locally.

In-process and without JAX compilation, so every format gets its own quick check; the whole
pipeline as CLI processes is tests/test_gcs_pipeline.py. Where a module has a gs://-only decision
(the BM25 cache next to a bucket corpus, metrics buffered on a bucket) that decision is tested.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from dpr_jax import storage
from dpr_jax.errors import DprJaxError, InputError


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_dir")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DPR_JAX_CACHE", str(tmp_path / "cache"))


PASSAGES = [{"id": f"p{i}", "title": f"Topic {i}", "text": f"river marker{i} flows into lake{i % 3}"}
            for i in range(40)]


# ------------------------------------------------------------------------------------------------
# data readers


@pytest.mark.parametrize("name", ["passages.jsonl", "passages.jsonl.gz", "passages.tsv"])
def test_passages_are_read_alike_from_a_bucket(root, name):
    from dpr_jax.data.passages import estimate_passage_count, read_passages

    if name.endswith(".tsv"):
        data = ("id\ttext\ttitle\n" + "".join(f"{p['id']}\t{p['text']}\t{p['title']}\n" for p in PASSAGES)).encode()
    else:
        data = "".join(json.dumps(p) + "\n" for p in PASSAGES).encode()
    storage.write_bytes(f"{root}/{name}", gzip.compress(data) if name.endswith(".gz") else data)
    got = list(read_passages(f"{root}/{name}"))
    assert [(p.id, p.title, p.text) for p in got] == [(p["id"], p["title"], p["text"]) for p in PASSAGES]
    assert estimate_passage_count(f"{root}/{name}") == len(PASSAGES)
    with pytest.raises(InputError, match="file not found"):
        list(read_passages(f"{root}/missing.jsonl"))


@pytest.mark.parametrize("gz", [False, True])
def test_progress_total_of_a_large_bucket_corpus_reads_only_a_sample(gcs_dir, monkeypatch, gz):
    from dpr_jax.data import textfiles
    from dpr_jax.data.passages import estimate_passage_count

    rng = np.random.default_rng(0)
    words = np.array("river lake castle engine violin harbor garden planet winter market".split())
    lines = [json.dumps({"id": f"p{i}", "text": " ".join(rng.choice(words, size=rng.integers(5, 25)))}) + "\n"
             for i in range(60_000)]
    data = "".join(lines).encode()
    name = f"{gcs_dir}/big.jsonl" + (".gz" if gz else "")
    storage.write_bytes(name, gzip.compress(data) if gz else data)
    monkeypatch.setattr(textfiles, "REMOTE_SAMPLE_BYTES", 1 << 18)
    sampled = []
    count = textfiles._count_newlines

    def spy(path, f, stop):
        n, consumed = count(path, f, stop)
        sampled.append(consumed)
        return n, consumed

    monkeypatch.setattr(textfiles, "_count_newlines", spy)
    estimate = estimate_passage_count(name)
    assert sampled and sampled[0] is not None and sampled[0] < storage.file_size(name)  # stopped early
    assert abs(estimate - len(lines)) / len(lines) < 0.05  # gzip reads ahead: compressed bytes overcount a little
    assert textfiles.count_lines(name) == len(lines)  # the exact count still reads it all


# ------------------------------------------------------------------------------------------------
# the dense index


def test_index_shards_on_a_bucket_read_like_local_ones(root, tmp_path):
    from dpr_jax.index import store

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float16)
    ids = [f"p{i}" for i in range(50)]
    for s, (a, b) in enumerate([(0, 20), (20, 40), (40, 50)]):
        store.write_shard(root, s, vectors[a:b], ids[a:b])
        assert store.shard_done(root, s)
    store.write_meta(root, dim=8, dtype="float16", count=50, num_shards=3)
    index = store.open_index(root)
    assert index.ids() == ids and index.id_at([[0, 49], [-1, 20]]) == [["p0", "p49"], [None, "p20"]]
    chunks = list(index.iter_chunks(16))
    assert [c.shape[0] for _, c in chunks] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), vectors)
    np.testing.assert_array_equal(index.shard_vectors(1), vectors[20:40])
    np.testing.assert_array_equal(index.read_rows(2, 3, 7), vectors[43:47])

    # a shard cut short (a copy that stopped early) is found when the index is opened
    npy, _ = store.shard_paths(root, 1)
    with storage.open_read(npy) as f:
        data = f.read()
    storage.write_bytes(npy, data[:-10])
    with pytest.raises(InputError, match=r"shard-00001\.npy: truncated"):
        store.open_index(root)


def test_int8_shards_and_a_faiss_index_on_a_bucket(root):
    # int8 shards (with their scale files) and a faiss index written next to them on the bucket:
    # decoded alike, searched exactly when every list is probed, refused once a shard is rewritten
    pytest.importorskip("faiss")
    from dpr_jax.index import store
    from dpr_jax.index.ann import AnnSettings, build_ann, default_path, open_ann

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    for s, (a, b) in enumerate([(0, 200), (200, 300)]):
        store.write_shard(root, s, vectors[a:b], [f"p{i}" for i in range(a, b)], dtype="int8")
    store.write_meta(root, dim=16, dtype="int8", count=300, num_shards=2)
    index = store.open_index(root)
    stored = np.concatenate([c for _, c in index.iter_chunks(64)])
    assert np.abs(stored - vectors).max() <= np.abs(vectors).max(axis=0).max() / 127
    build_ann(index, AnnSettings("ivf-flat", nlist=4), progress=False)
    assert storage.as_path(default_path(root)).is_file()
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    scores, rows = open_ann(default_path(root), index).search(queries, 10, nprobe=4)
    full = queries.astype(np.float64) @ stored.astype(np.float64).T
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :10], rtol=1e-4, atol=1e-4)
    store.write_shard(root, 1, vectors[200:300] * 2, [f"p{i}" for i in range(200, 300)], dtype="int8")
    with pytest.raises(DprJaxError, match="stale"):
        open_ann(default_path(root), store.open_index(root))


# ------------------------------------------------------------------------------------------------
# BM25: where the cache of a bucket corpus lives


def test_bm25_cache_of_a_bucket_corpus_is_local_and_follows_the_object_generation(gcs_dir, tmp_path, monkeypatch):
    from dpr_jax.index import bm25

    corpus = f"{gcs_dir}/corpus/passages.jsonl"
    storage.write_jsonl(corpus, PASSAGES)
    first = bm25.open_or_build(corpus, show_progress=False)
    cache = bm25.default_cache_dir(corpus)
    assert str(cache).startswith(str(tmp_path / "cache" / "bm25")) and (cache / "meta.json").is_file()
    assert not storage.as_path(f"{gcs_dir}/corpus/passages.jsonl.bm25").exists()  # nothing written beside it
    assert first.source["url"] == corpus and first.source["generation"]

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the corpus did not change")

    with monkeypatch.context() as m:
        m.setattr(bm25.BM25Index, "build", no_build)
        again = bm25.open_or_build(corpus, show_progress=False)
    assert again.search(["marker7"], 1, show_progress=False)[0] == [["p7"]]

    storage.write_jsonl(corpus, PASSAGES[:30])  # rewritten: a new generation, the cache is stale
    rebuilt = bm25.open_or_build(corpus, show_progress=False)
    assert len(rebuilt) == 30 and rebuilt.source != first.source


def test_bm25_index_dir_on_a_bucket_is_saved_there_and_loaded_back(gcs_dir, tmp_path):
    from dpr_jax.index import bm25

    corpus = tmp_path / "passages.jsonl"
    storage.write_jsonl(corpus, PASSAGES)
    built = bm25.open_or_build(corpus, f"{gcs_dir}/bm25", show_progress=False)
    assert storage.as_path(f"{gcs_dir}/bm25/meta.json").is_file()
    assert not (tmp_path / "passages.jsonl.bm25").exists()
    loaded = bm25.BM25Index.load(f"{gcs_dir}/bm25")
    queries = ["marker3 river", "lake2"]
    assert loaded.search(queries, 5, show_progress=False)[0] == built.search(queries, 5, show_progress=False)[0]


# ------------------------------------------------------------------------------------------------
# run directories: metrics, training curves


def test_metrics_are_appended_at_once_locally_and_buffered_on_a_bucket(root, monkeypatch):
    from dpr_jax.models import run_dir
    from dpr_jax.train.loop import MetricsLog

    storage.make_dirs(root)
    log = MetricsLog(root, 0)
    log.write({"step": 1, "loss": 2.0})
    on_storage = [r["step"] for r in run_dir.read_metrics(root)]
    assert on_storage == ([] if storage.is_remote(root) else [1])  # a bucket object is rewritten per append
    log.write({"step": 2, "loss": 1.5})
    log.flush()
    assert [r["step"] for r in run_dir.read_metrics(root)] == [1, 2]
    log.flush_seconds = 0  # every write flushes once the interval has passed
    log.write({"step": 3, "loss": 1.0})
    assert [r["step"] for r in run_dir.read_metrics(root)] == [1, 2, 3]
    MetricsLog(root, 2)  # a resume from step 2 drops the later rows
    assert [r["step"] for r in run_dir.read_metrics(root)] == [1, 2]


def test_plot_training_reads_metrics_from_a_bucket_and_writes_the_png_there(gcs_dir):
    from dpr_jax import plots
    from dpr_jax.models import run_dir

    run_dir.append_metrics(gcs_dir, [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "accuracy": 0.5} for s in (1, 2, 3)])
    plots.plot_training(gcs_dir, f"{gcs_dir}/training.png")
    with storage.open_read(f"{gcs_dir}/training.png") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# exports


def test_export_to_a_bucket_and_overwrite_leave_only_the_new_layout(gcs_dir, minilm_dir):
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.export import export_model
    from dpr_jax.models.loading import init_random_model, load_model

    bert = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    loaded = init_random_model(bert, EncoderConfig(pooling="cls"), str(minilm_dir), shared=True)
    out = f"{gcs_dir}/export"
    export_model(loaded, out, "hf")
    assert storage.as_path(f"{out}/model.safetensors").is_file()
    with pytest.raises(DprJaxError, match="already exists"):
        export_model(loaded, out, "hf")
    result = export_model(loaded, out, "dpr", overwrite=True)  # two tower directories replace OUT/ itself
    assert str(result.tower_dirs["question"]) == f"{out}/question_encoder"
    assert not storage.as_path(f"{out}/model.safetensors").exists()
    back = load_model(out)  # from a cached local copy of the bucket's files
    assert back.source == out and not back.shared
    from flax import nnx

    import jax

    def params(tower) -> dict:
        flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(tower, nnx.Param)))[0]
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}

    want = params(loaded.model.question)
    for tower in (back.model.question, back.model.passage):
        got = params(tower)
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


# ------------------------------------------------------------------------------------------------
# a URL that lost a slash never becomes a local folder


def test_train_with_a_mangled_url_workdir_is_refused_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from dpr_jax.cli import main

    monkeypatch.chdir(tmp_path)
    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tiny.py")
    assert main(["train", "--config", config, "--workdir", "gs:/bucket/run"]) == 2
    assert "looks like a URL that lost a '/'" in capsys.readouterr().err
    assert not any(p.name.lower().startswith("gs") for p in tmp_path.iterdir())
