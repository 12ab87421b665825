"""DPR answer matching: the SimpleTokenizer rules and has_answer's string and regex modes."""

import unicodedata

import pytest

from dpr_jax.eval.has_answer import AnswerMatcher, has_answer, tokenize


def test_tokenizer_splits_punctuation_and_lowercases():
    assert tokenize("The U.S. Army's 1,000 men!") == ["the", "u", ".", "s", ".", "army", "'", "s", "1", ",", "000",
                                                     "men", "!"]
    # spaces (\p{Z}, including no-break space) and control characters (\p{C}) are not tokens
    assert tokenize("a\u00a0b\tc\x07d") == ["a", "b", "c", "d"]


def test_tokenizer_keeps_combining_marks_inside_tokens():
    composed = "Beyoncé"
    assert tokenize(composed) == [unicodedata.normalize("NFD", "beyoncé")]
    assert len(tokenize(composed)[0]) == len("beyonce") + 1  # NFD: e + combining acute


@pytest.mark.parametrize("answer, text, expected", [
    ("paris", "PARIS is the capital of France.", True),            # case-insensitive
    ("Paris", "The capital is paris.", True),
    ("cat", "A category of animals.", False),                     # no partial-token match
    ("cat", "The cat sat.", True),
    ("U.S.", "Troops of the U.S. army.", True),                   # punctuation split on both sides
    ("US", "Troops of the U.S. army.", False),
    ("U.S", "the U.S. army", True),                               # a token prefix of the sequence
    ("Denver Broncos", "The Denver Broncos won Super Bowl 50.", True),  # multi-token, contiguous
    ("Broncos Denver", "The Denver Broncos won.", False),          # order matters
    ("Denver Broncos", "Denver's Broncos won.", False),            # must be contiguous
    ("1,000", "over 1,000 people", True),
    ("1000", "over 1,000 people", False),
    ("Super Bowl 50", "super bowl 50", True),
    ("Broncos", "Broncos", True),                                 # whole text
])
def test_string_match(answer, text, expected):
    assert has_answer([answer], text) is expected


def test_accents_are_matched_after_nfd_normalisation():
    composed = "Beyonc\u00e9"             # é as one code point
    decomposed = "Beyonce\u0301"          # e + combining acute
    assert has_answer([composed], f"Songs by {decomposed} in 2003")
    assert has_answer([decomposed], f"Songs by {composed} in 2003")
    assert not has_answer(["Beyonce"], f"Songs by {composed}")   # the accent is part of the token


def test_any_of_several_answers_and_empty_answers():
    assert has_answer(["nothing here", "Denver"], "Denver won")
    assert not has_answer(["Carolina", "Panthers"], "Denver won")
    assert not has_answer([], "Denver won")
    assert not has_answer(["", "  ", "."], "Denver won")         # blank answers never match
    assert has_answer(["."], "Denver won.")                      # a symbol is a real token


def test_regex_match_curatedtrec_style():
    text = "The war ended in 1945 after six years."
    assert has_answer([r"19[34]\d"], text, match="regex")
    assert not has_answer([r"18\d\d"], text, match="regex")
    assert has_answer([r"SIX\s+years"], text, match="regex")                 # IGNORECASE
    assert has_answer([r"^the war"], "intro\nThe war began", match="regex")  # MULTILINE
    # an invalid pattern is skipped (DPR), the others are still tried
    assert not has_answer(["(unclosed"], text, match="regex")
    assert has_answer(["(unclosed", r"ended"], text, match="regex")
    # regex mode searches substrings: unlike string mode, "cat" is found in "category"
    assert has_answer(["cat"], "category", match="regex")
    assert has_answer(["caf\u00e9"], "a cafe\u0301 in town", match="regex")  # both NFD-normalised


def test_matcher_reuse_and_bad_match_type():
    m = AnswerMatcher(["Denver Broncos", "Broncos"])
    assert [m(t) for t in ["the broncos", "Denver", "denver broncos!"]] == [True, False, True]
    with pytest.raises(ValueError):
        AnswerMatcher(["x"], match="exact")


def dpr_reference_has_answer(answers, text):
    """facebookresearch/DPR's has_answer (string mode), written out plainly: no pre-check."""
    import regex

    tok = regex.compile(r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])",
                        flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE)

    def words(s):
        return [m.group().lower() for m in tok.finditer(unicodedata.normalize("NFD", s))]

    text_words = words(text)
    for answer in answers:
        a = words(answer)
        if not a:
            continue  # dpr-jax: a blank answer never matches (DPR: always)
        if any(a == text_words[i:i + len(a)] for i in range(len(text_words) - len(a) + 1)):
            return True
    return False


def test_fast_matcher_agrees_with_plain_dpr_algorithm_on_squad(squad_dev_file):
    """All answers of 60 SQuAD articles' questions against paragraphs of the same article (many
    true and false pairs), plus Greek final-sigma and dotted-I cases for the substring pre-check."""
    import json

    data = json.loads(squad_dev_file.read_text())["data"]
    pairs = []
    for article in data[::8]:
        paras = [p["context"] for p in article["paragraphs"][:6]]
        for p in article["paragraphs"][:6]:
            for qa in p["qas"][:3]:
                answers = [a["text"] for a in qa["answers"]]
                pairs += [(answers, text) for text in paras]
    pairs += [(["ΟΔΟΣ"], "η ΟΔΟΣ'Α εδώ"), (["οδος"], "στην ΟΔΟΣ."), (["ΟΔΟΣ'Α"], "η οδοσ'α"),
              (["İstanbul"], "in istanbul"), (["i̇stanbul"], "İSTANBUL today"), (["straße"], "STRASSE")]
    got = [AnswerMatcher(a)(t) for a, t in pairs]
    expected = [dpr_reference_has_answer(a, t) for a, t in pairs]
    assert got == expected
    assert 0.05 < sum(expected) / len(expected) < 0.9  # both outcomes well represented
