"""Turn the SQuAD v1.1 dev set into a small, real retrieval benchmark (corpus, train and eval sets).

Every paragraph becomes a passage; questions are split *by article* (no article on both sides), so
the eval questions are about articles never seen in training:

- ``passages.jsonl``: all paragraphs, ``{"id": "<article title>#<paragraph index>", "title", "text"}``.
  The id keeps the raw SQuAD title (``Jacksonville,_Florida#3``); ``title`` is the readable form
  with underscores replaced by spaces (``Jacksonville, Florida``), as DPR's Wikipedia titles are.
- ``train.jsonl``: DPR retriever records for the train articles' questions: ``id`` (SQuAD's
  question id), ``question``, ``answers`` (deduplicated, order kept), ``positive_ctxs`` = the gold
  paragraph with its ``passage_id``, and empty ``negative_ctxs``/``hard_negative_ctxs`` (BM25 or
  mined hard negatives are added later).
- ``eval.jsonl``: the eval articles' questions: ``{"id", "question", "answers", "positive_ids"}``.
- ``split.json``: the article lists, counts and the source file's sha256 (written last).

The default eval articles are the 12 named in the shared data README (the retrieval benchmark).

Two optional slices are taken from the *training* articles (drawn with a seeded shuffle, so the same
arguments give the same split), their questions removed from ``train.jsonl``:

- ``dev_articles``: ``dev.jsonl``, questions in the eval format, for tuning what must not be tuned on
  the eval questions (the weight of a concatenated index, a choice between recipes);
- ``heldout_articles``: ``heldout/passages.jsonl`` (those articles' paragraphs, a corpus of their own)
  and ``heldout/questions.jsonl``: a check that a fine-tuned model has not collapsed on articles no
  training saw. Their paragraphs stay in the benchmark corpus ``passages.jsonl`` (its 2,067 paragraphs
  are the protocol); corpus-only training keeps away from them with ``--exclude heldout/passages.jsonl``.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

from dpr_jax import settings, storage
from dpr_jax.data.records import Passage, TrainRecord
from dpr_jax.data.textfiles import read_json
from dpr_jax.data.training_data import write_training_records
from dpr_jax.errors import DprJaxError, InputError

log = logging.getLogger(__name__)

DEFAULT_EVAL_ARTICLES: tuple[str, ...] = (
    "Victoria_(Australia)",
    "Steam_engine",
    "Apollo_program",
    "Geology",
    "Genghis_Khan",
    "Harvard_University",
    "Jacksonville,_Florida",
    "Economic_inequality",
    "Yuan_dynasty",
    "Intergovernmental_Panel_on_Climate_Change",
    "United_Methodist_Church",
    "French_and_Indian_War",
)

OUTPUT_FILES = ("passages.jsonl", "train.jsonl", "eval.jsonl", "split.json")
DEV_FILE = "dev.jsonl"
HELDOUT_DIR = "heldout"


def passage_id(title: str, paragraph_index: int) -> str:
    """The benchmark's passage id: raw SQuAD article title, ``#``, 0-based paragraph index."""
    return f"{title}#{paragraph_index}"


