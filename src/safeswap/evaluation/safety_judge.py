"""Judging a safety run's answers: labels the cache lacks are asked of the judge, the rest reused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from safeswap.evaluation.cache import JsonlCache, judgement_key
from safeswap.evaluation.judges import Judge, JudgeItem, JudgeOptions, Verdict, make_judge
from safeswap.evaluation.safety_prompts import Request
from safeswap.progress import StageProgress


@dataclass(frozen=True)
class Judged:
    """The judge's identity and metric, its warnings, and one verdict per generation key."""

    identity: dict[str, Any]
    metric: str  # "unsafe_rate" or "refusal_rate"
    warnings: list[str]
    verdicts: dict[str, Verdict]


def judge_missing(
    requests: Sequence[Request],
    generations: JsonlCache,
    judgements: JsonlCache,
    judge: Judge,
    identity: Mapping[str, Any],
    progress: StageProgress | None,
) -> int:
    """Label the answers `judgements` lacks, storing each label as it comes; returns how many were asked."""
    todo = [r for r in requests if judgement_key(r.key, identity) not in judgements]
    if not todo:
        return 0
    items = [
        JudgeItem(
            prompt=r.prompt.texts[r.language],
            response=generations.get(r.key)["response"],
            language=r.language,
            prompt_en=r.prompt.texts.get("en"),
        )
        for r in todo
    ]
    if progress:
        progress("judge", 0, len(todo))
    for done, (index, verdict) in enumerate(judge.judge(items), start=1):
        request = todo[index]
        judgements.put(
            {"key": judgement_key(request.key, identity), "generation_key": request.key, **verdict.as_record()}
        )
        if progress:
            progress("judge", done, len(todo))
    return len(todo)


def judge_answers(
    requests: Sequence[Request],
    generations: JsonlCache,
    options: JudgeOptions,
    judgements: JsonlCache,
    languages: Sequence[str],
    notify: Callable[[str], None],
    progress: StageProgress | None = None,
) -> Judged:
    """Every request's verdict, from the cache or the judge of `options` (closed before returning)."""
    judge = make_judge(options)
    try:
        identity = judge.info().as_dict()
        warnings = [w for w in [judge.language_warning(languages)] if w]
        for warning in warnings:
            notify(warning)
        judge_missing(requests, generations, judgements, judge, identity, progress)
    finally:
        judge.close()
    verdicts = {r.key: Verdict.from_record(judgements.get(judgement_key(r.key, identity))) for r in requests}
    return Judged(identity, judge.metric, warnings, verdicts)
