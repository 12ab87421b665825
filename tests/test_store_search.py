"""The shard store and exact search, checked against NumPy brute force (argsort of q @ C.T).

Test data is random but built so that every score is computed exactly in float32 and float16 and
no two corpus rows tie for any query: integer vector entries in [-3, 3] plus one column holding a
distinct multiple of 2**-12 per row, met by a query weight of 1. Scores are then integer + distinct
fraction, all exactly representable, so "identical ids" is a fair demand on any correct search.
"""

import json

import numpy as np
import pytest

from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.index.search import exact_search, search_index, uses_groups
from dpr_jax.index.store import open_index, read_meta, shard_done, shard_paths, write_meta, write_shard
from dpr_jax.mesh import make_mesh

DIM = 24


def tie_free_data(n, q, seed=0):
    """(queries [q, DIM] f32, corpus [n, DIM] f32) whose exact scores are all distinct per query."""
    assert n <= 2048  # the fractions perm * 2**-12 stay below 0.5 and exact in float16
    rng = np.random.default_rng(seed)
    corpus = rng.integers(-3, 4, size=(n, DIM)).astype(np.float32)
    corpus[:, -1] = rng.permutation(n) * 2.0**-12
    queries = rng.integers(-3, 4, size=(q, DIM)).astype(np.float32)
    queries[:, -1] = 1.0
    return queries, corpus


