"""Concatenated dense + lexical models (SPAR): scores, the model format, encode/search/export, w tuning.

Two small random-init dual encoders with all-MiniLM-L6-v2's vocabulary play the dense and the lexical
part; every check compares against NumPy on the parts' own vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dpr_jax.cli import main
from dpr_jax.errors import DprJaxError

WEIGHT = 0.7


def _random(minilm_dir, hidden: int, layers: int, seed: int, shared: bool):
    from dpr_jax.models.config import BertConfig, EncoderConfig
    from dpr_jax.models.loading import init_random_model
    from dpr_jax.models.tokenizer import TextTokenizer

    tok = TextTokenizer.from_dir(minilm_dir)
    bert = BertConfig(vocab_size=len(tok.hf), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=128)
    return init_random_model(bert, EncoderConfig(pooling="mean", normalize=True), tok, shared=shared, seed=seed,
                             source=f"random-{seed}")


@pytest.fixture(scope="module")
def parts(minilm_dir, tmp_path_factory):
    """A dense (two towers, 1 layer) and a lexical (shared, bag of embeddings) model, exported as HF dirs."""
    from dpr_jax.models.export import export_model

    d = tmp_path_factory.mktemp("parts")
    dense, lexical = _random(minilm_dir, 32, 1, 1, False), _random(minilm_dir, 24, 0, 2, True)
    export_model(dense, d / "dense")
    export_model(lexical, d / "lexical")
    return d / "dense", d / "lexical"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ("river mountain castle engine violin harbor garden planet winter market bridge forest desert island "
             "temple museum signal copper silver glacier canyon orchard theater library").split()
    d = tmp_path_factory.mktemp("corpus")
    passages = [{"id": f"p{i}", "title": f"T{i}", "text": " ".join(rng.choice(words, 20))} for i in range(60)]
    questions = [{"id": f"q{i}", "question": " ".join(rng.choice(passages[i % 60]["text"].split(), 4)),
                  "answers": [passages[i % 60]["text"].split()[0]], "positive_ids": [f"p{i % 60}"]} for i in range(40)]
    for name, rows in (("passages.jsonl", passages), ("questions.jsonl", questions)):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "passages.jsonl", d / "questions.jsonl"


def _encode(loaded, corpus):
    from dpr_jax.data.passages import read_passages
    from dpr_jax.data.questions import read_questions
    from dpr_jax.index.encode import TextEncoder

    enc = TextEncoder(loaded, batch_size=16, max_length=64)
    ps = list(read_passages(corpus[0]))
    qs = read_questions(corpus[1])
    return enc.encode_questions([q.question for q in qs]), enc.encode_passages([p.title for p in ps],
                                                                               [p.text for p in ps])


def test_concatenated_scores_are_dense_plus_w_lexical(parts, corpus, tmp_path):
    from dpr_jax.models.concat import write_concat
    from dpr_jax.models.loading import LoadedConcat, load_model

    write_concat(tmp_path / "c", str(parts[0]), str(parts[1]), WEIGHT)
    loaded = load_model(str(tmp_path / "c"))
    assert isinstance(loaded, LoadedConcat) and loaded.model.dim == 32 + 24 and loaded.weight == WEIGHT
    qc, pc = _encode(loaded, corpus)
    qd, pd = _encode(load_model(str(parts[0])), corpus)
    ql, pl = _encode(load_model(str(parts[1])), corpus)
    np.testing.assert_allclose(qc @ pc.T, qd @ pd.T + WEIGHT * (ql @ pl.T), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pc, np.concatenate([pd, pl], axis=1), rtol=1e-5, atol=1e-6)
    # the passage side does not depend on w: an index serves every weight
    write_concat(tmp_path / "c2", str(parts[0]), str(parts[1]), 3.0)
    qc2, pc2 = _encode(load_model(str(tmp_path / "c2")), corpus)
    np.testing.assert_array_equal(pc2, pc)
    np.testing.assert_allclose(qc2[:, 32:], 3.0 * ql, rtol=1e-5, atol=1e-6)


def test_encode_search_export_round_trip(parts, corpus, tmp_path):
    from dpr_jax.index.runs import read_run
    from dpr_jax.index.store import open_index, read_meta
    from dpr_jax.models.concat import CONCAT_FILE, write_concat
    from dpr_jax.models.loading import LoadedConcat, load_model

    cdir = tmp_path / "concat"
    write_concat(cdir, str(parts[0]), str(parts[1]), WEIGHT)
    index = tmp_path / "index"
    assert main(["encode", "--model", str(cdir), "--passages", str(corpus[0]), "--out", str(index),
                 "--dtype", "float32", "--max-length", "64"]) == 0
    meta = read_meta(index)
    assert meta["dim"] == 56 and meta["concat"]["weight"] == WEIGHT
    run = tmp_path / "run.json"
    assert main(["search", "--model", str(cdir), "--index", str(index), "--questions", str(corpus[1]),
                 "--k", "5", "--out", str(run), "--max-length", "64"]) == 0
    # the ranking is the NumPy ranking of dense + w * lexical
    qd, pd = _encode(load_model(str(parts[0])), corpus)
    ql, pl = _encode(load_model(str(parts[1])), corpus)
    scores = qd @ pd.T + WEIGHT * (ql @ pl.T)
    ids = open_index(index).ids()
    entries = read_run(run)
    for e, row in zip(entries, scores):
        np.testing.assert_allclose([h.score for h in e.hits], np.sort(row)[::-1][:5], rtol=1e-4, atol=1e-5)
        assert [h.id for h in e.hits][0] == ids[int(np.argmax(row))]
    assert main(["evaluate", "--run", str(run)]) == 0

    exported = tmp_path / "export"
    assert main(["export", "--model", str(cdir), "--out", str(exported)]) == 0
    desc = json.loads((exported / CONCAT_FILE).read_text())
    assert desc["dense"] == "dense" and desc["lexical"] == "lexical" and desc["weight"] == WEIGHT
    assert (exported / "dense" / "question_encoder" / "model.safetensors").exists()  # two towers
    assert (exported / "lexical" / "model.safetensors").exists()  # shared
    again = load_model(str(exported))
    assert isinstance(again, LoadedConcat)
    qe, pe = _encode(again, corpus)
    np.testing.assert_allclose(qe @ pe.T, scores, rtol=1e-5, atol=1e-5)


def test_parts_with_different_tokenizers_are_refused(parts, tmp_path, minilm_dir):
    import shutil

    from dpr_jax.models.concat import write_concat
    from dpr_jax.models.loading import load_model

    other = tmp_path / "cased"
    shutil.copytree(parts[1], other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["river"], vocab["castle"] = vocab["castle"], vocab["river"]  # another vocabulary: same words, other ids
    (other / "tokenizer.json").write_text(json.dumps(spec))
    from dpr_jax.models.tokenizer import TextTokenizer

    ids = lambda d: TextTokenizer.from_dir(d).questions(["river castle"], 8)["input_ids"].tolist()  # noqa: E731
    assert ids(other) != ids(parts[1])  # the edit is real
    write_concat(tmp_path / "c", str(parts[0]), str(other), 1.0)
    with pytest.raises(DprJaxError, match="tokenize text differently"):
        load_model(str(tmp_path / "c"))


def test_bad_concat_files_and_options_are_clear_errors(parts, tmp_path):
    from dpr_jax.models.concat import CONCAT_FILE, write_concat
    from dpr_jax.models.loading import load_model

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONCAT_FILE).write_text(json.dumps({"format": "dpr-jax-concat", "dense": "d",
                                                            "lexical": "l", "weight": -1}))
    with pytest.raises(DprJaxError, match="weight"):
        load_model(str(tmp_path / "bad"))
    write_concat(tmp_path / "c", str(parts[0]), str(parts[1]), 1.0)
    with pytest.raises(DprJaxError, match="pooling apply to one model"):
        load_model(str(tmp_path / "c"), pooling="cls")


def test_weight_sweep_equals_rankings_of_the_summed_scores(parts, corpus):
    from dpr_jax.data.passages import read_passages
    from dpr_jax.data.questions import read_questions
    from dpr_jax.eval.metrics import evaluate_run
    from dpr_jax.index.runs import Hit, RunEntry
    from dpr_jax.index.weight_sweep import best_weight, sweep
    from dpr_jax.models.loading import load_model

    qd, pd = _encode(load_model(str(parts[0])), corpus)
    ql, pl = _encode(load_model(str(parts[1])), corpus)
    passages = {p.id: p for p in read_passages(corpus[0])}
    ids, questions = list(passages), read_questions(corpus[1])
    results = sweep(qd, ql, pd, pl, ids, questions, passages, (0.0, 0.5, 2.0), k=10, ks=(1, 5), chunk=7)
    for r in results:
        scores = qd @ pd.T + r["weight"] * (ql @ pl.T)
        entries = [RunEntry(q, [Hit(ids[j], float(row[j]), text=passages[ids[j]].text)
                                for j in np.argsort(-row, kind="stable")[:10]]) for q, row in zip(questions, scores)]
        expected = evaluate_run(entries, ks=(1, 5))
        assert r["top_k_accuracy"] == expected["top_k_accuracy"]
        assert r["mrr@10"] == pytest.approx(expected["mrr@10"])
    assert best_weight(results, "mrr@10")["mrr@10"] == max(r["mrr@10"] for r in results)


def test_concat_cli_tunes_w_on_dev_questions_and_writes_it(parts, corpus, tmp_path, capsys):
    from dpr_jax.models.concat import CONCAT_FILE
    from dpr_jax.models.loading import load_model

    out = tmp_path / "tuned"
    assert main(["concat", "--dense", str(parts[0]), "--lexical", str(parts[1]), "--out", str(out),
                 "--questions", str(corpus[1]), "--passages", str(corpus[0]), "--weights", "0,0.5,1,4",
                 "--metric", "top1", "--passage-max-length", "64"]) == 0
    desc = json.loads((out / CONCAT_FILE).read_text())
    sweep = desc["tuned"]["sweep"]
    assert [r["weight"] for r in sweep] == [0, 0.5, 1, 4]
    best = max(sweep, key=lambda r: (r["top_k_accuracy"]["1"], -r["weight"]))
    assert desc["weight"] == best["weight"]
    assert load_model(str(out)).weight == best["weight"]
    assert "w = 0.5" in capsys.readouterr().out
    assert main(["concat", "--dense", str(parts[0]), "--lexical", str(parts[1]), "--out", str(out),
                 "--weight", "1"]) == 2  # exists: needs --overwrite


def test_training_from_a_concatenated_model_is_refused(parts, tmp_path, minilm_dir):
    from dpr_jax.models.concat import write_concat
    from dpr_jax.train.config import load_config
    from dpr_jax.train.setup import build_model

    write_concat(tmp_path / "c", str(parts[0]), str(parts[1]), 1.0)
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "squad.py",
                         [f"--config.model.name={tmp_path / 'c'}"])
    with pytest.raises(DprJaxError, match="concatenated model"):
        build_model(config)
