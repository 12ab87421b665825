"""Hard-negative mining rules and teacher scores, and the bm25 -> evaluate -> hybrid -> mine commands end to
end on real SQuAD paragraphs."""

import json

import pytest

from dpr_jax.cli import main
from dpr_jax.data.negatives import mine_hard_negatives
from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.errors import DprJaxError


def test_mining_excludes_positives_duplicates_and_answer_passages():
    pos = Passage("p1", "Denver Broncos beat the Carolina Panthers 24-10.", "Super Bowl 50")
    passages = {
        "p1": pos,
        "p2": Passage("p2", "The game was played in Santa Clara."),
        "p3": Passage("p3", " Denver Broncos beat the Carolina\nPanthers 24-10. ", "copy"),  # same text, other id
        "p4": Passage("p4", "The denver broncos won their third title."),  # contains the answer
        "p5": Passage("p5", "Levi's Stadium hosted it."),
        "p6": Passage("p6", "Beyonce performed at halftime."),
        "p7": Passage("p7", "Broncos fans in Denver celebrated."),  # has both words, not the phrase
        "p8": Passage("p8", "Coldplay headlined the show."),
    }
    rec = TrainRecord(question="Who won Super Bowl 50?", answers=("Denver Broncos",), positives=(pos,),
                      hard_negatives=(Passage("old", "an old negative"),), source="train.jsonl:1")
    ranking = ["p4", "p1", "p2", "p3", "p2", "p5", "p7", "p6", "p8"]
    (out,) = mine_hard_negatives([rec], [ranking], passages, num=4)
    assert [p.id for p in out.hard_negatives] == ["p2", "p5", "p7", "p6"]
    assert (out.question, out.answers, out.positives, out.source) == (rec.question, rec.answers, rec.positives,
                                                                       rec.source)
    (few,) = mine_hard_negatives([rec], [ranking[:4]], passages, num=4)  # ranking runs out
    assert [p.id for p in few.hard_negatives] == ["p2"]
    (regex,) = mine_hard_negatives([rec], [ranking], passages, num=2, match="regex")
    assert "p4" not in [p.id for p in regex.hard_negatives]  # regex answers are case-insensitive too
    with pytest.raises(DprJaxError, match="'zz'"):
        mine_hard_negatives([rec], [["zz"]], passages, num=1)


def test_mined_negatives_never_hold_an_answer_or_any_gold_passage_and_carry_their_scores():
    """Every positive of a record counts, by id and by text up to NFKC, case and whitespace."""
    gold1 = Passage("g1", "Paris is the capital of France.", "Paris")
    gold2 = Passage("g2", "The capital of France, Paris, has 2.1 million inhabitants.", "Paris")
    passages = {
        "g1": gold1, "g2": gold2,
        "c1": Passage("c1", "THE CAPITAL OF FRANCE,  Paris, has 2.1 million\ninhabitants.", "copy"),  # gold2, cased
        "c2": Passage("c2", "Paris is the capital of France\uff0e"),  # gold1 with a full-width period (NFKC)
        "a1": Passage("a1", "Lyon is smaller than paris."),  # holds the answer
        "n1": Passage("n1", "Lyon is the third largest city."),
        "n2": Passage("n2", "Marseille is a port."),
    }
    rec = TrainRecord(question="What is the capital of France?", answers=("Paris",), positives=(gold1, gold2),
                      hard_negatives=(Passage("old", "an old negative"),), hard_negative_scores=(3.0,))
    ranking = ["g2", "c1", "a1", "c2", "n1", "g1", "n2"]
    (out,) = mine_hard_negatives([rec], [ranking], passages, num=5, ranked_scores_per_record=[[7, 6, 5, 4, 3, 2, 1]])
    assert [p.id for p in out.hard_negatives] == ["n1", "n2"]
    assert out.hard_negative_scores == (3.0, 1.0)
    (plain,) = mine_hard_negatives([rec], [ranking], passages, num=5)  # no scores given: none kept
    assert plain.hard_negative_scores == () and plain.hard_negatives == out.hard_negatives


def test_record_without_positive_ids_uses_text_only():
    pos = Passage("", "Paris is the capital of France.")
    rec = TrainRecord(question="Capital of France?", answers=("Paris",), positives=(pos,))
    passages = {"a": Passage("a", "Paris is the capital of France."), "b": Passage("b", "Lyon is a city."),
                "": Passage("", "Berlin is in Germany.")}
    (out,) = mine_hard_negatives([rec], [["a", "", "b"]], passages, num=3)
    assert [p.id for p in out.hard_negatives] == ["", "b"]