def brute_force(queries, corpus, k):
    """NumPy reference: float64 scores, full argsort; asserts the data really has no ties."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")
    top = np.take_along_axis(scores, order, axis=1)
    assert np.all(np.diff(top, axis=1) < 0), "test data has tied scores"
    return top[:, :k], order[:, :k]


def check(queries, corpus, k, **kwargs):
    ref_scores, ref_rows = brute_force(queries, corpus, k)
    scores, rows = exact_search(queries, kwargs.pop("source", corpus), k, **kwargs)
    assert rows.dtype == np.int64 and rows.shape == ref_rows.shape
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))
    return scores, rows


_MESHES = {}


def mesh_or_none(use_mesh: bool):
    """The 8-device mesh (made once) or None; only tests that use it need 8 devices."""
    if not use_mesh:
        return None
    if "8" not in _MESHES:
        _MESHES["8"] = make_mesh(8)
    return _MESHES["8"]


@pytest.fixture
def mesh8():
    return mesh_or_none(True)


MODES = ["blas", "xla", "xla-mesh"]  # the CPU default, the JAX path on one device, the JAX path on 8


def mode_kwargs(mode: str) -> dict:
    """exact_search arguments for a mode: the engine, and the 8-device mesh for "xla-mesh"."""
    return {"engine": mode.split("-")[0], "mesh": mesh_or_none(mode == "xla-mesh")}


@pytest.mark.parametrize("engine", ["blas", "xla"])
@pytest.mark.parametrize("chunk_rows", [64, 100, 777, 5000])
def test_matches_bruteforce_for_chunk_sizes(chunk_rows, engine):
    # 1500 rows: 100 and 777 do not divide it (padded last chunk); 5000 is larger than the corpus.
    # 37 queries in batches of 4, 3 batches per step: 12 batches of 4 (11 padded rows), 4 steps.
    queries, corpus = tie_free_data(1500, 37)
    check(queries, corpus, 10, chunk_rows=chunk_rows, query_batch=4, batches_per_step=3, engine=engine)


@pytest.mark.parametrize("use_mesh", [False, True])
def test_grouped_topk_matches_bruteforce(use_mesh):
    # top-k through the k groups with the largest maxima (the path large chunks take).
    queries, corpus = tie_free_data(2000, 21, seed=8)
    chunk_rows, group = 1024, (2 if use_mesh else 4)
    assert uses_groups(chunk_rows // (8 if use_mesh else 1), 10, group)
    check(queries, corpus, 10, chunk_rows=chunk_rows, topk_group=group, mesh=mesh_or_none(use_mesh), engine="xla")


@pytest.mark.parametrize("chunk_rows", [100, 512])
def test_eight_device_mesh_matches_bruteforce_and_one_device(mesh8, chunk_rows):
    queries, corpus = tie_free_data(1500, 20, seed=1)
    one = exact_search(queries, corpus, 15, chunk_rows=chunk_rows, engine="xla")
    eight = check(queries, corpus, 15, mesh=mesh8, chunk_rows=chunk_rows, engine="xla")
    np.testing.assert_array_equal(one[1], eight[1])
    np.testing.assert_array_equal(one[0], eight[0])


@pytest.mark.parametrize("mode", MODES)
def test_uneven_iterable_of_chunks_numbers_rows_consecutively(mode):
    queries, corpus = tie_free_data(1000, 9, seed=2)
    pieces = np.split(corpus, [3, 250, 251, 700])  # sizes 3, 247, 1, 449, 300
    check(queries, corpus, 7, source=iter(pieces), chunk_rows=128, **mode_kwargs(mode))


def test_chunks_already_on_the_device_are_scored_in_place():
    import jax

    from dpr_jax.index.search import _fixed_blocks

    queries, corpus = tie_free_data(1000, 6, seed=7)
    pieces = [jax.device_put(corpus[s : s + 256]) for s in range(0, 1000, 256)]  # 256 x 3, then 232
    blocks = list(_fixed_blocks(iter(pieces), 256, DIM))
    assert all(b is p for (_, b, _), p in zip(blocks[:3], pieces[:3]))  # passed through, not copied to the host
    assert blocks[3][2] == 232
    check(queries, corpus, 9, source=iter(pieces), chunk_rows=256)


@pytest.mark.parametrize("mode", MODES)
def test_k_equal_to_and_larger_than_corpus(mode):
    queries, corpus = tie_free_data(300, 5, seed=3)
    check(queries, corpus, 300, chunk_rows=64, **mode_kwargs(mode))  # the full ranking
    scores, rows = exact_search(queries, corpus, 1000, chunk_rows=64, **mode_kwargs(mode))  # clamped to 300
    assert rows.shape == (5, 300)
    np.testing.assert_array_equal(rows, brute_force(queries, corpus, 300)[1])


@pytest.mark.parametrize("engine,use_mesh,chunk_rows,group", [("blas", False, 48, 1), ("blas", False, 640, 1),
                                                            ("xla", False, 48, 1), ("xla", False, 48, 2),
                                                            ("xla", True, 48, 1), ("xla", True, 384, 2)])
def test_exact_ties_keep_the_lower_row_first(engine, use_mesh, chunk_rows, group):
    queries, corpus = tie_free_data(200, 4, seed=4)
    corpus = np.concatenate([corpus, corpus])  # row r and row r + 200 score the same
    assert uses_groups(chunk_rows // (8 if use_mesh else 1), 6, group) == (group > 1)
    scores, rows = exact_search(queries, corpus, 6, chunk_rows=chunk_rows, topk_group=group,
                                mesh=mesh_or_none(use_mesh), engine=engine)
    _, ref = brute_force(queries, corpus[:200], 3)
    expected = np.stack([ref, ref + 200], axis=2).reshape(4, 6)  # each pair: lower row, then its twin
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(scores[:, 0::2], scores[:, 1::2])


@pytest.mark.parametrize("k,group", [(1, 2), (7, 4), (30, 16), (32, 16)])
def test_grouped_topk_equals_stable_sort_with_many_ties(k, group):
    # Small integers: ties everywhere, including between a group's maximum and other groups'
    # non-maximal elements. The result must equal a stable sort (ties to the lower column).
    import jax

    from dpr_jax.index.search import _topk_by_groups

    x = np.random.default_rng(9).integers(0, 12, size=(64, 512)).astype(np.float32)
    v, i = jax.jit(_topk_by_groups, static_argnums=(1, 2))(x, k, group)
    ref = np.argsort(-x, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(np.asarray(i), ref)
    np.testing.assert_array_equal(np.asarray(v), np.take_along_axis(x, ref, axis=1))


def test_gaussian_data_scores_match_numpy():
    # Real-valued data (ties by rounding possible): the returned scores must be the true top-k
    # values, and each must be the score of the row returned with it.
    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((2000, 64), dtype=np.float32)
    queries = rng.standard_normal((11, 64), dtype=np.float32)
    scores, rows = exact_search(queries, corpus, 25, chunk_rows=300)
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :25], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-4)


def write_index(path, corpus, sizes, dtype=np.float16):
    ids, start = [f"p{r}" for r in range(corpus.shape[0])], 0
    for no, size in enumerate(sizes):
        write_shard(path, no, corpus[start : start + size].astype(dtype), ids[start : start + size])
        start += size
    assert start == corpus.shape[0]
    write_meta(path, model="test", pooling="cls", dim=corpus.shape[1], dtype=np.dtype(dtype).name,
               count=start, num_shards=len(sizes))
    return ids


@pytest.mark.parametrize("mode", MODES)
def test_float16_index_on_disk_matches_bruteforce(tmp_path, mode):
    queries, corpus = tie_free_data(1500, 13, seed=6)
    ids = write_index(tmp_path, corpus, [500, 700, 300])
    index = open_index(tmp_path)
    assert index.dtype == np.float16 and index.count == 1500
    # 256-row chunks span the shard boundaries; the corpus is exactly representable in float16.
    check(queries, corpus, 12, source=index, chunk_rows=256, **mode_kwargs(mode))
    scores, found = search_index(index, queries, 12, chunk_rows=256)
    _, ref_rows = brute_force(queries, corpus, 12)
    assert found == [[ids[r] for r in row] for row in ref_rows]


def test_store_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    corpus = rng.standard_normal((250, 16), dtype=np.float32)
    ids = write_index(tmp_path, corpus, [100, 100, 50], dtype=np.float32)
    index = open_index(tmp_path)
    assert (index.dim, index.count, index.dtype, len(index.shards)) == (16, 250, np.float32, 3)
    assert read_meta(tmp_path)["model"] == "test"
    assert index.ids() == ids
    chunks = list(index.iter_chunks(64))
    assert [off for off, _ in chunks] == [0, 64, 128, 192]
    assert [c.shape[0] for _, c in chunks] == [64, 64, 64, 58]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), corpus)
    assert index.id_at([[0, 249], [100, -1]]) == [["p0", "p249"], ["p100", None]]
    assert index.id_at(np.int64(150)) == "p150"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    # looked up by id (mining's teacher scores of positives): rows across shards, vectors in the asked order
    assert index.rows_of(["p249", "p3", "p120", "missing"]) == {"p249": 249, "p3": 3, "p120": 120}
    np.testing.assert_array_equal(index.vectors_at([249, 3, 120, 3]), corpus[[249, 3, 120, 3]])


def test_truncated_ids_file_is_named(tmp_path):
    write_index(tmp_path, np.zeros((30, 8), np.float32), [10, 20])
    ids_path = shard_paths(tmp_path, 1)[1]
    ids_path.write_text("".join(f"x{i}\n" for i in range(15)))
    with pytest.raises(InputError, match=r"shard-00001\.ids: 15 ids but shard-00001\.npy has 20 vectors"):
        open_index(tmp_path)


def test_dim_and_dtype_mismatch_name_the_shard(tmp_path):
    write_index(tmp_path, np.zeros((30, 8), np.float32), [10, 20])
    npy_path = shard_paths(tmp_path, 0)[0]
    np.save(npy_path, np.zeros((10, 9), np.float16))
    with pytest.raises(InputError, match=r"shard-00000\.npy: vectors have dim 9 but meta.json says dim 8"):
        open_index(tmp_path)
    np.save(npy_path, np.zeros((10, 8), np.float32))
    with pytest.raises(InputError, match=r"shard-00000\.npy: dtype float32 but meta.json says float16"):
        open_index(tmp_path)


def test_meta_problems_are_clear(tmp_path):
    with pytest.raises(DprJaxError, match="not a dense index"):
        open_index(tmp_path)
    write_index(tmp_path, np.zeros((30, 8), np.float32), [10, 20])
    meta = json.loads((tmp_path / "meta.json").read_text())
    write_meta(tmp_path, **(meta | {"count": 31}))
    with pytest.raises(InputError, match=r"meta.json: field 'count': says 31 passages but the shards hold 30"):
        open_index(tmp_path)
    write_meta(tmp_path, **(meta | {"num_shards": 3}))
    with pytest.raises(InputError, match=r"shard-00002\.ids: missing"):
        open_index(tmp_path)
    write_meta(tmp_path, **meta)
    with pytest.raises(DprJaxError, match="queries have dim 7"):
        exact_search(np.ones((2, 7), np.float32), open_index(tmp_path), 3)


class _IdsThatFailMidway(list):
    """Ids that pass validation (first pass) but break mid-way through the file write (second pass)."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        for i, item in enumerate(list.__iter__(self)):
            if self.passes > 1 and i == 3:
                raise KeyboardInterrupt("simulated crash")
            yield item


