"""faiss indexes built from dpr-jax shards, checked against NumPy brute force.

Data: a clustered corpus (a mixture of Gaussians around random centres, each cluster with its own
spread), which is what encoders produce and what IVF/HNSW/PQ are designed for; isotropic noise
would be the worst case and unlike any real corpus. Queries are drawn near the centres.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from dpr_jax.errors import DprJaxError  # noqa: E402
from dpr_jax.index.ann import AnnSettings, build_ann, default_path, open_ann, sidecar  # noqa: E402
from dpr_jax.index.store import open_index, write_meta, write_shard  # noqa: E402
from dpr_jax.index.truncate import truncate_vectors  # noqa: E402

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # faiss's OpenMP threads spin while waiting: on a shared 2-core machine two of them run several
    # times slower than one. The results do not depend on the thread count.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n, q, dim=DIM, clusters=40, seed=0):
    """(queries [q, dim], corpus [n, dim]) float32: Gaussian clusters with spreads 0.15-0.6."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    spread = rng.uniform(0.15, 0.6, clusters).astype(np.float32)
    assign = rng.integers(0, clusters, n)
    corpus = centres[assign] + spread[assign, None] * rng.standard_normal((n, dim)).astype(np.float32)
    pick = rng.integers(0, clusters, q)
    queries = centres[pick] + 0.3 * rng.standard_normal((q, dim)).astype(np.float32)
    return queries.astype(np.float32), corpus.astype(np.float32)


def write_index(path, corpus, sizes, dtype="float16", normalize=None):
    start = 0
    for no, size in enumerate(sizes):
        write_shard(path, no, corpus[start:start + size], [f"p{r}" for r in range(start, start + size)], dtype=dtype)
        start += size
    assert start == corpus.shape[0]
    extra = {} if normalize is None else {"normalize": normalize}
    write_meta(path, model="test", dim=corpus.shape[1], dtype=dtype, count=start, num_shards=len(sizes), **extra)
    return open_index(path)


def stored_values(index):
    return np.concatenate([c for _, c in index.iter_chunks(10_000)]).astype(np.float32)


def brute_force(queries, corpus, k):
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    return full, np.argsort(-full, axis=1, kind="stable")[:, :k]


def recall(rows, ref):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows.tolist(), ref.tolist())]))


def assert_exact_ranking(scores, rows, full, k):
    """``rows`` are a true top-k of ``full`` (ties by float rounding allowed) and scores are theirs."""
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :k], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def data():
    return clustered(6000, 50)


@pytest.fixture(scope="module")
def index16(tmp_path_factory, data):
    return write_index(tmp_path_factory.mktemp("idx16"), data[1], [2500, 2500, 1000])


def test_ivf_flat_probing_every_list_equals_exact_and_ids_map(index16, data, tmp_path):
    queries, _ = data
    out = tmp_path / "ivf.faiss"
    desc = build_ann(index16, AnnSettings("ivf-flat", nlist=16), out, progress=False)
    assert desc["factory"] == "IVF16,Flat" and desc["count"] == 6000 and desc["settings"]["train_size"] == 6000
    ann = open_ann(out, index16)
    scores, rows = ann.search(queries, 20, nprobe=16)
    full, ref = brute_force(queries, stored_values(index16), 20)
    assert_exact_ranking(scores, rows, full, 20)
    assert recall(rows, ref) == 1.0
    # rows are the shards' global rows: ids come back through the same mapping as exact search
    assert index16.id_at(rows) == [[f"p{r}" for r in row] for row in rows.tolist()]
    # fewer lists probed: approximate, still most of the true neighbours on clustered data
    _, rows1 = ann.search(queries, 20, nprobe=2)
    assert 0.6 <= recall(rows1, ref) < 1.0


