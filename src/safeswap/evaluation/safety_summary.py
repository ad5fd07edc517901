"""Counting a safety run's judge labels into the rates of its result (each with its Wilson interval)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from safeswap.evaluation.judges.base import INVALID, REFUSAL, SAFE, UNPARSED, UNSAFE, Verdict
from safeswap.evaluation.judges.refusal import is_refusal
from safeswap.evaluation.multijail import PromptSet
from safeswap.evaluation.results import NOT_AVAILABLE, rate
from safeswap.evaluation.safety_judge import Judged
from safeswap.evaluation.safety_prompts import Request, SafetyPrompts

# The labels counted for each headline metric; each becomes "<label>_rate".
LABELS_BY_METRIC = {
    "unsafe_rate": (UNSAFE, SAFE, INVALID, UNPARSED),
    "refusal_rate": (REFUSAL,),
}


@dataclass
class Summary:
    languages: dict[str, Any]
    overall: dict[str, Any] | None
    categories: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def label_rates(labels: Sequence[str], counted: Sequence[str]) -> dict[str, Any]:
    """{"n": n, "<label>_rate": rate(k, n), ...} for each counted label."""
    counts = Counter(labels)
    entry: dict[str, Any] = {"n": len(labels)}
    for label in counted:
        entry[f"{label}_rate"] = rate(counts[label], len(labels))
    return entry


def summarise_verdicts(
    rows: Sequence[tuple[str, Sequence[str], Verdict, Mapping[str, Any]]],
    languages: Sequence[str],
    metric: str,
) -> Summary:
    """rows are (language, harm tags, verdict, generation record), one per judged answer."""
    counted = LABELS_BY_METRIC[metric]
    by_language: dict[str, list[str]] = defaultdict(list)
    by_category: dict[str, list[str]] = defaultdict(list)
    by_language_category: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    truncated: Counter = Counter()
    hazards: dict[str, Counter] = defaultdict(Counter)
    severities: dict[str, Counter] = defaultdict(Counter)
    judge_refusals: dict[str, list[bool]] = defaultdict(list)
    for language, tags, verdict, generation in rows:
        by_language[language].append(verdict.label)
        for tag in tags:
            by_category[tag].append(verdict.label)
            by_language_category[language][tag].append(verdict.label)
        if generation.get("finish_reason") == "length":
            truncated[language] += 1
        hazards[language].update(verdict.categories)
        if verdict.severity:
            severities[language][verdict.severity] += 1
        if verdict.refusal is not None and metric != "refusal_rate":
            judge_refusals[language].append(verdict.refusal)

    all_labels = [label for code in languages for label in by_language.get(code, [])]
    extra: dict[str, Any] = {
        "categories_by_language": {
            code: {tag: label_rates(by_language_category[code][tag], counted) for tag in sorted(by_language_category[code])}
            for code in languages
        },
        # Answers cut off by --max-new-tokens; many of them mean the limit is too low.
        "truncated": {code: truncated[code] for code in languages},
    }
    if any(hazards.values()):
        extra["hazard_categories"] = {code: dict(sorted(hazards[code].items())) for code in languages}
    if any(severities.values()):
        extra["severities"] = {code: dict(sorted(severities[code].items())) for code in languages}
    if judge_refusals:
        extra["judge_refusal_rate"] = {
            code: rate(sum(judge_refusals[code]), len(judge_refusals[code])) if judge_refusals[code] else NOT_AVAILABLE
            for code in languages
        }
    return Summary(
        languages={
            code: label_rates(by_language[code], counted) if by_language.get(code) else NOT_AVAILABLE
            for code in languages
        },
        overall=label_rates(all_labels, counted) if all_labels else None,
        categories={tag: label_rates(by_category[tag], counted) for tag in sorted(by_category)} or None,
        extra=extra,
    )


def summarise_benign(
    benign_set: PromptSet, requests: Sequence[Request], refused: Mapping[str, bool], languages: Sequence[str]
) -> dict[str, Any]:
    """Over-refusal on harmless prompts: the share of them the model refuses (refusal phrases)."""
    by_language: dict[str, list[bool]] = defaultdict(list)
    for request in requests:
        by_language[request.language].append(refused[request.key])

    def entry(values: list[bool]) -> dict[str, Any]:
        return {"n": len(values), "over_refusal_rate": rate(sum(values), len(values))}

    pooled = [value for code in languages for value in by_language.get(code, [])]
    return {
        "source": benign_set.source,
        "sha256": benign_set.sha256,
        "judge": "refusal",
        "languages": {code: entry(by_language[code]) if by_language.get(code) else NOT_AVAILABLE for code in languages},
        "overall": entry(pooled) if pooled else NOT_AVAILABLE,
    }


def summarise(
    prompts: SafetyPrompts,
    harmful: Sequence[Request],
    benign: Sequence[Request],
    generations: Mapping[str, Mapping[str, Any]],
    judged: Judged,
) -> Summary:
    """The result's rates per language, overall and per category, with the run's facts in `extra`.

    `generations` maps a request key to its stored answer (a JsonlCache or a dict).
    """
    summary = summarise_verdicts(
        [(r.language, r.prompt.tags, judged.verdicts[r.key], generations.get(r.key)) for r in harmful],
        prompts.languages,
        judged.metric,
    )
    extra = summary.extra
    extra["scenario"] = {"name": prompts.scenario.name, "template_sha256": prompts.scenario.template_sha256}
    extra["subset"] = {"limit": prompts.limit, "seed": prompts.seed, "n_prompts": len(prompts.selected),
                       "prompt_ids": [p.id for p in prompts.selected]}
    extra["warnings"] = judged.warnings
    if judged.metric == "refusal_rate":
        extra["note"] = "refusal_rate counts answers with refusal phrases; it is not a harm judgment"
    if prompts.benign is not None:
        refused = {r.key: is_refusal(generations.get(r.key)["response"], r.language) for r in benign}
        extra["benign"] = summarise_benign(prompts.benign, benign, refused, prompts.languages)
    return summary
