"""The Python API (dpr_jax/api.py): the README walkthrough runs as written, and each function gives
what its command gives (same vectors, same run file, same metrics).

The walkthrough test executes the README's ``## Python API`` code block on the real SQuAD dev set
and all-MiniLM-L6-v2, in a temporary directory, and checks its results against NumPy brute force
and against what the story claims (the model finds gold passages, training lowers the loss).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def walkthrough_code() -> str:
    """The python code block of the README's "Python API" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold exactly one python block (the walkthrough)"
    return blocks[0]


def test_import_dpr_jax_is_cheap_and_exports_the_api():
    code = ("import sys, dpr_jax; assert 'jax' not in sys.modules, 'import dpr_jax imported jax'; "
            "names = [n for n in dpr_jax.__all__ if n != '__version__']; "
            "assert all(callable(getattr(dpr_jax, n)) for n in names); "
            "assert 'jax' not in sys.modules, 'dpr_jax.api imported jax before first use'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    import dpr_jax
    from dpr_jax import api

    assert dpr_jax.load_model is api.load_model and dpr_jax.DprJaxError.__module__ == "dpr_jax.errors"
    with pytest.raises(AttributeError):
        dpr_jax.no_such_function  # noqa: B018


@pytest.mark.slow
def test_readme_walkthrough_runs_and_its_results_hold(squad_dev_file, tmp_path, monkeypatch):
    code = walkthrough_code()
    line = 'SQUAD_DEV = "../shared/data/squad/dev-v1.1.json"'
    assert code.count(line) == 1
    code = code.replace(line, f"SQUAD_DEV = {str(squad_dev_file)!r}")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "walkthrough"}
    exec(compile(code, "README.md (Python API walkthrough)", "exec"), ns)

    passages, questions, Q = ns["passages"], ns["questions"], ns["Q"]
    assert (len(passages), len(questions)) == (70, 79)  # the numbers the README states
    # index.search == NumPy brute force over the same vectors
    P = ns["model"].encode_passages(passages)
    brute = np.argsort(-(Q @ P.T), axis=1, kind="stable")[:, :5]
    scores, ids = ns["scores"], ns["ids"]
    np.testing.assert_allclose(scores, np.take_along_axis(Q @ P.T, brute, axis=1), atol=1e-5)
    assert ids == [[passages[j].id for j in row] for row in brute]
    # the run file is the returned run; the metrics are the command's
    run_json = json.loads((tmp_path / "walkthrough/dense.json").read_text())
    assert [[c["id"] for c in e["ctxs"]] for e in run_json] == [[h.id for h in e.hits] for e in ns["run"]]
    assert [r[:5] for r in (h for h in ([c["id"] for c in e["ctxs"]] for e in run_json))] == ids
    metrics = ns["metrics"]
    assert metrics["num_questions"] == 79
    assert metrics["top_k_accuracy"]["20"] >= 0.95 and metrics["top_k_accuracy"]["1"] >= 0.6
    assert metrics["recall"]["20"] >= 0.95
    assert ns["hnsw"].kind == "hnsw"
    # training lowered the loss, the run directory loads as a model and its index searches
    assert ns["result"].final_step == 12 and ns["losses"][-1] < ns["losses"][0]
    assert ns["tiny"].dim == 64
    assert ns["tiny_metrics"]["num_questions"] == 79
    assert (tmp_path / "walkthrough/training.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- API == CLI


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """Ten SQuAD-like passages and four questions with answers and positive ids."""
    d = tmp_path_factory.mktemp("api")
    texts = [
        ("Geology", "Geology is an earth science concerned with the solid Earth and the rocks of which it is composed."),
        ("Steam engine", "A steam engine is a heat engine that performs mechanical work using steam as its working fluid."),
        ("Apollo program", "The Apollo program landed the first humans on the Moon in 1969."),
        ("Genghis Khan", "Genghis Khan was the founder and first Great Khan of the Mongol Empire."),
        ("Harvard University", "Harvard University is a private research university in Cambridge, Massachusetts."),
        ("Rhine", "The Rhine is a European river that begins in the Swiss canton of Graubunden."),
        ("Oxygen", "Oxygen is a chemical element with symbol O and atomic number 8."),
        ("Warsaw", "Warsaw is the capital and largest city of Poland."),
        ("Kenya", "Kenya is a country in Africa with its capital and largest city in Nairobi."),
        ("", "Prime numbers are natural numbers greater than 1 that are not products of two smaller numbers."),
    ]
    with open(d / "passages.jsonl", "w") as f:
        for i, (title, text) in enumerate(texts):
            f.write(json.dumps({"id": f"p{i}", "title": title, "text": text}) + "\n")
    qs = [("q0", "What is the capital of Poland?", ["Warsaw"], ["p7"]),
          ("q1", "When did humans first land on the Moon?", ["1969"], ["p2"]),
          ("q2", "What is the atomic number of oxygen?", ["8"], ["p6"]),
          ("q3", "Who founded the Mongol Empire?", ["Genghis Khan"], ["p3"])]
    with open(d / "questions.jsonl", "w") as f:
        for qid, q, answers, pos in qs:
            f.write(json.dumps({"id": qid, "question": q, "answers": answers, "positive_ids": pos}) + "\n")
    return d


@pytest.fixture(scope="module")
def model():
    import dpr_jax

    return dpr_jax.load_model(MODEL, batch_size=4)


def _cli(*argv):
    from dpr_jax.cli import main

    assert main(list(argv)) == 0


def test_encode_corpus_equals_the_command_and_encode_passages(model, small_corpus, tmp_path):
    import dpr_jax

    _cli("encode", "--model", MODEL, "--passages", str(small_corpus / "passages.jsonl"), "--out",
         str(tmp_path / "cli"), "--dtype", "float32", "--batch-size", "4", "--offline")
    dpr_jax.encode_corpus(model, small_corpus / "passages.jsonl", tmp_path / "api", dtype="float32", progress=False)
    cli, api = dpr_jax.open_index(tmp_path / "cli"), dpr_jax.open_index(tmp_path / "api")
    assert cli.ids() == api.ids() == [f"p{i}" for i in range(10)]
    np.testing.assert_array_equal(cli.vectors(), api.vectors())
    # the in-memory encoder gives the index's vectors (same bucketing, same segment ids)
    passages = dpr_jax.read_passages(small_corpus / "passages.jsonl")
    np.testing.assert_allclose(model.encode_passages(passages), api.vectors(), atol=2e-6)
    as_dicts = [{"title": p.title, "text": p.text} for p in passages]
    np.testing.assert_allclose(model.encode_passages(as_dicts), api.vectors(), atol=2e-6)
    assert model.encode_passages(passages[:1]).dtype == np.float32


def test_search_and_evaluate_equal_the_commands(model, small_corpus, tmp_path):
    import dpr_jax

    index = tmp_path / "index"
    dpr_jax.encode_corpus(model, small_corpus / "passages.jsonl", index, progress=False)
    questions = small_corpus / "questions.jsonl"
    _cli("search", "--model", MODEL, "--index", str(index), "--questions", str(questions), "--k", "3",
         "--batch-size", "4", "--out", str(tmp_path / "cli.json"), "--offline")
    run = dpr_jax.search(model, index, questions, k=3, out=tmp_path / "api.json", progress=False)
    assert (tmp_path / "api.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert [h.id for h in run[0].hits][0] == "p7" and run[0].hits[0].has_answer is True
    # TREC output too
    _cli("search", "--model", MODEL, "--index", str(index), "--questions", str(questions), "--k", "3",
         "--batch-size", "4", "--out", str(tmp_path / "cli.trec"), "--trec", "--offline")
    dpr_jax.search(model, index, questions, k=3, out=tmp_path / "api.trec", trec=True, progress=False)
    assert (tmp_path / "api.trec").read_text() == (tmp_path / "cli.trec").read_text()

    _cli("evaluate", "--run", str(tmp_path / "cli.json"), "--k", "1,3", "--measures", "nDCG@10,MAP",
         "--out", str(tmp_path / "cli-metrics.json"))
    from_file = dpr_jax.evaluate(tmp_path / "api.json", ks=[1, 3], measures="nDCG@10,MAP")
    from_run = dpr_jax.evaluate(run, ks=[1, 3], measures=["nDCG@10", "MAP"])
    written = json.loads((tmp_path / "cli-metrics.json").read_text())
    assert {k: v for k, v in written.items() if k not in ("run", "match")} == from_file == from_run
    assert from_run["top_k_accuracy"]["1"] == 1.0


def test_open_index_search_equals_brute_force_exact_and_faiss(model, small_corpus, tmp_path):
    import dpr_jax

    index_dir = tmp_path / "index"
    dpr_jax.encode_corpus(model, small_corpus / "passages.jsonl", index_dir, dtype="float32", progress=False)
    index = dpr_jax.open_index(index_dir)
    assert index.kind == "exact" and (index.count, index.dim) == (10, 384)
    Q = model.encode_questions([q.question for q in dpr_jax.read_questions(small_corpus / "questions.jsonl")])
    S = Q @ index.vectors().T
    order = np.argsort(-S, axis=1, kind="stable")[:, :4]
    scores, ids = index.search(Q, 4)
    np.testing.assert_allclose(scores, np.take_along_axis(S, order, axis=1), atol=1e-5)
    assert ids == [[f"p{j}" for j in row] for row in order]
    one_scores, one_ids = index.search(Q[0], 20)  # a single vector; k past the corpus gives the corpus
    assert one_scores.shape == (1, 10) and one_ids[0][:4] == ids[0]

    desc = dpr_jax.build_index(index_dir, "ivf-flat", nlist=2, nprobe=2, progress=False)
    assert desc["count"] == 10
    ivf = dpr_jax.open_index(index_dir)
    assert ivf.kind == "ivf-flat"
    f_scores, f_ids = ivf.search(Q, 4)  # nprobe = nlist: IVF-Flat is exact
    assert f_ids == ids
    np.testing.assert_allclose(f_scores, scores, atol=1e-5)
    assert dpr_jax.open_index(index_dir, exact=True).kind == "exact"


def test_plot_embeddings_draws_the_models_vectors(model, small_corpus, tmp_path):
    import dpr_jax

    fig = dpr_jax.plot_embeddings(model, small_corpus / "questions.jsonl", small_corpus / "passages.jsonl",
                                  tmp_path / "e.png", others=3)
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert {"other passages (3)", "positive passages (4)", "questions (4)"} <= labels


def test_user_mistakes_raise_dpr_jax_error(model, small_corpus, tmp_path):
    import dpr_jax

    with pytest.raises(dpr_jax.DprJaxError, match="model .*does not exist|not found|no model"):
        dpr_jax.load_model(str(tmp_path / "missing") + "/")
    with pytest.raises(dpr_jax.DprJaxError, match="questions must be strings"):
        model.encode_questions([1, 2])
    with pytest.raises(dpr_jax.DprJaxError, match="passages: item 0"):
        model.encode_passages([{"title": "x"}])
    with pytest.raises(dpr_jax.DprJaxError, match="k must be a positive integer"):
        dpr_jax.search(model, tmp_path, ["q"], k=0)
    with pytest.raises(dpr_jax.DprJaxError, match="no config file 'nosuch'"):
        dpr_jax.train_model("nosuch", tmp_path / "run")
    with pytest.raises(dpr_jax.DprJaxError, match="config train.nosuch|nosuch"):
        dpr_jax.train_model("tiny", tmp_path / "run", overrides={"train.nosuch": 1})
    index_dir = tmp_path / "index"
    dpr_jax.encode_corpus(model, small_corpus / "passages.jsonl", index_dir, progress=False)
    with pytest.raises(dpr_jax.DprJaxError, match="compares 384-d"):
        dpr_jax.open_index(index_dir).search(np.zeros((2, 3)), 1)
    with pytest.raises(dpr_jax.DprJaxError, match="apply to a faiss index"):
        dpr_jax.open_index(index_dir, nprobe=4)