def test_interrupted_shard_is_not_done(tmp_path):
    vectors = np.ones((6, 4), np.float32)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path, 0, vectors, _IdsThatFailMidway(f"p{i}" for i in range(6)))
    npy_path, ids_path = shard_paths(tmp_path, 0)
    assert npy_path.exists() and not ids_path.exists()
    assert not shard_done(tmp_path, 0)
    assert not list(tmp_path.glob(".*.tmp"))  # the half-written ids temp file was removed
    # A crash during the vectors write leaves only a temp file: not done either.
    (tmp_path / ".shard-00001.npy.abc.tmp").write_bytes(b"\x93NUMPY partial")
    assert not shard_done(tmp_path, 1)
    write_shard(tmp_path, 0, vectors, [f"p{i}" for i in range(6)])
    assert shard_done(tmp_path, 0)
    assert ids_path.read_text().splitlines() == [f"p{i}" for i in range(6)]


def test_bad_arguments_are_clear():
    queries, corpus = tie_free_data(50, 2)
    with pytest.raises(DprJaxError, match="k must be a positive integer"):
        exact_search(queries, corpus, 0)
    with pytest.raises(DprJaxError, match="NaN"):
        exact_search(np.full((1, DIM), np.nan, np.float32), corpus, 3)
    with pytest.raises(DprJaxError, match=r"expected \[rows, 24\]"):
        exact_search(queries, [corpus[:, :10]], 3)
    with pytest.raises(DprJaxError, match="empty"):
        exact_search(queries, [], 3)
    with pytest.raises(DprJaxError, match="line break"):
        write_shard("/nonexistent-never-written", 0, corpus[:2], ["a", "b\nc"])


