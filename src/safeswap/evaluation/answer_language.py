"""Whether an answer is written in the prompt's language: by script, and for Latin-script languages by function words.

Korean, Chinese, Arabic, Thai and Bengali have scripts of their own: an answer is
in the language when at least half of its letters are in that script. English,
Italian, Vietnamese, Swahili and Javanese share the Latin script: an answer is in
one of them when at least half of its letters are Latin and that language's
function words (a short written list per language in data/answer_language.json,
e.g. "il, la, di, che" for Italian) are the most frequent among the five.
Vietnamese also counts its distinctive letters (ơ, ư, đ and the stacked tone
marks). An answer with no letters, or a Latin one with no function word at all,
counts as not in the language: it gives no evidence that the model writes that
language. Used by the demo's table and by the search's generation stage.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES
from safeswap.evaluation.results import Rate, rate


@lru_cache(maxsize=None)
def _table() -> dict:
    text = resources.files("safeswap.evaluation").joinpath("data", "answer_language.json").read_text(encoding="utf-8")
    return {code: entry for code, entry in json.loads(text).items() if not code.startswith("_")}


def script_info(language: str) -> dict:
    """{"script", "function_words"?} of a MultiJail language code, or a SafeswapError."""
    if language not in _table():
        raise SafeswapError(f"no script known for language {language!r}; known: {', '.join(MULTIJAIL_LANGUAGES)}")
    return _table()[language]


SCRIPT_RANGES = {
    "hangul": ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)),
    "han": ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "thai": ((0x0E00, 0x0E7F),),
    "bengali": ((0x0980, 0x09FF),),
}
LATIN_LANGUAGES = tuple(code for code in MULTIJAIL_LANGUAGES if script_info(code)["script"] == "latin")
VIETNAMESE_LETTERS = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def script_of(char: str) -> str | None:
    """The script of a letter: one of SCRIPT_RANGES, 'latin', or None for other letters."""
    code = ord(char)
    for script, ranges in SCRIPT_RANGES.items():
        if any(low <= code <= high for low, high in ranges):
            return script
    if char.isalpha() and (code < 0x0250 or 0x1E00 <= code <= 0x1EFF):
        return "latin"
    return None


def script_shares(text: str) -> dict[str, float]:
    """Share of the text's letters in each script."""
    letters = [c for c in text if c.isalpha()]
    counts: dict[str, int] = {}
    for char in letters:
        script = script_of(char) or "other"
        counts[script] = counts.get(script, 0) + 1
    return {script: n / len(letters) for script, n in counts.items()} if letters else {}


def latin_language(text: str) -> str | None:
    """The Latin-script MultiJail language whose function words the text uses most, or None."""
    words = [w.casefold() for w in _WORD.findall(text)]
    if not words:
        return None
    scores = {}
    for code in LATIN_LANGUAGES:
        vocabulary = set(script_info(code)["function_words"])
        scores[code] = sum(w in vocabulary for w in words)
    scores["vi"] += sum(c in VIETNAMESE_LETTERS for c in text.casefold()) / 2
    best = max(scores, key=lambda code: (scores[code], code == "en"))
    return best if scores[best] > 0 else None


def is_in_language(text: str, language: str) -> bool:
    """Whether an answer is written in `language` (a MultiJail code), by script and function words."""
    script = script_info(language)["script"]
    shares = script_shares(text)
    if shares.get(script, 0.0) < 0.5:
        return False
    if script != "latin":
        return True
    return latin_language(text) == language


def in_language_rate(texts: list[str], language: str) -> Rate:
    """Share of texts written in `language`, as a rate with its 95% Wilson interval."""
    k = sum(is_in_language(t, language) for t in texts)
    return rate(k, len(texts))
