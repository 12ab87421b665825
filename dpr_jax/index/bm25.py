"""BM25 over a passages file with `bm25s`, cached on disk next to the corpus.

The sparse baseline of the DPR paper is BM25 via Lucene; pyserini's defaults for it are
``k1=0.9, b=0.4`` with Lucene's scoring variant, which is what is used here (``bm25s`` with
``method="lucene"``). Title and text are indexed together; words are lower-cased, English stop
words are dropped and the rest are Snowball-stemmed (PyStemmer), like Lucene's English analyzer.

Building streams the passages: each is tokenised on its own and only its token ids are kept, in
one flat int32 array (4 bytes per token, plus 8 per passage for its offset) rather than a Python
list per passage (~900 B per ~100-word passage). bm25s 0.3.16 cannot build from a one-pass
stream - ``BM25.build_index_from_ids`` walks the per-document id lists three times (lengths,
document frequencies, scores) - so :class:`TokenIds` hands it a sequence that materialises one
passage's list at a time. A passage's title and text are cut to their first
:data:`MAX_PASSAGE_CHARS` characters before tokenising (Lucene's classic ``maxFieldLength`` cut
documents at 10,000 terms the same way), so one huge record cannot take gigabytes. An index is
saved as a directory (written under a temporary name and renamed into place, or uploaded with
``meta.json`` last) holding the ``bm25s`` matrices, the tokenizer vocabulary, the passage ids and
``meta.json`` (settings plus the fingerprint of the passages file it was built from: size and
mtime, or for a URL the object's generation), which :func:`open_or_build` uses to decide whether a
cached index is still valid.

Where the cache lives: ``<passages>.bm25/`` next to a local corpus. For a corpus on a bucket
(``gs://...``) it is a *local* directory under :func:`dpr_jax.storage.cache_root` keyed by the
corpus URL, and stale once the object's generation changes. Corpora on buckets are often shared
and read-only to their users (writing next to them would fail or surprise their owner), bm25s
opens its files by name so a cache on the bucket would be downloaded before every use anyway, and
BM25 runs on one host. ``--index-dir gs://...`` still puts the cache on a bucket when wanted (to
share one build between machines): saved by upload, loaded from a cached local copy.
"""

from __future__ import annotations

import array
import collections.abc
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dpr_jax import storage
from dpr_jax.errors import DprJaxError, InputError

FORMAT_VERSION = 1
META_FILE = "meta.json"
IDS_FILE = "passage_ids.json"
# ~15,000 English words; DPR's passages are 100 words. Applied to queries too.
MAX_PASSAGE_CHARS = 100_000