# Every character str.splitlines() breaks a line on (the set the old reader split on).
LINE_BREAKERS = [c for c in map(chr, range(0x3000)) if len(f"a{c}b".splitlines()) > 1]


def test_line_breaking_characters_are_the_expected_set():
    assert set(LINE_BREAKERS) == set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    assert not [c for c in map(chr, range(0x3000, 0x110000)) if len(f"a{c}b".splitlines()) > 1]


@pytest.mark.parametrize("char", LINE_BREAKERS, ids=lambda c: f"U+{ord(c):04X}")
def test_ids_with_any_line_breaking_character_are_refused_on_write(tmp_path, char):
    with pytest.raises(DprJaxError, match=rf"U\+{ord(char):04X}"):
        write_shard(tmp_path, 0, np.zeros((3, 4), np.float32), ["a", f"rock{char}ets", "c"])
    assert not shard_done(tmp_path, 0)


def test_ids_file_is_split_on_newline_only(tmp_path):
    # An .ids file as older versions wrote it (they refused only \n and \r): ids holding U+2028,
    # U+2029, U+0085, \x0c and \x1c-\x1e must come back one per line, and later ids must not shift.
    odd = ["rock\u2028ets", "a\u2029b", "c\x85d", "e\x0cf", "g\x1ch", "i\x1dj", "k\x1el", "m\x0bn", "cats"]
    write_index(tmp_path, np.zeros((len(odd) + 1, 4), np.float32), [len(odd) + 1], dtype=np.float32)
    ids_path = shard_paths(tmp_path, 0)[1]
    ids_path.write_text("".join(f"{pid}\n" for pid in ["first", *odd]), encoding="utf-8")
    index = open_index(tmp_path)
    assert index.ids() == ["first", *odd]
    assert index.id_at([[9, 1], [0, 4]]) == [["cats", "rock\u2028ets"], ["first", "e\x0cf"]]


