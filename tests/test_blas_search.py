"""The CPU (BLAS + pruning) path of exact search, against NumPy float64 brute force and the JAX path.

Data are small integers, so every float32 score is exact whatever order the BLAS or XLA sums in,
and ties are everywhere: across block boundaries, inside blocks, between a column group's maximum
and other groups, and at the k-th place. The reference is a stable sort of the float64 scores,
i.e. among equal scores the lower row first; results must equal it id for id.
"""

import ml_dtypes
import numpy as np
import pytest

import dpr_jax.index.blas_search as blas_search
from dpr_jax.errors import DprJaxError
from dpr_jax.index.blas_search import GROUP, as_float32
from dpr_jax.index.search import choose_engine, exact_search
from dpr_jax.index.store import open_index, write_meta, write_shard


def tied_data(n, q, dim=6, high=3, seed=0):
    """(queries, corpus) of small integers: many exactly equal scores per query."""
    rng = np.random.default_rng(seed)
    corpus = rng.integers(-high, high + 1, size=(n, dim)).astype(np.float32)
    queries = rng.integers(-high, high + 1, size=(q, dim)).astype(np.float32)
    return queries, corpus


def reference(queries, corpus, k):
    """float64 scores, stable sort: the k best, ties to the lower row."""
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-full, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(full, order, axis=1), order


def assert_exact(queries, corpus, k, source=None, offset=0, **kwargs):
    """BLAS and XLA engines both equal the reference (ids, order and scores)."""
    ref_scores, ref_rows = reference(queries, corpus, k)
    out = {}
    for engine in ("blas", "xla"):
        scores, rows = exact_search(queries, corpus if source is None else source, k, engine=engine, **kwargs)
        assert rows.dtype == np.int64 and scores.dtype == np.float32
        np.testing.assert_array_equal(rows, ref_rows + offset, err_msg=engine)
        np.testing.assert_array_equal(scores, ref_scores.astype(np.float32), err_msg=engine)
        out[engine] = scores, rows
    return out


def test_data_really_ties_across_blocks_and_at_the_kth_place():
    queries, corpus = tied_data(1000, 8)
    scores, rows = reference(queries, corpus, 40)
    full = queries @ corpus.T
    kth = scores[:, -1:]
    assert np.all((full == kth).sum(axis=1) > 3)  # the k-th score is shared by several rows...
    assert np.all((full[:, :64] == kth).any(axis=1) | (full[:, 64:] == kth).any(axis=1))  # ...in many blocks