@dataclasses.dataclass(frozen=True)
class BM25Settings:
    """Everything that changes the index; a cached index is reused only if all of it matches."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    fields: str = "title+text"


def _bm25s_version() -> str:
    import bm25s

    return getattr(bm25s, "__version__", "unknown")


def _make_tokenizer(settings: BM25Settings):
    import bm25s

    stemmer = None
    if settings.stemmer:
        import Stemmer

        try:
            stemmer = Stemmer.Stemmer(settings.stemmer)
        except KeyError:
            raise DprJaxError(f"unknown stemmer language {settings.stemmer!r} "
                              f"(PyStemmer has: {', '.join(Stemmer.algorithms())})") from None
    return bm25s.tokenization.Tokenizer(lower=True, stopwords=settings.stopwords, stemmer=stemmer)


def _passage_text(p) -> str:
    """What BM25 indexes of a passage: title and text, cut to :data:`MAX_PASSAGE_CHARS` before tokenising."""
    title = p.title[:MAX_PASSAGE_CHARS]
    return f"{title} {p.text[:MAX_PASSAGE_CHARS - len(title) - 1]}" if title else p.text[:MAX_PASSAGE_CHARS]


class TokenIds(collections.abc.Sequence):
    """Every passage's token ids in one flat int32 array plus offsets, as the sequence bm25s builds from.

    ``append`` adds one passage (ids of any iterable of ints); ``doc[i]`` and iteration give one
    passage's ids as a fresh Python list, so only one passage's list exists at a time while bm25s
    makes its passes.
    """

    def __init__(self):
        self._flat = array.array("i")
        self._ends = array.array("q")

    def append(self, ids) -> None:
        self._flat.extend(ids)
        self._ends.append(len(self._flat))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        start = self._ends[i - 1] if i else 0
        return self._flat[start:self._ends[i]].tolist()

    def __iter__(self):
        flat = np.frombuffer(self._flat, dtype=np.int32) if len(self._flat) else np.zeros(0, np.int32)
        start = 0
        for end in self._ends:
            yield flat[start:end].tolist()
            start = end

    def nbytes(self) -> int:
        return self._flat.itemsize * len(self._flat) + self._ends.itemsize * len(self._ends)


class BM25Index:
    """A BM25 index over a passages file: ``search(queries, k)`` returns passage ids and scores."""

    def __init__(self, retriever, tokenizer, ids: list[str], settings: BM25Settings, source: dict):
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.ids = ids
        self.settings = settings
        self.source = source  # fingerprint of the passages file it was built from
        self._row_of: dict[str, int] | None = None  # passage id -> row, built on first use

    def __len__(self) -> int:
        return len(self.ids)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, passages_path, *, k1: float = 0.9, b: float = 0.4, stemmer: str | None = "english",
              stopwords: str | None = "en", show_progress: bool = True) -> "BM25Index":
        """Index every passage (title + text) of ``passages_path`` in one streaming pass.

        Bad records and duplicate ids in the passages file raise :class:`InputError`.
        """
        import bm25s
        from tqdm import tqdm

        from dpr_jax.data.passages import estimate_passage_count, read_passages

        settings = BM25Settings(k1=float(k1), b=float(b), stemmer=stemmer, stopwords=stopwords)
        source = storage.fingerprint(passages_path)
        tokenizer = _make_tokenizer(settings)
        ids: list[str] = []

        def texts() -> Iterator[str]:
            for p in tqdm(read_passages(passages_path), total=estimate_passage_count(passages_path),
                          desc="BM25: tokenizing passages", unit="psg", disable=not show_progress):
                ids.append(p.id)
                yield _passage_text(p)

        token_ids = TokenIds()
        for doc in tokenizer.streaming_tokenize(texts(), update_vocab=True):
            token_ids.append(doc)
        if not ids:
            raise InputError(passages_path, "no passages to index")
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(tokenizer.to_tokenized_tuple(token_ids), show_progress=show_progress)
        return cls(retriever, tokenizer, ids, settings, source)

    # -- persistence ------------------------------------------------------------------------

    def meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "bm25s_version": _bm25s_version(),
                "settings": dataclasses.asdict(self.settings), "source": self.source,
                "num_passages": len(self.ids)}

    def save(self, index_dir) -> None:
        """Write the index to ``index_dir`` (local or a URL) atomically, ``meta.json`` marking it complete."""
        with storage.atomic_path(index_dir, last=META_FILE) as tmp:
            tmp.mkdir()
            self.retriever.save(tmp, show_progress=False)
            self.tokenizer.save_vocab(tmp)
            self.tokenizer.save_stopwords(tmp)
            with open(tmp / IDS_FILE, "w", encoding="utf-8") as f:
                json.dump(self.ids, f, ensure_ascii=False)
            with open(tmp / META_FILE, "w", encoding="utf-8") as f:
                json.dump(self.meta(), f, indent=2)

    @staticmethod
    def read_meta(index_dir) -> dict | None:
        """The ``meta.json`` of a saved index, or None if there is no complete index there."""
        path = storage.as_path(index_dir) / META_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    @classmethod
    def load(cls, index_dir) -> "BM25Index":
        """Load an index saved by :meth:`save`."""
        import bm25s

        meta = cls.read_meta(index_dir)
        if meta is None:
            raise InputError(index_dir, f"not a dpr-jax BM25 index (no readable {META_FILE})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(index_dir, f"BM25 index format {meta.get('format_version')} is not "
                                        f"{FORMAT_VERSION}; rebuild it")
        index_dir = storage.cached_copy(index_dir)  # bm25s opens its files by name
        settings = BM25Settings(**meta["settings"])
        retriever = bm25s.BM25.load(index_dir, show_progress=False)
        tokenizer = _make_tokenizer(settings)
        tokenizer.load_vocab(index_dir)
        tokenizer.load_stopwords(index_dir)
        with open(index_dir / IDS_FILE, encoding="utf-8") as f:
            ids = json.load(f)
        return cls(retriever, tokenizer, ids, settings, meta.get("source", {}))

    # -- search -----------------------------------------------------------------------------

    def search(self, queries: list[str], k: int, show_progress: bool = True) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` passage ids (best first) and BM25 scores, shape ``(len(queries), min(k, N))``.

        ``k`` larger than the corpus returns every passage. A query none of whose words occur in
        the corpus scores 0 everywhere (its hits are then arbitrary).
        """
        if k < 1:
            raise DprJaxError(f"k must be at least 1, got {k}")
        k = min(int(k), len(self.ids))
        if not queries:
            return [], np.zeros((0, k), dtype=np.float32)
        query_ids = self.tokenizer.tokenize([q[:MAX_PASSAGE_CHARS] for q in queries], update_vocab=False, return_as="ids",
                                            show_progress=False)
        docs, scores = self.retriever.retrieve(query_ids, k=k, show_progress=show_progress,
                                               leave_progress=False)
        ids = [[self.ids[int(j)] for j in row] for row in docs]
        return ids, np.asarray(scores, dtype=np.float32)

    def passage_scores(self, queries: Sequence[str], ids_per_query: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """The BM25 score of given passages (by id) for each query, exactly as :meth:`search` reports it.

        A query's score vector is bm25s' own ``get_scores_from_ids`` of its in-vocabulary token ids
        (what ``retrieve`` ranks by), read at the passages' rows; ``None`` for an id not in the index.
        Used by mining to give positives outside the top ranks their teacher score.
        """
        if self._row_of is None:
            self._row_of = {pid: row for row, pid in enumerate(self.ids)}
        query_ids = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        known_ids = self.retriever.unique_token_ids_set
        out = []
        for tokens, wanted in zip(query_ids, ids_per_query):
            rows = [self._row_of.get(pid) for pid in wanted]
            tokens = [t for t in tokens if t in known_ids]
            if all(r is None for r in rows) or not tokens:
                out.append([None if r is None else 0.0 for r in rows])
                continue
            scores = self.retriever.get_scores_from_ids(tokens)
            out.append([None if r is None else float(scores[r]) for r in rows])
        return out


def default_cache_dir(passages_path) -> Path:
    """Where :func:`open_or_build` keeps the index by default (see the module docstring for why).

    ``<passages file>.bm25/`` for a local file; for a URL,
    ``<storage.cache_root()>/bm25/<hash of the URL>/<file name>.bm25/`` on this machine.
    """
    p = storage.as_path(passages_path)
    if storage.is_remote(p):
        key = hashlib.sha256(str(p).encode()).hexdigest()[:24]
        return storage.cache_root() / "bm25" / key / f"{p.name}.bm25"
    return p.with_name(p.name + ".bm25")


def open_or_build(passages_path, cache_dir=None, *, k1: float = 0.9, b: float = 0.4,
                  stemmer: str | None = "english", stopwords: str | None = "en",
                  show_progress: bool = True) -> BM25Index:
    """Load the cached index of ``passages_path``, or build and cache it if missing or stale.

    The cache is stale when the passages file's size or mtime, the settings, the index format or
    the bm25s version differ from what ``meta.json`` records.
    """
    passages_path = storage.as_path(passages_path)
    if not passages_path.is_file():
        raise InputError(passages_path, "passages file not found")
    cache_dir = storage.as_path(cache_dir) if cache_dir is not None else default_cache_dir(passages_path)
    settings = BM25Settings(k1=float(k1), b=float(b), stemmer=stemmer, stopwords=stopwords)
    wanted = {"format_version": FORMAT_VERSION, "bm25s_version": _bm25s_version(),
              "settings": dataclasses.asdict(settings), "source": storage.fingerprint(passages_path)}
    meta = BM25Index.read_meta(cache_dir)
    if meta is not None and all(meta.get(key) == value for key, value in wanted.items()):
        return BM25Index.load(cache_dir)
    index = BM25Index.build(passages_path, k1=k1, b=b, stemmer=stemmer, stopwords=stopwords,
                            show_progress=show_progress)
    try:
        index.save(cache_dir)
    except OSError as e:  # a read-only corpus directory should not stop the search
        import sys

        print(f"warning: could not cache the BM25 index in {cache_dir}: {e}", file=sys.stderr)
    return index
