"""Which lm-eval task measures which general benchmark (Belebele, MMMLU, MGSM) in which language.

The facts per language are rows of safeswap.evaluation.languages.TABLE; this
module turns them into lm-eval 0.4.13 task names and reports a missing task as
None, so that a result can write "n/a" for the gap instead of leaving it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import ALL_LANGUAGES, TABLE

BENCHMARKS = ("belebele", "mmmlu", "mgsm")
LANGUAGES = ALL_LANGUAGES

BELEBELE_TASKS = {row.code: f"belebele_{row.flores}" for row in TABLE}
MMMLU_TASKS = {row.code: row.mmmlu for row in TABLE if row.mmmlu}
MMMLU_STAND_INS = {row.code: row.mmmlu_stand_in for row in TABLE if row.mmmlu_stand_in}
MGSM_LANGUAGES = tuple(row.code for row in TABLE if row.mgsm)
# Tasks are named one by one: the tag `mgsm_cot_native` would also pull English-CoT variants.
MGSM_VARIANTS = {"native-cot": "mgsm_native_cot_{}", "direct": "mgsm_direct_{}"}


@dataclass(frozen=True)
class TaskChoice:
    """The lm-eval task that measures one benchmark in one language."""

    task: str
    stand_in: bool = False


def task_for(benchmark: str, language: str, mgsm_variant: str = "native-cot", stand_ins: bool = False) -> TaskChoice | None:
    """The task for a (benchmark, language) pair, or None where the benchmark has no such language."""
    if benchmark == "belebele":
        name = BELEBELE_TASKS.get(language)
        return TaskChoice(name) if name else None
    if benchmark == "mmmlu":
        if language in MMMLU_TASKS:
            return TaskChoice(MMMLU_TASKS[language])
        if stand_ins and language in MMMLU_STAND_INS:
            return TaskChoice(MMMLU_STAND_INS[language], stand_in=True)
        return None
    if benchmark == "mgsm":
        if mgsm_variant not in MGSM_VARIANTS:
            raise SafeswapError(f"unknown MGSM variant {mgsm_variant!r}; choose one of {', '.join(MGSM_VARIANTS)}")
        return TaskChoice(MGSM_VARIANTS[mgsm_variant].format(language)) if language in MGSM_LANGUAGES else None
    raise SafeswapError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")


def task_plan(
    languages: Iterable[str],
    benchmarks: Iterable[str] = BENCHMARKS,
    mgsm_variant: str = "native-cot",
    stand_ins: bool = False,
) -> dict[str, dict[str, TaskChoice | None]]:
    """{benchmark: {language: TaskChoice or None}} for the requested languages, in the given order."""
    languages = list(languages)
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise SafeswapError(f"unsupported language(s) {', '.join(unknown)}; supported: {', '.join(LANGUAGES)}")
    if not languages:
        raise SafeswapError("no languages given")
    return {b: {lang: task_for(b, lang, mgsm_variant, stand_ins) for lang in languages} for b in benchmarks}
