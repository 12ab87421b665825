"""DPR's answer matching: does a retrieved passage contain one of the gold answers?

This reproduces ``dpr/data/qa_validation.py::has_answer`` and the DrQA ``SimpleTokenizer`` of
facebookresearch/DPR, which define the "top-k retrieval accuracy" every DPR-style paper reports:

* ``match="string"`` (NQ, TriviaQA, WebQuestions, SQuAD): text and answer are NFD-normalised and
  split into tokens by the regex ``[\\p{L}\\p{N}\\p{M}]+|[^\\p{Z}\\p{C}]`` (runs of letters, digits and
  marks; every other non-space character alone, so ``"U.S."`` is ``u . s .``), lower-cased; the
  answer matches when its token sequence occurs contiguously in the text's tokens. ``"cat"`` is thus
  not found in ``"category"``, but ``"U.S."`` is found in ``"the U.S. army"``.
* ``match="regex"`` (CuratedTREC): each answer is a regular expression searched (``regex`` module,
  IGNORECASE | UNICODE | MULTILINE) in the NFD-normalised text; a pattern that does not compile is
  skipped, as in DPR.

One deliberate difference: DPR treats an answer with no tokens (e.g. ``""``) as matching every
passage; here such an answer never matches, so a blank answer cannot inflate accuracy.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Iterable, Sequence

import regex

MATCH_TYPES = ("string", "regex")

_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.MULTILINE


class SimpleTokenizer:
    """DrQA/DPR ``SimpleTokenizer``: alphanumeric runs and single non-space symbols, lower-cased."""

    ALPHA_NUM = r"[\p{L}\p{N}\p{M}]+"
    NON_WS = r"[^\p{Z}\p{C}]"

    def __init__(self) -> None:
        self._regexp = regex.compile(f"{self.ALPHA_NUM}|{self.NON_WS}", flags=_FLAGS)

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text``, lower-cased (DPR's ``tokenize(text).words(uncased=True)``)."""
        return list(map(str.lower, self._regexp.findall(text)))


_TOKENIZER = SimpleTokenizer()


def normalize(text: str) -> str:
    """Unicode NFD normalisation, applied by DPR to both passages and answers before matching."""
    return unicodedata.normalize("NFD", text)


def tokenize(text: str) -> list[str]:
    """NFD-normalise and tokenize ``text`` as DPR does for string matching."""
    return _TOKENIZER.tokenize(normalize(text))


def _check_match(match: str) -> None:
    if match not in MATCH_TYPES:
        raise ValueError(f"match must be one of {MATCH_TYPES}, got {match!r}")


def _contains(tokens: Sequence[str], sub: Sequence[str]) -> bool:
    n = len(sub)
    if n == 0:
        return False
    first = sub[0]
    for i in range(len(tokens) - n + 1):
        if tokens[i] == first and tokens[i : i + n] == sub:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str):
    try:
        return regex.compile(normalize(pattern), flags=_FLAGS)
    except Exception:  # DPR skips answers that are not valid regular expressions
        return None


def _fold(text: str) -> str:
    """Lower-case ``text`` as a whole for the substring pre-check.

    ``str.lower`` maps characters one by one except capital sigma, which becomes final ``ς`` or
    ``σ`` depending on its neighbours; folding ``ς`` to ``σ`` makes every lower-cased token a
    substring of the lower-cased text.
    """
    return text.lower().replace("\u03c2", "\u03c3")


class AnswerMatcher:
    """The answers of one question, prepared once and checked against many passages.

    Answer tokenisation (or regex compilation) is done in the constructor. In string mode a passage
    is tokenised only if the longest token of some answer occurs in it as a lower-cased substring,
    a necessary condition for a token match, so the common case (no answer in the passage) costs a
    normalisation and a few substring searches rather than a regex tokenisation.
    """

    def __init__(self, answers: Iterable[str], match: str = "string") -> None:
        _check_match(match)
        self.match = match
        answers = [a for a in answers if a is not None]
        self._answers: list[tuple[str, list[str]]] = []  # (pre-check key, tokens) per answer
        self._patterns = []
        if match == "string":
            for tokens in (tokenize(a) for a in answers):
                if tokens:
                    self._answers.append((_fold(max(tokens, key=len)), tokens))
        else:
            self._patterns = [p for p in (_compile(a) for a in answers) if p is not None]

    def __call__(self, text: str) -> bool:
        """True if ``text`` contains one of the answers."""
        text = normalize(text)
        if self.match == "regex":
            return any(p.search(text) is not None for p in self._patterns)
        if not self._answers:
            return False
        folded = _fold(text)
        tokens = None
        for key, answer in self._answers:
            if key in folded:
                if tokens is None:
                    tokens = _TOKENIZER.tokenize(text)
                if _contains(tokens, answer):
                    return True
        return False


def has_answer(answers: Iterable[str], text: str, match: str = "string") -> bool:
    """True if ``text`` contains one of ``answers`` under DPR's ``match`` rule ("string" or "regex")."""
    return AnswerMatcher(answers, match)(text)