@pytest.mark.parametrize("settings,search,bound", [
    (AnnSettings("hnsw", hnsw_m=16, ef_construction=64), {"ef_search": 64}, 0.95),
    (AnnSettings("ivf-pq", nlist=16, pq_m=16, nbits=8), {"nprobe": 8}, 0.60),
    (AnnSettings("sq8"), {}, 0.93),
    (AnnSettings("sq8", nlist=16), {"nprobe": 8}, 0.93),
    (AnnSettings("factory", factory="PCA24,IVF16,SQ8"), {"nprobe": 8}, 0.65),
], ids=["hnsw", "ivf-pq", "sq8", "ivf-sq8", "pca-ivf-sq8"])
def test_recall_at_10_against_numpy_brute_force(index16, data, tmp_path, settings, search, bound):
    # Bounds sit below what these settings measured here (hnsw 0.99, ivf-pq 0.74, sq8 0.97,
    # ivf-sq8 0.97, pca-ivf-sq8 0.79; 2 dims per PQ code on 6,000 training rows is coarse), so a
    # broken id mapping or a wrong metric fails while faiss's own randomness does not. The factory
    # case puts IVF inside a pre-transform: nprobe must still reach it.
    queries, _ = data
    build_ann(index16, settings, tmp_path / "a.faiss", progress=False)
    scores, rows = open_ann(tmp_path / "a.faiss", index16).search(queries, 10, **search)
    full, ref = brute_force(queries, stored_values(index16), 10)
    assert recall(rows, ref) >= bound
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_build_reads_every_dtype(tmp_path, data, dtype):
    # a flat (exact) faiss index over shards of each dtype = NumPy brute force over the stored values
    queries, corpus = data
    index = write_index(tmp_path, corpus[:3000], [1000, 2000], dtype=dtype)
    build_ann(index, AnnSettings("factory", factory="Flat"), progress=False)
    scores, rows = open_ann(default_path(tmp_path), index).search(queries, 15)
    full, _ = brute_force(queries, stored_values(index), 15)
    assert_exact_ranking(scores, rows, full, 15)


@pytest.mark.parametrize("normalize", [True, False])
def test_truncated_build_follows_the_model_normalisation(tmp_path, data, normalize):
    queries, corpus = data
    index = write_index(tmp_path, corpus[:2000], [2000], dtype="float32", normalize=normalize)
    desc = build_ann(index, AnnSettings("factory", factory="Flat", dim=12), progress=False)
    assert desc["dim"] == 12 and desc["source_dim"] == DIM and desc["normalize_truncated"] is normalize
    q = truncate_vectors(queries, 12, normalize)
    scores, rows = open_ann(default_path(tmp_path), index).search(q, 10)
    ref_corpus = corpus[:2000, :12]
    if normalize:
        ref_corpus = ref_corpus / np.linalg.norm(ref_corpus, axis=1, keepdims=True)
    full, _ = brute_force(q, ref_corpus, 10)
    assert_exact_ranking(scores, rows, full, 10)


def test_truncating_needs_to_know_the_normalisation(tmp_path, data):
    index = write_index(tmp_path, data[1][:500], [500], dtype="float32")  # meta.json without "normalize"
    with pytest.raises(DprJaxError, match="normalize"):
        build_ann(index, AnnSettings("factory", factory="Flat", dim=12), progress=False)


def test_stale_or_unfinished_index_is_refused(tmp_path, data):
    queries, corpus = data
    index = write_index(tmp_path, corpus[:2000], [1000, 1000])
    build_ann(index, AnnSettings("ivf-flat", nlist=8), progress=False)
    path = default_path(tmp_path)
    open_ann(path, index)  # fresh: fine
    write_shard(tmp_path, 1, corpus[1000:2000] * 2, [f"p{r}" for r in range(1000, 2000)], dtype="float16")  # re-encoded
    index = open_index(tmp_path)
    with pytest.raises(DprJaxError, match=r"stale: the shards changed since it was built \(shard-00001\.ids, "
                                          r"shard-00001\.npy\); rebuild it \(dpr-jax index build"):
        open_ann(path, index)
    build_ann(index, AnnSettings("ivf-flat", nlist=8), progress=False)  # rebuilt: accepted again
    open_ann(path, index)
    path.write_bytes(path.read_bytes()[:-10])  # a faiss file that is not the one described
    with pytest.raises(DprJaxError, match="size differs"):
        open_ann(path, index)
    sidecar(path).unlink()  # a build that never finished
    with pytest.raises(DprJaxError, match=r"ann\.json: missing"):
        open_ann(path, index)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_settings_are_refused_before_work(index16):
    for settings, msg in [(AnnSettings("ivf-pq", nlist=16, pq_m=7), "--pq-m must divide"),
                          (AnnSettings("ivf-flat", nlist=10**6), "--nlist must be between"),
                          (AnnSettings("hnsw", nlist=8), "--nlist does not apply"),
                          (AnnSettings("factory"), "--factory"),
                          (AnnSettings("factory", factory="IVF16,Nonsense"), "faiss cannot build"),
                          (AnnSettings("ivf-flat", nlist=8, train_size=10**7), "--train-size"),
                          (AnnSettings("hnsw", dim=99), "--dim must be between")]:
        with pytest.raises(DprJaxError, match=msg):
            build_ann(index16, settings, "/nonexistent-dir/never-written.faiss", progress=False)