# ---- commands end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squad_files(squad_dev_file, tmp_path_factory):
    """40 real SQuAD dev paragraphs as passages.jsonl; their first questions as questions.jsonl
    (positive = the paragraph) and as a DPR training file."""
    data = json.loads(squad_dev_file.read_text())["data"]
    d = tmp_path_factory.mktemp("squad")
    passages, questions, train = [], [], []
    for article in data[:5]:
        for j, para in enumerate(article["paragraphs"][:8]):
            pid = f"{article['title']}-{j}"
            passages.append({"id": pid, "title": article["title"].replace("_", " "), "text": para["context"]})
            qa = para["qas"][0]
            answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
            questions.append({"id": qa["id"], "question": qa["question"], "answers": answers, "positive_ids": [pid]})
            train.append({"question": qa["question"], "answers": answers,
                          "positive_ctxs": [{"passage_id": pid, "title": passages[-1]["title"],
                                             "text": para["context"]}],
                          "negative_ctxs": [], "hard_negative_ctxs": []})
    for name, rows in (("passages.jsonl", passages), ("questions.jsonl", questions), ("train.jsonl", train)):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, passages, questions


def test_bm25_evaluate_hybrid_commands(squad_files, capsys):
    import bm25s
    import Stemmer

    from dpr_jax.eval.has_answer import has_answer

    d, passages, questions = squad_files
    assert main(["bm25", "--passages", str(d / "passages.jsonl"), "--questions", str(d / "questions.jsonl"),
                 "--k", "20", "--out", str(d / "bm25.json")]) == 0
    assert (d / "passages.jsonl.bm25" / "meta.json").is_file()
    assert main(["bm25", "--passages", str(d / "passages.jsonl"), "--questions", str(d / "questions.jsonl"),
                 "--k", "20", "--out", str(d / "bm25.trec"), "--trec"]) == 0
    assert main(["evaluate", "--run", str(d / "bm25.json"), "--k", "1,5,20", "--out", str(d / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "| bm25.json |" in table and "Top-20" in table
    metrics = json.loads((d / "m.json").read_text())

    # independent reference: bm25s directly, then DPR matching and the rank of the question's paragraph
    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    ref.index(bm25s.tokenize([f"{p['title']} {p['text']}" for p in passages], stopwords="en", stemmer=stemmer,
                             show_progress=False), show_progress=False)
    docs, scores = ref.retrieve(bm25s.tokenize([q["question"] for q in questions], stopwords="en",
                                               stemmer=stemmer, show_progress=False), k=20, show_progress=False)
    first_answer, first_positive = [], []
    for q, row, sc in zip(questions, docs, scores):
        hits = [passages[j] for j, s in zip(row, sc) if s > 0]
        first_answer.append(next((r for r, p in enumerate(hits, 1) if has_answer(q["answers"], p["text"])), 99))
        first_positive.append(next((r for r, p in enumerate(hits, 1) if p["id"] == q["positive_ids"][0]), 99))
    for k in (1, 5, 20):
        assert metrics["top_k_accuracy"][str(k)] == pytest.approx(sum(r <= k for r in first_answer) / len(questions))
        assert metrics["recall"][str(k)] == pytest.approx(sum(r <= k for r in first_positive) / len(questions))
    assert metrics["mrr@10"] == pytest.approx(sum(1 / r for r in first_positive if r <= 10) / len(questions))
    assert metrics["top_k_accuracy"]["20"] > 0.7  # BM25 is strong on SQuAD

    # a TREC run needs questions and passages; with them it evaluates the same
    assert main(["evaluate", "--run", str(d / "bm25.trec"), "--questions", str(d / "questions.jsonl")]) == 2
    assert "--passages" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(d / "bm25.trec"), "--questions", str(d / "questions.jsonl"),
                 "--passages", str(d / "passages.jsonl"), "--k", "1,5,20", "--out", str(d / "m2.json")]) == 0
    m2 = json.loads((d / "m2.json").read_text())
    assert m2["top_k_accuracy"] == metrics["top_k_accuracy"] and m2["mrr@10"] == metrics["mrr@10"]

    # fusing a run with itself (normalised, alpha=1) keeps its ranking
    assert main(["hybrid", "--dense", str(d / "bm25.json"), "--sparse", str(d / "bm25.trec"), "--questions",
                 str(d / "questions.jsonl"), "--alpha", "1", "--k", "20", "--out", str(d / "hyb.json")]) == 0
    bm25_run = json.loads((d / "bm25.json").read_text())
    hyb_run = json.loads((d / "hyb.json").read_text())
    assert [[c["id"] for c in e["ctxs"]] for e in hyb_run] == [[c["id"] for c in e["ctxs"]] for e in bm25_run]
    assert [e["answers"] for e in hyb_run] == [q["answers"] for q in questions]
    assert all(c["text"] for e in hyb_run for c in e["ctxs"])


def test_mine_command_bm25(squad_files, capsys):
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.eval.has_answer import has_answer
    from dpr_jax.index.bm25 import open_or_build

    d, passages, questions = squad_files
    assert main(["mine", "--passages", str(d / "passages.jsonl"), "--train", str(d / "train.jsonl"),
                 "--out", str(d / "train.mined.jsonl"), "--method", "bm25", "--num", "3", "--depth", "20"]) == 0
    records, problems = read_training_records(d / "train.mined.jsonl")
    assert not problems and len(records) == len(questions)
    ids, scores = open_or_build(d / "passages.jsonl", show_progress=False).search(
        [q["question"] for q in questions], 20, show_progress=False)
    texts = {p["id"]: p["text"] for p in passages}
    for rec, q, row, sc in zip(records, questions, ids, scores):
        eligible = [pid for pid, s in zip(row, sc)
                    if s > 0 and pid != q["positive_ids"][0] and not has_answer(q["answers"], texts[pid])]
        assert [p.id for p in rec.hard_negatives] == eligible[:3]
        assert all(p.text == texts[p.id] for p in rec.hard_negatives)
    assert sum(len(r.hard_negatives) == 3 for r in records) > len(records) // 2
    assert main(["mine", "--passages", str(d / "passages.jsonl"), "--train", str(d / "train.jsonl"),
                 "--out", str(d / "x.jsonl"), "--method", "dense"]) == 2
    assert "--model" in capsys.readouterr().err


def _train_with_outsiders(d, tmp_path):
    """The fixture's training file plus a record whose positive is not in the corpus (no BM25 score for it)."""
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    rows.append({"question": "Which team won Super Bowl 50?", "answers": ["Denver Broncos"],
                 "positive_ctxs": [{"passage_id": "outside-1", "title": "Super Bowl 50",
                                    "text": "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50."}]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mine_command_bm25_writes_teacher_scores(squad_files, tmp_path, capsys):
    """Negatives carry their BM25 score; positives too, even outside the top --depth, as bm25s scores them."""
    import bm25s
    import Stemmer

    from dpr_jax.data.batches import BatchSpec, TrainBatches
    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.index.bm25 import open_or_build

    d, passages, questions = squad_files
    train = _train_with_outsiders(d, tmp_path)
    out = tmp_path / "mined.jsonl"
    assert main(["mine", "--passages", str(d / "passages.jsonl"), "--train", str(train), "--out", str(out),
                 "--method", "bm25", "--num", "2", "--depth", "3"]) == 0
    assert "1 positives without a score: not in the corpus by id" in capsys.readouterr().err
    records, _ = read_training_records(out)
    ids, scores = open_or_build(d / "passages.jsonl", show_progress=False).search([r.question for r in records], 3,
                                                                              show_progress=False)
    ranked = [dict(zip(row, map(float, sc))) for row, sc in zip(ids, scores)]
    for rec, at in zip(records, ranked):
        assert rec.hard_negative_scores == tuple(at[p.id] for p in rec.hard_negatives)

    # positives: an independent bm25s index of the same corpus and settings scores every passage
    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    ref.index(bm25s.tokenize([f"{p['title']} {p['text']}" for p in passages], stopwords="en", stemmer=stemmer,
                             show_progress=False), show_progress=False)
    row_of = {p["id"]: i for i, p in enumerate(passages)}
    outside_top = 0
    for rec, at in zip(records[:-1], ranked):
        tokens = bm25s.tokenize([rec.question], stopwords="en", stemmer=stemmer, show_progress=False,
                                return_ids=False)[0]
        expected = float(ref.get_scores(tokens)[row_of[rec.positives[0].id]])
        assert rec.positive_scores == (pytest.approx(expected, rel=1e-5, abs=1e-6),)
        outside_top += rec.positives[0].id not in at
    assert outside_top >= 3  # the rule for positives the ranking did not reach was exercised
    assert records[-1].positive_scores == ()  # not in the corpus: no BM25 score
    # the mined file is distillation-ready but for that record, which train refuses by name
    stats = TrainBatches(records, None, BatchSpec(global_batch_size=8, hard_negatives=2)).stats
    assert (stats.no_positive_score, stats.first_no_positive_score) == (1, records[-1].source)


def test_mine_command_dense(squad_files, minilm_dir, tmp_path):
    """ANCE-style mining from a dense index: the top dense passages that are neither positive nor answer-bearing."""
    import numpy as np

    from dpr_jax.data.training_data import read_training_records
    from dpr_jax.eval.has_answer import has_answer
    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.index.store import open_index
    from dpr_jax.models.loading import load_model

    d, passages, questions = squad_files
    index = tmp_path / "index"
    assert main(["encode", "--model", str(minilm_dir), "--passages", str(d / "passages.jsonl"), "--out", str(index),
                 "--dtype", "float32", "--max-length", "128"]) == 0
    assert main(["mine", "--passages", str(d / "passages.jsonl"), "--train", str(d / "train.jsonl"),
                 "--out", str(tmp_path / "mined.jsonl"), "--method", "dense", "--model", str(minilm_dir),
                 "--index", str(index), "--num", "2", "--depth", "15"]) == 0
    records, _ = read_training_records(tmp_path / "mined.jsonl")
    idx = open_index(index)
    vectors = np.concatenate([c for _, c in idx.iter_chunks(1000)])
    q = TextEncoder(load_model(str(minilm_dir)), max_length=64).encode_questions([r.question for r in records])
    texts = {p["id"]: p["text"] for p in passages}
    all_ids = idx.ids()
    for rec, qv, question in zip(records, q, questions):
        order = np.argsort(-(vectors @ qv), kind="stable")[:15]
        ranked = [all_ids[i] for i in order]
        eligible = [pid for pid in ranked
                    if pid != question["positive_ids"][0] and not has_answer(question["answers"], texts[pid])]
        assert [p.id for p in rec.hard_negatives] == eligible[:2]
        # teacher scores: q · stored vector for negatives and for the positive, ranked or not
        score_of = {pid: float(vectors[i] @ qv) for i, pid in enumerate(all_ids)}
        assert rec.hard_negative_scores == pytest.approx([score_of[p.id] for p in rec.hard_negatives], abs=1e-5)
        assert rec.positive_scores == pytest.approx([score_of[rec.positives[0].id]], abs=1e-5)


def test_dense_teacher_encodes_positives_that_are_not_in_the_index(squad_files, minilm_dir, tmp_path):
    import numpy as np

    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.index.teacher import dense_rankings
    from dpr_jax.models.loading import load_model

    d, passages, questions = squad_files
    index = tmp_path / "index"
    assert main(["encode", "--model", str(minilm_dir), "--passages", str(d / "passages.jsonl"), "--out", str(index),
                 "--dtype", "float32", "--max-length", "128"]) == 0
    loaded = load_model(str(minilm_dir))
    outsider = Passage("", "The Denver Broncos defeated the Carolina Panthers 24-10.", "Super Bowl 50")
    inside = Passage(passages[3]["id"], passages[3]["text"], passages[3]["title"])
    qs = [questions[0]["question"], questions[1]["question"]]
    got = dense_rankings(loaded, index, qs, 2, [[outsider, inside], [inside]], progress=False)
    enc = TextEncoder(loaded, max_length=128)
    qv = TextEncoder(loaded, max_length=64).encode_questions(qs)
    pv = enc.encode_passages([outsider.title, inside.title], [outsider.text, inside.text])
    assert got.given_scores[0] == pytest.approx([float(qv[0] @ pv[0]), float(qv[0] @ pv[1])], abs=1e-5)
    assert got.given_scores[1] == pytest.approx([float(qv[1] @ pv[1])], abs=1e-5)
    assert [len(r) for r in got.ids] == [2, 2] and np.all(np.diff(got.scores[0]) <= 0)
    assert inside.id not in got.ids[0] + got.ids[1]  # so its score came from the stored vector, not the ranking


def test_dense_teacher_on_an_index_encoded_with_dim(minilm_dir, tmp_path):
    # An index cut to 64 of all-MiniLM-L6-v2's 384 dimensions (encode --dim 64): questions and the
    # positives encoded for their score are cut and re-normalised the same way (the model normalises).
    import numpy as np

    from dpr_jax.index import store
    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.index.teacher import dense_rankings
    from dpr_jax.models.loading import load_model

    loaded = load_model(str(minilm_dir))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.write_shard(tmp_path, 0, vectors, [f"p{i}" for i in range(30)])
    store.write_meta(tmp_path, model="random", dim=64, model_dim=384, normalize=True, dtype="float32", count=30,
                     num_shards=1)
    outsider = Passage("", "The Denver Broncos defeated the Carolina Panthers 24-10.", "Super Bowl 50")
    qs = ["Who won Super Bowl 50?", "Where is the Eiffel tower?"]
    got = dense_rankings(loaded, tmp_path, qs, 5, [[outsider, Passage("p7", "x")], []], progress=False)

    def cut(x):
        x = x[:, :64]
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    qv = cut(TextEncoder(loaded, max_length=64).encode_questions(qs))
    pv = cut(TextEncoder(loaded, max_length=256).encode_passages([outsider.title], [outsider.text]))
    assert got.given_scores[0] == pytest.approx([float(qv[0] @ pv[0]), float(qv[0] @ vectors[7])], abs=1e-5)
    want = np.argsort(-(qv @ vectors.T), axis=1, kind="stable")[:, :5]
    assert got.ids == [[f"p{i}" for i in row] for row in want]