@pytest.mark.parametrize("k,chunk_rows,group", [
    (40, 64, 1),      # groups of one column: 64 of them >= k, so the first block is cut at its k-th best
    (3, 256, 64),     # 4 groups of 64 >= k
    (10, 1000, 64),   # one block of 1024 (1000 rounded up to 64s), 16 groups, the last 24 rows padding
    (100, 2048, 8),   # one block of 1024: groups shrink to 8 columns, so that there are k of them
    (150, 64, 1),     # k > block rows: no bound, the list fills over three blocks
])
def test_many_ties_equal_a_stable_sort(k, chunk_rows, group):
    queries, corpus = tied_data(1000, 9, seed=k)
    assert blas_search.RunningTopK(queries, k, -(-min(chunk_rows, 1000) // GROUP) * GROUP).group == group
    assert_exact(queries, corpus, k, chunk_rows=chunk_rows)


@pytest.mark.parametrize("k,chunk_rows", [(4, 256), (16, 1024), (1, 128)])
def test_first_block_holding_the_whole_top_k(k, chunk_rows):
    # Every top-k row lies in the first block (a +100 column), where the list is cut at that block's
    # k-th best group maximum: a cut one place too high loses a row here, and later blocks cannot
    # bring it back.
    queries, corpus = tied_data(1500, 6, seed=k)
    corpus = np.concatenate([corpus, np.zeros((1500, 1), np.float32)], axis=1)
    corpus[:chunk_rows, -1] = 100
    queries = np.concatenate([queries, np.ones((6, 1), np.float32)], axis=1)
    assert_exact(queries, corpus, k, chunk_rows=chunk_rows)


@pytest.mark.parametrize("k", [5, 100])
def test_a_corpus_of_duplicates_keeps_the_lowest_rows(k, monkeypatch):
    # Every score ties: the first block's cut admits every column, so each query takes its exact
    # block top-k (the lowest rows) instead of thousands of candidates.
    widths = []
    real = blas_search.RunningTopK._merge
    monkeypatch.setattr(blas_search.RunningTopK, "_merge", lambda self, s, cq, cv, cr: (
        widths.append(np.bincount(cq).max()), real(self, s, cq, cv, cr)))
    queries = np.ones((3, 4), np.float32)
    corpus = np.ones((20000, 4), np.float32)
    corpus[7000] = 2  # one better row, in the first block, and one in the last
    corpus[19999] = 2
    assert_exact(queries, corpus, k, chunk_rows=8192)
    assert max(widths) <= k  # candidates per query and block: not the 8192 tied columns


def test_a_corpus_of_duplicates_stays_in_bounded_memory():
    # All 32768 columns of the block tie: they must not all be gathered as candidates (about 12x
    # the score matrix measured without the group-level check; 4x with it).
    import tracemalloc

    queries, corpus = np.ones((200, 4), np.float32), np.ones((32768, 4), np.float32)
    score_bytes = 200 * 32768 * 4
    tracemalloc.start()
    try:
        _, rows = exact_search(queries, corpus, 5, engine="blas")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows[0].tolist() == [0, 1, 2, 3, 4]
    assert peak < 6 * score_bytes, peak / score_bytes


def test_corpus_improving_block_by_block():
    # Each block beats the last, so every block would open every group without the block cut.
    queries, corpus = tied_data(4096, 4, dim=6, seed=10)
    corpus[:, 0] = np.repeat(np.arange(8), 512) * 100
    queries[:, 0] = 1
    assert_exact(queries, corpus, 20, chunk_rows=512)


def test_planted_duplicates_across_blocks_keep_the_lower_row_first():
    # Rows r and r + 300 and r + 600 are equal (and fall in different blocks of 64), and the
    # integer scores tie among other rows too.
    queries, base = tied_data(300, 5, dim=8, seed=2)
    corpus = np.concatenate([base, base, base])
    out = assert_exact(queries, corpus, 90, chunk_rows=64)
    rows = out["blas"][1]
    for later in (300, 600):  # a copy never comes before the row it copies
        for qi in range(5):
            pos = {r: i for i, r in enumerate(rows[qi])}
            assert all(pos[r] < pos[r + later] for r in pos if r + later in pos)


def test_k_larger_than_the_corpus_and_last_partial_block():
    queries, corpus = tied_data(130, 4, seed=3)  # blocks of 64: 64, 64, 2 real rows
    assert_exact(queries, corpus, 130, chunk_rows=64)
    scores, rows = exact_search(queries, corpus, 500, chunk_rows=64, engine="blas")  # clamped
    assert rows.shape == (4, 130) and sorted(rows[0].tolist()) == list(range(130))


def test_large_reads_are_scored_in_smaller_blocks(monkeypatch):
    # Reads of 512 rows (500 rounded up) scored as blocks of 128; the last read holds 488 real rows.
    import dpr_jax.index.search as search

    monkeypatch.setattr(search, "BLAS_BLOCK_ROWS", 128)
    seen = []
    real = blas_search.RunningTopK.add

    def add(self, off, block, valid):
        seen.append((off, block.shape[0], valid))
        real(self, off, block, valid)

    monkeypatch.setattr(blas_search.RunningTopK, "add", add)
    queries, corpus = tied_data(1000, 5, seed=9)
    ref_scores, ref_rows = reference(queries, corpus, 33)
    scores, rows = exact_search(queries, corpus, 33, chunk_rows=500, engine="blas")
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))
    assert seen == [(off, 128, 128) for off in range(0, 896, 128)] + [(896, 128, 104)]


def test_query_slices_each_keep_their_own_list(monkeypatch):
    # A score buffer of 64 x 5 floats: 23 queries go through in slices of 5 (the last of 3).
    monkeypatch.setattr(blas_search, "_SCORE_FLOATS", 64 * 5)
    queries, corpus = tied_data(700, 23, seed=4)
    assert_exact(queries, corpus, 17, chunk_rows=64)


