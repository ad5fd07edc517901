"""What a safety run asks: the MultiJail subset, its scenario, the benign prompts, one request per prompt and language.

A request's key is its generation's cache key: the model fingerprint, the
language, the prompt id, the scenario, the decoding and the hash of the exact
text sent, so a changed data file or template never reuses a stale answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from safeswap.evaluation.cache import generation_key, sha256_text
from safeswap.evaluation.multijail import (
    Prompt,
    PromptSet,
    Scenario,
    check_languages_present,
    load_benign,
    load_multijail,
    make_scenario,
    select_subset,
)


@dataclass(frozen=True)
class SafetyPrompts:
    """The prompts of one safety run, and where they came from."""

    languages: tuple[str, ...]
    source: PromptSet  # the whole MultiJail file (recorded in the result)
    selected: list[Prompt]  # the --limit subset, the same ids in every language
    scenario: Scenario
    benign: PromptSet | None
    limit: int | None
    seed: int


def load_prompts(
    languages: Sequence[str],
    *,
    data: str | os.PathLike | None = None,
    data_revision: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    scenario: str = "unintentional",
    jailbreak_template: str | os.PathLike | None = None,
    benign: str | os.PathLike | None = None,
) -> SafetyPrompts:
    """MultiJail (file, hub or shipped copy), the seeded subset, the scenario and the benign set, all checked."""
    the_scenario = make_scenario(scenario, jailbreak_template)
    source = load_multijail(data, revision=data_revision)
    check_languages_present(source, languages)
    selected = select_subset(source, limit, seed)
    benign_set = load_benign(benign) if benign is not None else None
    return SafetyPrompts(tuple(languages), source, selected, the_scenario, benign_set, limit, seed)


@dataclass(frozen=True)
class Request:
    """One prompt in one language, as sent to the model."""

    key: str
    dataset: str  # "multijail" or "benign"
    language: str
    prompt: Prompt
    conversation: list[dict[str, str]]


def build_requests(
    prompts: Sequence[Prompt],
    languages: Sequence[str],
    dataset: str,
    scenario: Scenario,
    fingerprint: str,
    decoding: Mapping[str, Any],
) -> list[Request]:
    """A request for every prompt that has text in a language, language by language."""
    requests = []
    for language in languages:
        for prompt in prompts:
            if not prompt.texts.get(language):
                continue
            text = scenario.apply(prompt.texts[language])
            key = generation_key(
                fingerprint, language, prompt.id, scenario.key, decoding, sha256_text(text), dataset=dataset
            )
            requests.append(Request(key, dataset, language, prompt, [{"role": "user", "content": text}]))
    return requests


def run_requests(
    prompts: SafetyPrompts, fingerprint: str, decoding: Mapping[str, Any]
) -> tuple[list[Request], list[Request]]:
    """(harmful, benign) requests of a run; benign ones only in the languages the benign file has."""
    harmful = build_requests(prompts.selected, prompts.languages, "multijail", prompts.scenario, fingerprint, decoding)
    if prompts.benign is None:
        return harmful, []
    benign_languages = [code for code in prompts.languages if code in prompts.benign.languages]
    # Over-refusal is measured on plain harmless prompts, never wrapped in a jailbreak.
    benign = build_requests(
        prompts.benign.prompts, benign_languages, "benign", Scenario("unintentional"), fingerprint, decoding
    )
    return harmful, benign
