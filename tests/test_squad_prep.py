"""SQuAD v1.1 dev -> retrieval benchmark: checked against the raw JSON, re-read with the readers."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from dpr_jax import settings
from dpr_jax.cli import main as cli_main
from dpr_jax.data.passages import read_passages
from dpr_jax.data.questions import read_questions
from dpr_jax.data.squad import DEFAULT_EVAL_ARTICLES, fetch_squad_dev, prepare_squad, split_article_list
from dpr_jax.data.training_data import read_training_records
from dpr_jax.errors import DprJaxError, InputError


@pytest.fixture(scope="module")
def raw(squad_dev_file):
    with open(squad_dev_file, encoding="utf-8") as f:
        return json.load(f)["data"]


@pytest.fixture(scope="module")
def prepared(squad_dev_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("squad")
    split = prepare_squad(squad_dev_file, out)
    return out, split


def test_default_eval_articles_match_the_data_readme(squad_dev_file, raw):
    readme = squad_dev_file.parent / "README.md"
    if not readme.exists():
        pytest.skip("no README next to the SQuAD file")
    block = re.search(r"eval articles \(12\):(.*?)- train articles", readme.read_text(), re.S).group(1)
    names = [t.strip('"') for t in re.findall(r'"[^"]+"|[^,\s]+', block)]
    assert list(DEFAULT_EVAL_ARTICLES) == names
    assert set(names) <= {a["title"] for a in raw}


def test_split_counts_and_disjoint_articles(prepared, raw):
    out, split = prepared
    eval_titles = set(DEFAULT_EVAL_ARTICLES)
    n_eval_q = sum(len(p["qas"]) for a in raw if a["title"] in eval_titles for p in a["paragraphs"])
    n_all_q = sum(len(p["qas"]) for a in raw for p in a["paragraphs"])
    assert (n_eval_q, n_all_q) == (2142, 10570)  # the figures published in the data README
    c = split["counts"]
    assert c == {"articles": 48, "eval_articles": 12, "train_articles": 36, "passages": 2067,
                 "eval_questions": n_eval_q, "train_questions": n_all_q - n_eval_q}
    assert set(split["eval_articles"]) == eval_titles
    assert not set(split["eval_articles"]) & set(split["train_articles"])
    assert split["source_sha256"] == settings.SQUAD_DEV_SHA256
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "passages.jsonl", "split.json", "train.jsonl"]
    assert json.loads((out / "split.json").read_text()) == split


def test_outputs_reread_and_consistent_with_the_source(prepared, raw):
    out, _ = prepared
    passages = {p.id: p for p in read_passages(out / "passages.jsonl")}  # also checks ids are unique
    assert len(passages) == 2067
    # passage ids and texts come straight from the source paragraphs; titles are readable
    for a in raw:
        for i, para in enumerate(a["paragraphs"]):
            p = passages[f"{a['title']}#{i}"]
            assert p.text == para["context"] and p.title == a["title"].replace("_", " ")
    gold = {qa["id"]: (a["title"], i, qa) for a in raw for i, para in enumerate(a["paragraphs"])
            for qa in para["qas"]}

    eval_qs = read_questions(out / "eval.jsonl")
    train, problems = read_training_records(out / "train.jsonl")
    train_ids = [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert problems == [] and len(train) == len(train_ids) == 8428
    assert Counter([q.id for q in eval_qs] + train_ids) == Counter(gold.keys())  # every question exactly once

    eval_articles, train_articles = set(), set()
    for q in eval_qs:
        title, i, qa = gold[q.id]
        assert q.positive_ids == (f"{title}#{i}",) and q.question == qa["question"]
        assert q.answers == tuple(dict.fromkeys(x["text"] for x in qa["answers"]))
        assert all(ans in passages[q.positive_ids[0]].text for ans in q.answers)
        eval_articles.add(title)
    for rid, rec in zip(train_ids, train):
        title, i, qa = gold[rid]
        (pos,) = rec.positives
        assert pos == passages[f"{title}#{i}"] and rec.question == qa["question"]
        assert not rec.negatives and not rec.hard_negatives
        assert len(set(rec.answers)) == len(rec.answers) and set(rec.answers) == {x["text"] for x in qa["answers"]}
        assert all(ans in pos.text for ans in rec.answers)
        train_articles.add(title)
    assert eval_articles == set(DEFAULT_EVAL_ARTICLES) and len(train_articles) == 36
    assert not eval_articles & train_articles


def test_custom_eval_articles_with_commas_and_unknown_names(squad_dev_file, tmp_path):
    split = prepare_squad(squad_dev_file, tmp_path, eval_articles="Geology, Jacksonville, Florida,Fresno,_California")
    assert split["eval_articles"] == ["Fresno,_California", "Geology", "Jacksonville,_Florida"]  # file order
    with pytest.raises(DprJaxError, match=r"unknown SQuAD article\(s\): 'Atlantis', 'Geolog'"):
        prepare_squad(squad_dev_file, tmp_path / "x", eval_articles=["Geology", "Atlantis", "Geolog"])
    assert not (tmp_path / "x").exists()


def test_split_article_list_prefers_known_titles():
    titles = ["A", "A,_B", "C"]
    assert split_article_list("A,_B,C", titles) == ["A,_B", "C"]
    assert split_article_list("A, C,,", titles) == ["A", "C"]
    assert split_article_list("A, B", titles) == ["A, B"]  # readable form of "A,_B"
    assert split_article_list("Z,C", titles) == ["Z", "C"]


def _mini_squad(tmp_path, data):
    f = tmp_path / "mini.json"
    f.write_text(json.dumps({"version": "1.1", "data": data}, indent=1))
    return f


MINI = [
    {"title": "New_York", "paragraphs": [
        {"context": "New York is big. It has 8 million people.",
         "qas": [{"id": "q1", "question": "How many people?", "answers": [{"text": "8 million"},
                                                                          {"text": "8 million"},
                                                                          {"text": "8 million people"}]}]},
        {"context": "Second paragraph about Manhattan.",
         "qas": [{"id": "q2", "question": "Which borough?", "answers": [{"text": "Manhattan"}]}]}]},
    {"title": "Geology", "paragraphs": [
        {"context": "Rocks are old.", "qas": [{"id": "q3", "question": "What is old?",
                                               "answers": [{"text": "Rocks"}]}]}]},
]


def test_mini_squad_ids_titles_and_answer_dedup(tmp_path):
    f = _mini_squad(tmp_path, MINI)
    split = prepare_squad(f, tmp_path / "out", eval_articles=["Geology"])
    assert split["train_articles"] == ["New_York"] and split["counts"]["passages"] == 3
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "q1", "question": "How many people?", "answers": ["8 million", "8 million people"],
                       "positive_ctxs": [{"title": "New York", "text": MINI[0]["paragraphs"][0]["context"],
                                          "passage_id": "New_York#0"}],
                       "negative_ctxs": [], "hard_negative_ctxs": []}
    assert rows[1]["positive_ctxs"][0]["passage_id"] == "New_York#1"
    ev = [json.loads(line) for line in (tmp_path / "out" / "eval.jsonl").read_text().splitlines()]
    assert ev == [{"id": "q3", "question": "What is old?", "answers": ["Rocks"], "positive_ids": ["Geology#0"]}]


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d[0]["paragraphs"][1].pop("context"), "data[0].paragraphs[1].context"),
    (lambda d: d[0]["paragraphs"][0]["qas"][0].update(answers="8 million"), "data[0].paragraphs[0].qas[0].answers"),
    (lambda d: d[1]["paragraphs"][0]["qas"][0].update(question=" "), "data[1].paragraphs[0].qas[0].question"),
    (lambda d: d[1]["paragraphs"][0]["qas"][0].update(id="q1"), "data[1].paragraphs[0].qas[0].id"),
    (lambda d: d[1].update(paragraphs={}), "data[1].paragraphs"),
])
def test_malformed_squad_names_the_field_path(tmp_path, mutate, field):
    data = json.loads(json.dumps(MINI))
    mutate(data)
    f = _mini_squad(tmp_path, data)
    with pytest.raises(InputError) as e:
        prepare_squad(f, tmp_path / "out", eval_articles=["Geology"])
    assert str(e.value).startswith(f"{f}: field '{field}': ")
    assert not (tmp_path / "out").exists()


def test_malformed_squad_json_names_the_line(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}')
    with pytest.raises(InputError, match=rf"^{f}:3: malformed JSON"):
        prepare_squad(f, tmp_path / "out")


def test_cli_squad_missing_file_says_where_to_put_it(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "dev-v1.1.json"
    assert cli_main(["data", "squad", "--squad", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: SQuAD v1.1 dev set not found at {missing}") and err.count("\n") == 1
    assert "DPR_JAX_DATA" in err and "--download" in err


def test_cli_squad_prints_counts(tmp_path, capsys):
    f = _mini_squad(tmp_path, MINI)
    assert cli_main(["data", "squad", "--squad", str(f), "--out", str(tmp_path / "o"),
                     "--eval-articles", "Geology"]) == 0
    out = capsys.readouterr().out
    assert "passages: 3" in out and "train questions: 2" in out and "eval questions: 1" in out


def test_fetch_verifies_checksum_and_writes_atomically(tmp_path):
    # a file:// URL exercises the real download path without a network
    src = tmp_path / "src.json"
    src.write_bytes(b'{"data": []}')
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "d" / "dev.json"
    with pytest.raises(DprJaxError, match="sha256"):
        fetch_squad_dev(dest, url=src.as_uri(), sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert fetch_squad_dev(dest, url=src.as_uri(), sha256=good) == dest
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(DprJaxError, match=r"could not download .*put it at"):
        fetch_squad_dev(tmp_path / "e.json", url=(tmp_path / "absent.json").as_uri(), sha256=good)


def test_dev_and_heldout_slices_come_from_training_articles_only(squad_dev_file, raw, tmp_path):
    from dpr_jax.data.passages import read_passages

    out = tmp_path / "sliced"
    split = prepare_squad(squad_dev_file, out, dev_articles=3, heldout_articles=2, seed=4)
    dev, held = set(split["dev_articles"]), set(split["heldout_articles"])
    assert len(dev) == 3 and len(held) == 2 and not dev & held
    assert not (dev | held) & set(DEFAULT_EVAL_ARTICLES)
    assert not (dev | held) & set(split["train_articles"]) and len(split["train_articles"]) == 31
    questions_of = {a["title"]: sum(len(p["qas"]) for p in a["paragraphs"]) for a in raw}
    c = split["counts"]
    assert c["dev_questions"] == sum(questions_of[t] for t in dev)
    assert c["heldout_questions"] == sum(questions_of[t] for t in held)
    assert c["train_questions"] + c["dev_questions"] + c["heldout_questions"] + c["eval_questions"] == 10570
    # train.jsonl holds no question of a dev or held-out article; the corpus stays whole
    records, _ = read_training_records(out / "train.jsonl")
    assert len(records) == c["train_questions"]
    assert not {r.positives[0].id.split("#")[0] for r in records} & (dev | held)
    assert sum(1 for _ in read_passages(out / "passages.jsonl")) == 2067
    dev_q = read_questions(out / "dev.jsonl")
    assert {q.positive_ids[0].split("#")[0] for q in dev_q} == dev and all(q.answers for q in dev_q)
    held_p = list(read_passages(out / "heldout" / "passages.jsonl"))
    assert {p.id.split("#")[0] for p in held_p} == held and len(held_p) == c["heldout_passages"]
    held_q = read_questions(out / "heldout" / "questions.jsonl")
    assert {pid for q in held_q for pid in q.positive_ids} <= {p.id for p in held_p}
    # the draw is a function of the seed
    again = prepare_squad(squad_dev_file, tmp_path / "again", dev_articles=3, heldout_articles=2, seed=4)
    assert again["dev_articles"] == split["dev_articles"] and again["heldout_articles"] == split["heldout_articles"]
    other = prepare_squad(squad_dev_file, tmp_path / "other", dev_articles=3, heldout_articles=2, seed=5)
    assert (other["dev_articles"], other["heldout_articles"]) != (split["dev_articles"], split["heldout_articles"])
    with pytest.raises(DprJaxError, match="leave none"):
        prepare_squad(squad_dev_file, tmp_path / "none", dev_articles=30, heldout_articles=6)