def test_row_range_scores_only_those_rows_and_keeps_global_numbers():
    queries, corpus = tied_data(900, 6, seed=5)
    assert_exact(queries, corpus[250:777], 30, source=corpus, offset=250, chunk_rows=128, row_range=(250, 777))


def write_index(path, corpus, dtype, sizes=(300, 450, 250)):
    start = 0
    for no, size in enumerate(sizes):
        write_shard(path, no, corpus[start:start + size], [f"p{r}" for r in range(start, start + size)], dtype=dtype)
        start += size
    write_meta(path, model="test", dim=corpus.shape[1], dtype=dtype, count=start, num_shards=len(sizes),
               normalize=False)
    return open_index(path)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_stored_dtypes_equal_brute_force_over_the_stored_values(tmp_path, dtype):
    # Integers up to 127 are exact in float16 and bfloat16; with +-127 in every column of every
    # shard the int8 scale is exactly 1, so every stored value, and every score, is exact.
    rng = np.random.default_rng(6)
    corpus = rng.integers(-127, 128, size=(1000, 8)).astype(np.float32)
    for shard_start in (0, 300, 750):
        corpus[shard_start] = 127
    corpus[500:510] = corpus[10:20]  # ties across shards and blocks
    queries = rng.integers(-2, 3, size=(7, 8)).astype(np.float32)
    index = write_index(tmp_path, corpus, dtype)
    assert assert_exact(queries, corpus, 25, source=index, chunk_rows=192)
    assert_exact(queries, corpus[300:1000], 25, source=index, offset=300, chunk_rows=192, row_range=(300, 1000))
    # --dim: the first 5 coordinates only (cut, not copied, before the float32 conversion)
    assert_exact(queries[:, :5], corpus[:, :5], 25, source=index.truncated(5), chunk_rows=192)


def test_as_float32_converts_each_storage_dtype():
    x = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    for stored in (x.astype(np.float16), x.astype(ml_dtypes.bfloat16), x.astype(np.float64)):
        got = as_float32(stored)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, stored.astype(np.float32))
    assert as_float32(x) is x  # float32 passes through without a copy


def test_gaussian_scores_are_true_scores_and_agree_with_the_jax_path():
    # Real values: BLAS and XLA may round a score differently in the last bit, so ids can differ
    # only between (near-)tied rows; scores must be the true top-k values either way.
    rng = np.random.default_rng(8)
    corpus = rng.standard_normal((3000, 48), dtype=np.float32)
    queries = rng.standard_normal((12, 48), dtype=np.float32)
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    s_blas, r_blas = exact_search(queries, corpus, 50, chunk_rows=1024, engine="blas")
    s_xla, r_xla = exact_search(queries, corpus, 50, chunk_rows=1024, engine="xla")
    np.testing.assert_allclose(s_blas, -np.sort(-full, axis=1)[:, :50], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(s_blas, np.take_along_axis(full, r_blas, axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(s_blas, s_xla, rtol=1e-5, atol=1e-4)
    assert (r_blas == r_xla).mean() > 0.98


def test_engine_choice():
    import jax.numpy as jnp

    assert choose_engine("auto", None, None, jnp.float32) == "blas"  # tests run on the CPU backend
    assert choose_engine("auto", None, 0.9, jnp.float32) == "xla"  # approx_recall: the JAX path only
    assert choose_engine("auto", None, None, jnp.bfloat16) == "xla"
    queries, corpus = tied_data(100, 2)
    with pytest.raises(DprJaxError, match="approx_recall"):
        exact_search(queries, corpus, 3, engine="blas", approx_recall=0.9)
    with pytest.raises(DprJaxError, match="engine must be"):
        exact_search(queries, corpus, 3, engine="numpy")


def test_block_rows_must_be_whole_groups():
    with pytest.raises(ValueError, match="multiple"):
        blas_search.RunningTopK(np.ones((2, 3), np.float32), 5, GROUP + 1)