_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from dpr_jax.index.ann import AnnSettings, build_ann
    from dpr_jax.index.store import open_index
    import faiss
    index = open_index(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    build_ann(index, AnnSettings("ivf-pq", nlist=32, pq_m=8, train_size=12000, chunk_rows=2048), progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before}))
""")


def test_build_memory_is_bounded_by_one_chunk_not_the_corpus(tmp_path):
    # 240k x 128 float32 shards (123 MB as float32 in memory). The build holds the training sample
    # (12k rows, 6 MB), one 2,048-row chunk (1 MB) and the IVF-PQ index (16 B a row, 4 MB) plus
    # faiss's scratch: its peak RSS may grow by far less than the corpus. Reading the corpus whole
    # (or keeping its pages mapped) would grow it by >= 123 MB.
    rng = np.random.default_rng(3)
    n, dim, shard = 240_000, 128, 60_000
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    for no in range(n // shard):
        x = centres[rng.integers(0, 64, shard)] + 0.4 * rng.standard_normal((shard, dim), dtype=np.float32)
        write_shard(tmp_path, no, x, [f"p{no}-{r}" for r in range(shard)], dtype="float32")
    write_meta(tmp_path, dim=dim, dtype="float32", count=n, num_shards=n // shard)
    corpus_kib = n * dim * 4 / 1024
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])["growth_kib"]
    assert growth < corpus_kib / 4, f"peak RSS grew {growth / 1024:.0f} MiB during a build over {corpus_kib / 1024:.0f} MiB"
    assert open_ann(default_path(tmp_path), open_index(tmp_path)).index.ntotal == n


def test_other_faiss_parameters_by_name(index16, data, tmp_path):
    # a refine stage (exact re-scoring of k_factor x k candidates) over coarse 4-bit codes: asking
    # for more candidates through a named faiss parameter raises recall to exact
    queries, _ = data
    build_ann(index16, AnnSettings("factory", factory="IVF16,SQ4,RFlat"), tmp_path / "r.faiss", progress=False)
    ann = open_ann(tmp_path / "r.faiss", index16)
    full, ref = brute_force(queries, stored_values(index16), 10)
    _, base = ann.search(queries, 10, nprobe=16, params={"k_factor_rf": 1})
    scores, wide = ann.search(queries, 10, nprobe=16, params={"k_factor_rf": 8})
    assert recall(base, ref) < recall(wide, ref) == 1.0
    assert_exact_ranking(scores, wide, full, 10)
    with pytest.raises(DprJaxError, match=r"faiss parameter efSearchX=3 does not apply to IVF16,SQ4,RFlat \(faiss: "):
        ann.search(queries, 10, params={"efSearchX": 3})


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_rerank_from_the_shards_gives_exact_scores_and_order(tmp_path, data, dtype):
    from dpr_jax.index.ann import rerank_exact

    queries, corpus = data
    index = write_index(tmp_path, corpus, [2500, 2500, 1000], dtype=dtype)
    build_ann(index, AnnSettings("ivf-pq", nlist=16, pq_m=8, nbits=6), progress=False)  # coarse codes
    ann = open_ann(default_path(tmp_path), index)
    full, ref = brute_force(queries, stored_values(index), 10)
    _, approx = ann.search(queries, 10, nprobe=16)
    _, shortlist = ann.search(queries, 200, nprobe=16)
    shortlist[0, -5:] = -1  # fewer candidates for one question: fillers stay last
    scores, rows = rerank_exact(index, queries, shortlist, 10, batch=7)
    assert rows.shape == (50, 10) and recall(rows, ref) > recall(approx, ref)
    for q in range(50):  # exactly the best 10 of the candidates, by exact score
        cand = shortlist[q][shortlist[q] >= 0]
        best = cand[np.argsort(-full[q, cand], kind="stable")[:10]]
        np.testing.assert_allclose(full[q, rows[q]], full[q, best], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
