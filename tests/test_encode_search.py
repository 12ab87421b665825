"""Offline corpus encoding (sharded, resumable, split across jobs) and dense search, on real weights and text."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dpr_jax.cli import main
from dpr_jax.data.passages import read_passages
from dpr_jax.index.encode import TextEncoder, bucket_length, encode_corpus, parse_shard
from dpr_jax.index.store import open_index
from dpr_jax.mesh import make_mesh
from dpr_jax.models.loading import load_model

N_PASSAGES = 72


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, squad_dev_file):
    """Real SQuAD paragraphs (with titles) and a few questions about them."""
    data = json.loads(squad_dev_file.read_text())["data"]
    d = tmp_path_factory.mktemp("corpus")
    rows, questions = [], []
    for article in data[:6]:
        for i, para in enumerate(article["paragraphs"][:12]):
            pid = f"{article['title']}#{i}"
            rows.append({"id": pid, "title": article["title"].replace("_", " "), "text": para["context"]})
            qa = para["qas"][0]
            questions.append({"id": qa["id"], "question": qa["question"],
                              "answers": [a["text"] for a in qa["answers"]], "positive_ids": [pid]})
    rows = rows[:N_PASSAGES]
    (d / "passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions[:20]))
    return d


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_model(str(minilm_dir))


def _reference_vectors(loaded, passages, max_length):
    """The plain reference: one eager batch in corpus order, all padded to max_length, one device."""
    batch = loaded.tokenizer.passages([p.title for p in passages], [p.text for p in passages], max_length,
                                      pad_to=max_length)
    return np.asarray(loaded.model.encode_passages(batch))


def test_bucket_lengths_cover_the_batch():
    for n in (1, 31, 32, 33, 127, 128, 129, 250):
        assert n <= bucket_length(n, 256) <= max(256, n)
    assert len({bucket_length(n, 512) for n in range(1, 513)}) <= 10


def test_parse_shard_rejects_nonsense():
    from dpr_jax.errors import DprJaxError

    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(DprJaxError):
            parse_shard(bad)


def test_sharded_bucketed_encoding_equals_one_by_one(minilm, corpus):
    passages = list(read_passages(corpus / "passages.jsonl"))[:24]
    ref = _reference_vectors(minilm, passages, 128)
    assert len(jax.devices()) == 8
    for mesh in (make_mesh(1), make_mesh(8)):
        enc = TextEncoder(minilm, batch_size=10, max_length=128, mesh=mesh)
        got = enc.encode_passages([p.title for p in passages], [p.text for p in passages])
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_encode_corpus_shards_resume_and_job_split(minilm, corpus, tmp_path):
    path = corpus / "passages.jsonl"
    passages = list(read_passages(path))
    one = encode_corpus(minilm, path, tmp_path / "one", block_size=32, batch_size=16, max_length=64, progress=False)
    assert one["written"] == [0, 1, 2] and one["meta"]["count"] == N_PASSAGES
    index = open_index(tmp_path / "one")
    assert index.ids() == [p.id for p in passages] and index.dtype == np.float16
    vectors = np.concatenate([c for _, c in index.iter_chunks(1000)]).astype(np.float32)
    np.testing.assert_allclose(vectors, _reference_vectors(minilm, passages, 64), atol=2e-3)

    # a lost shard is re-encoded, finished ones are skipped
    for f in (tmp_path / "one").glob("shard-00001.*"):
        f.unlink()
    again = encode_corpus(minilm, path, tmp_path / "one", block_size=32, batch_size=16, max_length=64, progress=False)
    assert again["written"] == [1] and again["skipped"] == [0, 2]
    np.testing.assert_array_equal(np.concatenate([c for _, c in open_index(tmp_path / "one").iter_chunks(1000)]),
                                  vectors.astype(np.float16))

    # two jobs split the blocks; meta.json appears only when the last one finishes
    kw = dict(block_size=32, batch_size=16, max_length=64, progress=False)
    first = encode_corpus(minilm, path, tmp_path / "two", shard=(1, 2), **kw)
    assert first["written"] == [1] and first["meta"] is None
    second = encode_corpus(minilm, path, tmp_path / "two", shard=(0, 2), **kw)
    assert second["written"] == [0, 2] and second["meta"]["count"] == N_PASSAGES
    assert open_index(tmp_path / "two").ids() == index.ids()

    # resuming with another model setting is refused instead of mixing shards
    from dpr_jax.errors import DprJaxError

    with pytest.raises(DprJaxError, match="other settings"):
        encode_corpus(minilm, path, tmp_path / "one", block_size=32, batch_size=16, max_length=48, progress=False)


def test_encode_killed_then_rerun_completes(corpus, minilm_dir, tmp_path):
    out = tmp_path / "index"
    cmd = [sys.executable, "-m", "dpr_jax", "encode", "--model", str(minilm_dir), "--passages",
           str(corpus / "passages.jsonl"), "--out", str(out), "--block-size", "8", "--batch-size", "8",
           "--max-length", "64"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "shard-00001.ids").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in out.glob("*.ids"))
    assert done_before and not (out / "meta.json").exists()
    assert all(p.name.endswith((".npy", ".ids", ".json")) or p.name.startswith(".") for p in out.iterdir())
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    index = open_index(out)
    assert index.count == N_PASSAGES and index.meta["num_shards"] == N_PASSAGES // 8
    assert not list(out.glob(".*.tmp"))


def test_search_cli_matches_numpy_brute_force(minilm, minilm_dir, corpus, tmp_path):
    index_dir = tmp_path / "idx"
    assert main(["encode", "--model", str(minilm_dir), "--passages", str(corpus / "passages.jsonl"),
                 "--out", str(index_dir), "--block-size", "40", "--dtype", "float32", "--max-length", "128"]) == 0
    run_path = tmp_path / "run.json"
    assert main(["search", "--model", str(minilm_dir), "--index", str(index_dir), "--questions",
                 str(corpus / "questions.jsonl"), "--k", "10", "--out", str(run_path)]) == 0
    run = json.loads(run_path.read_text())
    index = open_index(index_dir)
    corpus_vecs = np.concatenate([c for _, c in index.iter_chunks(1000)])
    ids = index.ids()
    q = TextEncoder(minilm, max_length=64).encode_questions([r["question"] for r in run])
    scores = q @ corpus_vecs.T
    for row, entry in zip(scores, run):
        want = [ids[i] for i in np.argsort(-row, kind="stable")[:10]]
        got = [c["id"] for c in entry["ctxs"]]
        assert got == want
        assert [c["score"] for c in entry["ctxs"]] == sorted((c["score"] for c in entry["ctxs"]), reverse=True)
        assert all(c["text"] and isinstance(c["has_answer"], bool) for c in entry["ctxs"])
    # zero-shot MiniLM finds most gold paragraphs of real questions in this small corpus
    hits = sum(e["positive_ids"][0] in [c["id"] for c in e["ctxs"]] for e in run)
    assert hits >= 0.7 * len(run)


def test_progress_total_counts_passages_not_the_tsv_header(tmp_path, minilm, monkeypatch):
    """A DPR TSV's header line is not a passage: the progress bar's total is the number of passages."""
    import dpr_jax.index.encode as encode_module

    tsv = tmp_path / "psgs.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tfirst passage\tA\n2\tsecond passage\tB\n3\tthird passage\tC\n")
    totals = []
    real_tqdm = encode_module.tqdm

    def recording_tqdm(*args, **kwargs):
        totals.append(kwargs.get("total"))
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(encode_module, "tqdm", recording_tqdm)
    summary = encode_corpus(minilm, tsv, tmp_path / "index", block_size=2, batch_size=4, max_length=16,
                            progress=False)
    assert summary["count"] == 3
    assert totals == [3]


def test_dense_search_reads_each_shard_ids_once(minilm, corpus, tmp_path, monkeypatch):
    # 12 questions over 6 shards: the rows of the whole run are mapped to ids at once, each shard's
    # .ids read once (it used to be re-read per question: 70 reads here, hours at 21M passages).
    from dpr_jax.index import store
    from dpr_jax.index.retrieve import dense_search

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, minilm.model.dim)).astype(np.float32)
    for s in range(6):
        store.write_shard(tmp_path, s, vectors[10 * s: 10 * s + 10], [f"p{r}" for r in range(10 * s, 10 * s + 10)])
    store.write_meta(tmp_path, model="random", dim=minilm.model.dim, dtype="float32", count=60, num_shards=6)
    reads = []
    real_read = store._read_ids
    monkeypatch.setattr(store, "_read_ids", lambda path: reads.append(path.name) or real_read(path))
    questions = [json.loads(line)["question"] for line in (corpus / "questions.jsonl").read_text().splitlines()][:12]
    ids, scores = dense_search(minilm, tmp_path, questions, 10, progress=False)
    assert sorted(reads) == sorted(set(reads)) and len(reads) <= 6
    q = TextEncoder(minilm, max_length=64).encode_questions(questions)
    want = np.argsort(-(q @ vectors.T), axis=1, kind="stable")[:, :10]
    assert ids == [[f"p{r}" for r in row] for row in want]


def test_encode_refuses_a_line_breaking_id_before_encoding(minilm, tmp_path, monkeypatch):
    from dpr_jax.errors import DprJaxError

    path = tmp_path / "passages.jsonl"
    path.write_text(json.dumps({"id": "rock\u2028ets", "title": "", "text": "about rockets"}) + "\n")
    monkeypatch.setattr(TextEncoder, "encode", lambda *a, **k: pytest.fail("encoded before checking the ids"))
    with pytest.raises(DprJaxError, match=r"passages\.jsonl: passage id 'rock\\u2028ets' contains a line break \(U\+2028\)"):
        encode_corpus(minilm, path, tmp_path / "idx", progress=False)


def test_int8_truncated_index_faiss_and_exact_search_cli_end_to_end(minilm, minilm_dir, corpus, tmp_path, capsys):
    # encode --dtype int8 --dim 128, then search: exact (JAX), approx_max_k, and through a faiss
    # index built by `dpr-jax index build`; every run is checked against NumPy and used by evaluate/hybrid.
    pytest.importorskip("faiss")
    from dpr_jax.index.truncate import truncate_vectors

    idx = tmp_path / "idx"
    model, questions = ["--model", str(minilm_dir)], ["--questions", str(corpus / "questions.jsonl")]
    assert main(["encode", *model, "--passages", str(corpus / "passages.jsonl"), "--out", str(idx),
                 "--block-size", "30", "--dtype", "int8", "--dim", "128", "--max-length", "128"]) == 0
    index = open_index(idx)
    assert (index.dim, index.dtype_name, index.meta["model_dim"], index.meta["num_shards"]) == (128, "int8", 384, 3)
    # NumPy reference: all-MiniLM-L6-v2 normalises, so both sides are cut to 128 and re-normalised;
    # passages as stored (int8 codes x the shard's scale)
    full = TextEncoder(minilm, batch_size=128, max_length=128).encode_passages(
        *zip(*[(p.title, p.text) for p in read_passages(corpus / "passages.jsonl")]))
    stored = np.concatenate([c for _, c in index.iter_chunks(1000)])
    assert np.abs(stored - truncate_vectors(full, 128, True)).max() < 0.01
    run_q = [json.loads(line) for line in (corpus / "questions.jsonl").read_text().splitlines()]
    q = truncate_vectors(TextEncoder(minilm, max_length=64).encode_questions([r["question"] for r in run_q]), 128, True)
    ids = index.ids()
    want = [[ids[i] for i in row] for row in np.argsort(-(q @ stored.T), axis=1, kind="stable")[:, :10]]

    def search(out, *extra):
        code = main(["search", *model, "--index", str(idx), *questions, "--k", "10", "--out", str(out), *extra])
        return code, [[c["id"] for c in e["ctxs"]] for e in json.loads(out.read_text())] if code == 0 else None

    assert search(tmp_path / "exact.json") == (0, want)
    assert search(tmp_path / "approx.json", "--approx-recall", "0.9") == (0, want)  # exact TopK on CPU

    assert main(["index", "build", "--index", str(idx), "--type", "ivf-flat", "--nlist", "4"]) == 0
    assert (idx / "ann.faiss").is_file() and json.loads((idx / "ann.json").read_text())["dim"] == 128
    capsys.readouterr()
    assert search(tmp_path / "ann.json", "--nprobe", "4") == (0, want)  # every list probed: exact
    assert "ivf-flat, approximate" in capsys.readouterr().err
    code, got = search(tmp_path / "ann1.json", "--nprobe", "1")
    assert code == 0 and all(len(row) <= 10 for row in got)
    # re-ranked exactly from the int8 shards: the exact run's ids and (float32) scores
    assert search(tmp_path / "rerank.json", "--nprobe", "4", "--rerank", "30") == (0, want)
    for e, r in zip(*(json.loads((tmp_path / n).read_text()) for n in ("exact.json", "rerank.json"))):
        np.testing.assert_allclose([c["score"] for c in r["ctxs"]], [c["score"] for c in e["ctxs"]], rtol=1e-6)
    assert search(tmp_path / "bad.json", "--rerank", "5")[0] == 2
    exact_run, ann_run = (json.loads((tmp_path / n).read_text()) for n in ("exact.json", "ann.json"))
    for e, a in zip(exact_run, ann_run):
        assert [c["id"] for c in a["ctxs"]] == [c["id"] for c in e["ctxs"]]
        np.testing.assert_allclose([c["score"] for c in a["ctxs"]], [c["score"] for c in e["ctxs"]], atol=1e-4)
        assert all(c["text"] and isinstance(c["has_answer"], bool) for c in a["ctxs"])
    assert main(["evaluate", "--run", str(tmp_path / "ann.json"), "--k", "1,10", "--out", str(tmp_path / "m.json")]) == 0
    assert main(["hybrid", "--dense", str(tmp_path / "ann.json"), "--sparse", str(tmp_path / "exact.json"),
                 "--k", "10", "--out", str(tmp_path / "hybrid.json")]) == 0

    # the shards change (here: a shard's modification time) -> the faiss index is refused until rebuilt
    os.utime(idx / "shard-00001.npy", ns=(time.time_ns(), time.time_ns()))
    capsys.readouterr()
    assert search(tmp_path / "stale.json")[0] == 2
    assert "stale" in capsys.readouterr().err and not (tmp_path / "stale.json").exists()
    assert search(tmp_path / "exact2.json", "--exact") == (0, want)


@pytest.mark.parametrize("normalize", [True, False])
def test_search_dim_truncates_a_full_width_index(minilm, corpus, tmp_path, normalize):
    # --dim at search over an index stored at full width: passages are cut (and re-normalised only
    # when meta.json says the model normalises), questions are cut by the model's own rule.
    from dpr_jax.errors import DprJaxError
    from dpr_jax.index import store
    from dpr_jax.index.retrieve import dense_search

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, minilm.model.dim)).astype(np.float32)
    store.write_shard(tmp_path, 0, vectors, [f"p{r}" for r in range(50)])
    store.write_meta(tmp_path, model="random", dim=minilm.model.dim, dtype="float32", count=50, num_shards=1,
                     normalize=normalize)
    questions = [json.loads(line)["question"] for line in (corpus / "questions.jsonl").read_text().splitlines()][:5]
    ids, scores = dense_search(minilm, tmp_path, questions, 8, dim=64, progress=False)
    q = TextEncoder(minilm, max_length=64).encode_questions(questions)[:, :64]
    q /= np.linalg.norm(q, axis=1, keepdims=True)  # all-MiniLM-L6-v2 normalises its vectors
    p = vectors[:, :64] / (np.linalg.norm(vectors[:, :64], axis=1, keepdims=True) if normalize else 1)
    full = q @ p.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :8]
    assert ids == [[f"p{r}" for r in row] for row in want]
    np.testing.assert_allclose(np.stack(scores), np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-5)
    with pytest.raises(DprJaxError, match="--dim must be between 1 and 384"):
        dense_search(minilm, tmp_path, questions, 8, dim=385, progress=False)