def test_ids_count_check_follows_the_reader(tmp_path):
    # the row-count check and the reader agree: a file with one id too many (split on \n) is refused,
    # whatever other line-like characters the ids hold
    write_index(tmp_path, np.zeros((2, 4), np.float32), [2], dtype=np.float32)
    ids_path = shard_paths(tmp_path, 0)[1]
    ids_path.write_text("a\u2028b\nc\nd\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"shard-00000\.ids: 3 ids but shard-00000\.npy has 2 vectors"):
        open_index(tmp_path)
    ids_path.write_text("a\u2028b\nc\n", encoding="utf-8")
    assert open_index(tmp_path).ids() == ["a\u2028b", "c"]
    ids_path.write_text("a\r\nc\r\n", encoding="utf-8")  # converted to CRLF by some editor
    with pytest.raises(InputError, match=r"shard-00000\.ids:1: .*carriage return"):
        open_index(tmp_path).ids()


# ---------------------------------------------------------------- compressed shards


def reference_int8(x):
    """The documented int8 rule, written out independently: per-dimension scale = max|x| / 127."""
    x = x.astype(np.float64)
    scale = np.abs(x).max(axis=0) / 127
    q = np.clip(np.round(x / np.where(scale > 0, scale, 1)), -127, 127)
    return q.astype(np.int8), scale.astype(np.float32)


def bf16_from_bits(bits):
    """bfloat16 bits -> float32 by the formula the store docstring gives other tools."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
def test_every_dtype_round_trips_against_numpy(tmp_path, dtype):
    rng = np.random.default_rng(11)
    corpus = (rng.standard_normal((250, 16)) * np.linspace(0.1, 3, 16)).astype(np.float32)
    corpus[:, 5] = 0  # an all-zero column: scale 0 for int8
    sizes = [100, 100, 50]
    for no, start in enumerate([0, 100, 200]):
        write_shard(tmp_path, no, corpus[start:start + sizes[no]], [f"p{r}" for r in range(start, start + sizes[no])],
                    dtype=dtype)
    write_meta(tmp_path, model="test", dim=16, dtype=dtype, count=250, num_shards=3)
    index = open_index(tmp_path)
    got = np.concatenate([c for _, c in index.iter_chunks(64)])  # chunks span shard boundaries
    if dtype == "int8":
        want = []
        for no, start in enumerate([0, 100, 200]):
            q, scale = reference_int8(corpus[start:start + sizes[no]])
            np.testing.assert_array_equal(np.load(tmp_path / f"shard-{no:05d}.npy"), q)
            np.testing.assert_array_equal(np.load(tmp_path / f"shard-{no:05d}.scale.npy"), scale)
            want.append(q.astype(np.float32) * scale)
            assert np.all(np.abs(want[-1] - corpus[start:start + sizes[no]]) <= scale / 2 + 1e-7)
        want = np.concatenate(want)
    elif dtype == "bfloat16":
        bits = np.load(tmp_path / "shard-00000.npy")
        assert bits.dtype == np.uint16
        want = np.concatenate([bf16_from_bits(np.load(tmp_path / f"shard-{no:05d}.npy")) for no in range(3)])
        assert np.all(np.abs(want - corpus) <= np.abs(corpus) * 2.0**-8)  # round to nearest, 8 bits
    else:
        want = corpus.astype(dtype)
    assert got.dtype == index.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want)
    np.testing.assert_array_equal(index.vectors_at([249, 0, 120, 120]), want[[249, 0, 120, 120]])
    # exact search over the stored values equals NumPy brute force over the same values
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    scores, rows = exact_search(queries, index, 20, chunk_rows=64)
    full = queries.astype(np.float64) @ want.astype(np.float64).T
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :20], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-5)


def test_int8_shard_without_its_scale_is_named(tmp_path):
    write_shard(tmp_path, 0, np.ones((3, 4), np.float32), ["a", "b", "c"], dtype="int8")
    write_meta(tmp_path, dim=4, dtype="int8", count=3, num_shards=1)
    (tmp_path / "shard-00000.scale.npy").unlink()
    with pytest.raises(InputError, match=r"shard-00000\.scale\.npy: missing"):
        open_index(tmp_path)
    write_shard(tmp_path, 0, np.ones((3, 4), np.float32), ["a", "b", "c"], dtype="bfloat16")
    with pytest.raises(InputError, match=r"dtype uint16 but meta.json says int8"):
        open_index(tmp_path)
    with pytest.raises(DprJaxError, match="NaN"):
        write_shard(tmp_path, 1, np.full((3, 4), np.nan, np.float32), ["a", "b", "c"], dtype="int8")


@pytest.mark.parametrize("use_mesh", [False, True])
def test_approx_max_k_returns_a_valid_top_k(use_mesh):
    # approx_max_k (TPU-optimised; exact TopK on CPU/GPU): whatever it returns must be a valid
    # top-k of the scores it saw: each score is q.p of its row, sorted, rows distinct, and the rows
    # overlap the exact top-k at least as much as the recall target promises.
    rng = np.random.default_rng(12)
    corpus = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((19, 32)).astype(np.float32)
    k, target = 25, 0.9
    scores, rows = exact_search(queries, corpus, k, chunk_rows=512, approx_recall=target, mesh=mesh_or_none(use_mesh))
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    assert rows.shape == (19, k) and rows.min() >= 0 and rows.max() < 3000
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert all(len(set(r)) == k for r in rows.tolist())
    exact = np.argsort(-full, axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(rows.tolist(), exact.tolist())])
    assert recall >= target
    import jax

    if jax.default_backend() == "cpu":  # what the help text says: XLA lowers it to the exact TopK on CPU
        np.testing.assert_array_equal(rows, exact_search(queries, corpus, k, chunk_rows=512)[1])
    with pytest.raises(DprJaxError, match="approx_recall"):
        exact_search(queries, corpus, k, approx_recall=1.0)


def test_truncate_vectors_against_numpy():
    from dpr_jax.index.truncate import truncate_vectors

    x = np.random.default_rng(13).standard_normal((9, 12)).astype(np.float16)
    x[3] = 0
    np.testing.assert_array_equal(truncate_vectors(x, 5, False), x[:, :5])
    assert truncate_vectors(x, 5, False).dtype == np.float16
    got = truncate_vectors(x, 5, True)
    ref = x[:, :5].astype(np.float64)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32 and not np.any(got[3])
    assert truncate_vectors(x, 12, True) is x  # full width: unchanged, not re-normalised
    with pytest.raises(DprJaxError):
        truncate_vectors(x, 13, False)