def display_title(title: str) -> str:
    """SQuAD titles use underscores for spaces (Wikipedia URL form); passages carry the readable form."""
    return title.replace("_", " ")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with storage.open_read(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _expect(path, value, kind, field):
    if not isinstance(value, kind):
        want = {list: "a list", dict: "an object", str: "a string"}[kind]
        raise InputError(path, f"must be {want}, got {type(value).__name__}", field=field)
    return value


def _get(path, obj: dict, key: str, kind, field: str):
    if key not in obj:
        raise InputError(path, "missing", field=f"{field}.{key}")
    return _expect(path, obj[key], kind, f"{field}.{key}")


def load_squad(squad_file) -> list[dict]:
    """Parse and validate a SQuAD v1.1 JSON file into ``[{"title", "paragraphs": [{"context", "qas"}]}]``.

    Only the fields the benchmark uses are checked and kept; a problem names its JSON path
    (``data[3].paragraphs[5].qas[2].answers``).
    """
    path = storage.as_path(squad_file)
    root = read_json(path)
    _expect(path, root, dict, "(root)")
    articles = []
    seen_titles, seen_qids = set(), set()
    for a, article in enumerate(_get(path, root, "data", list, "(root)")):
        where = f"data[{a}]"
        _expect(path, article, dict, where)
        title = _get(path, article, "title", str, where)
        if not title.strip() or title in seen_titles:
            raise InputError(path, "empty or duplicate article title", field=f"{where}.title")
        seen_titles.add(title)
        paragraphs = []
        for p, para in enumerate(_get(path, article, "paragraphs", list, where)):
            pwhere = f"{where}.paragraphs[{p}]"
            _expect(path, para, dict, pwhere)
            context = _get(path, para, "context", str, pwhere)
            if not context.strip():
                raise InputError(path, "empty paragraph", field=f"{pwhere}.context")
            qas = []
            for q, qa in enumerate(_get(path, para, "qas", list, pwhere)):
                qwhere = f"{pwhere}.qas[{q}]"
                _expect(path, qa, dict, qwhere)
                qid = _get(path, qa, "id", str, qwhere)
                if qid in seen_qids:
                    raise InputError(path, f"duplicate question id {qid!r}", field=f"{qwhere}.id")
                seen_qids.add(qid)
                question = _get(path, qa, "question", str, qwhere)
                if not question.strip():
                    raise InputError(path, "empty question", field=f"{qwhere}.question")
                answers = []
                for k, ans in enumerate(_get(path, qa, "answers", list, qwhere)):
                    text = _get(path, _expect(path, ans, dict, f"{qwhere}.answers[{k}]"), "text", str,
                                f"{qwhere}.answers[{k}]")
                    answers.append(text)
                answers = list(dict.fromkeys(a for a in answers if a.strip()))
                if not answers:
                    raise InputError(path, "no answer text (SQuAD v1.1 questions all have one)",
                                     field=f"{qwhere}.answers")
                qas.append({"id": qid, "question": question, "answers": answers})
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": title, "paragraphs": paragraphs})
    if not articles:
        raise InputError(path, "no articles", field="data")
    return articles


def resolve_articles(names, titles) -> list[str]:
    """Map user-given article names to SQuAD titles (exact, or with spaces for underscores).

    Unknown names raise :class:`DprJaxError` listing them and the available titles.
    """
    known = list(titles)
    by_name = {t: t for t in known} | {display_title(t): t for t in known if display_title(t) not in known}
    resolved, unknown = [], []
    for name in names:
        t = by_name.get(name.strip())
        if t is None:
            unknown.append(name)
        elif t not in resolved:
            resolved.append(t)
    if unknown:
        raise DprJaxError(f"unknown SQuAD article(s): {', '.join(map(repr, unknown))}; "
                          f"available: {', '.join(known)}")
    return resolved


def split_article_list(spec: str, titles) -> list[str]:
    """Split a comma-separated article list where titles may themselves contain commas.

    ``"Geology,Jacksonville,_Florida"`` -> ``["Geology", "Jacksonville,_Florida"]``: pieces are joined
    back while the joined text is a prefix of a known title and the piece alone is not a title.
    Unresolvable pieces are kept as is (and reported as unknown by :func:`resolve_articles`).
    """
    names = set(titles) | {display_title(t) for t in titles}
    pieces = spec.split(",")
    out, i = [], 0
    while i < len(pieces):
        if not pieces[i].strip():
            i += 1
            continue
        # the longest run of pieces starting at i that forms a known title
        best = None
        for j in range(i + 1, len(pieces) + 1):
            if ",".join(pieces[i:j]).strip() in names:
                best = j
        end = best or i + 1
        out.append(",".join(pieces[i:end]).strip())
        i = end
    return out


def draw_articles(train_titles, dev: int, heldout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(dev titles, held-out titles)``: disjoint, drawn from ``train_titles`` by a ``seed``ed shuffle."""
    import random

    if dev < 0 or heldout < 0:
        raise DprJaxError("the numbers of dev and held-out articles must be >= 0")
    if dev + heldout >= len(train_titles):
        raise DprJaxError(f"{dev} dev + {heldout} held-out articles leave none of the {len(train_titles)} "
                          f"training articles for training")
    drawn = random.Random(seed).sample(sorted(train_titles), dev + heldout)
    return drawn[:dev], drawn[dev:]


def prepare_squad(squad_file, out_dir, eval_articles=DEFAULT_EVAL_ARTICLES, *, dev_articles: int = 0,
                  heldout_articles: int = 0, seed: int = 0) -> dict:
    """Write ``passages.jsonl``, ``train.jsonl``, ``eval.jsonl`` and ``split.json`` to ``out_dir``.

    ``dev_articles``/``heldout_articles`` training articles (seeded draw) go to ``dev.jsonl`` and
    ``heldout/`` instead of ``train.jsonl`` (see the module docstring).

    ``eval_articles`` is a list of titles (raw, or with spaces for underscores) or one comma-separated
    string (see :func:`split_article_list`). Returns the content of ``split.json`` (article lists, counts, source path and sha256).
    Each file is written atomically; ``split.json`` is written last, so its presence means the set
    is complete.
    """
    squad_file = storage.as_path(squad_file)
    out_dir = storage.as_path(out_dir)
    articles = load_squad(squad_file)
    titles = [a["title"] for a in articles]
    if isinstance(eval_articles, str):
        eval_articles = split_article_list(eval_articles, titles)
    eval_set = set(resolve_articles(eval_articles, titles))
    if not eval_set:
        raise DprJaxError("no eval articles given")
    if len(eval_set) == len(titles):
        raise DprJaxError("every article is an eval article; nothing would be left for training")

    dev_list, heldout_list = draw_articles([t for t in titles if t not in eval_set], dev_articles,
                                           heldout_articles, seed)
    passages: list[dict] = []
    train_records: list[TrainRecord] = []
    train_ids: list[str] = []
    eval_rows: list[dict] = []
    dev_rows: list[dict] = []
    heldout_rows: list[dict] = []
    heldout_passages: list[dict] = []
    question_rows = {**{t: eval_rows for t in eval_set}, **{t: dev_rows for t in dev_list},
                     **{t: heldout_rows for t in heldout_list}}
    for article in articles:
        title = article["title"]
        for p, para in enumerate(article["paragraphs"]):
            passage = Passage(id=passage_id(title, p), text=para["context"], title=display_title(title))
            passages.append({"id": passage.id, "title": passage.title, "text": passage.text})
            if title in heldout_list:
                heldout_passages.append(passages[-1])
            for qa in para["qas"]:
                if title in question_rows:
                    question_rows[title].append({"id": qa["id"], "question": qa["question"],
                                                 "answers": qa["answers"], "positive_ids": [passage.id]})
                else:
                    train_records.append(TrainRecord(question=qa["question"], answers=tuple(qa["answers"]),
                                                     positives=(passage,)))
                    train_ids.append(qa["id"])

    storage.make_dirs(out_dir)
    storage.write_jsonl(out_dir / "passages.jsonl", passages)
    write_training_records(out_dir / "train.jsonl", train_records, ids=train_ids)
    storage.write_jsonl(out_dir / "eval.jsonl", eval_rows)
    if dev_list:
        storage.write_jsonl(out_dir / DEV_FILE, dev_rows)
    if heldout_list:
        storage.make_dirs(out_dir / HELDOUT_DIR)
        storage.write_jsonl(out_dir / HELDOUT_DIR / "passages.jsonl", heldout_passages)
        storage.write_jsonl(out_dir / HELDOUT_DIR / "questions.jsonl", heldout_rows)
    eval_list = [t for t in titles if t in eval_set]
    train_list = [t for t in titles if t not in eval_set and t not in question_rows]
    split = {
        "source": str(squad_file),
        "source_sha256": sha256_file(squad_file),
        "passage_id": "<raw article title>#<0-based paragraph index>; title = article title with '_' -> ' '",
        "eval_articles": eval_list,
        "train_articles": train_list,
        "counts": {
            "articles": len(titles),
            "eval_articles": len(eval_list),
            "train_articles": len(train_list),
            "passages": len(passages),
            "eval_questions": len(eval_rows),
            "train_questions": len(train_records),
        },
    }
    if dev_list or heldout_list:
        split["slices_seed"] = seed
    if dev_list:
        split["dev_articles"] = [t for t in titles if t in dev_list]
        split["counts"].update(dev_articles=len(dev_list), dev_questions=len(dev_rows))
    if heldout_list:
        split["heldout_articles"] = [t for t in titles if t in heldout_list]
        split["counts"].update(heldout_articles=len(heldout_list), heldout_questions=len(heldout_rows),
                               heldout_passages=len(heldout_passages))
    if split["source_sha256"] != settings.SQUAD_DEV_SHA256:
        log.warning("%s is not the official SQuAD v1.1 dev set (sha256 differs); numbers will not be "
                    "comparable with the published benchmark", squad_file)
    storage.write_json(out_dir / "split.json", split)
    return split


def fetch_squad_dev(dest, url: str = settings.SQUAD_DEV_URL, sha256: str = settings.SQUAD_DEV_SHA256,
                    timeout: float = 60.0) -> Path:
    """Download the SQuAD v1.1 dev set to ``dest``, verify its sha256 and move it into place atomically.

    Raises :class:`DprJaxError` when the download fails (e.g. offline) or the checksum differs;
    ``dest`` is then left untouched.
    """
    dest = storage.as_path(dest)
    h = hashlib.sha256()
    try:
        with storage.atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
                while chunk := resp.read(1 << 16):
                    h.update(chunk)
                    f.write(chunk)
            if sha256 and h.hexdigest() != sha256:
                raise DprJaxError(f"downloaded {url} but its sha256 is {h.hexdigest()}, expected {sha256}; "
                                  f"not saved to {dest}")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DprJaxError(f"could not download {url} ({reason}); are you offline? Download it by hand "
                          f"and put it at {dest}") from None
    return dest


__all__ = ["DEFAULT_EVAL_ARTICLES", "DEV_FILE", "HELDOUT_DIR", "OUTPUT_FILES", "display_title", "draw_articles", "fetch_squad_dev", "load_squad",
           "passage_id", "prepare_squad", "resolve_articles", "split_article_list"]
