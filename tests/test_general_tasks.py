"""Which lm-eval task measures which benchmark in which language, and the gaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeswap.errors import SafeswapError
from safeswap.evaluation.general_tasks import (
    BELEBELE_TASKS,
    LANGUAGES,
    MGSM_LANGUAGES,
    MGSM_VARIANTS,
    MMMLU_STAND_INS,
    MMMLU_TASKS,
    TaskChoice,
    task_plan,
)


def _names(plan):
    return {b: {lang: (c.task if c else None) for lang, c in per.items()} for b, per in plan.items()}


def test_paper_languages_map_to_lm_eval_names_with_gaps_as_none():
    plan = _names(task_plan(["ko", "sw", "te", "bn"]))
    assert plan == {
        "belebele": {"ko": "belebele_kor_Hang", "sw": "belebele_swh_Latn", "te": "belebele_tel_Telu", "bn": "belebele_ben_Beng"},
        "mmmlu": {"ko": "mmmlu_ko_kr", "sw": "mmmlu_sw_ke", "te": None, "bn": "mmmlu_bn_bd"},
        "mgsm": {"ko": None, "sw": "mgsm_native_cot_sw", "te": "mgsm_native_cot_te", "bn": "mgsm_native_cot_bn"},
    }


def test_every_language_has_belebele_and_the_documented_gaps_elsewhere():
    plan = task_plan(LANGUAGES)
    assert all(plan["belebele"][lang] for lang in LANGUAGES)
    assert [lang for lang in LANGUAGES if plan["mmmlu"][lang] is None] == ["vi", "th", "jv", "te"]
    assert [lang for lang in LANGUAGES if plan["mgsm"][lang] is None] == ["it", "vi", "ar", "ko", "jv"]


def test_stand_ins_fill_only_what_global_mmlu_covers_and_are_marked():
    plan = task_plan(["vi", "th", "jv", "te", "ko"], ["mmmlu"], stand_ins=True)["mmmlu"]
    assert plan["vi"] == TaskChoice("global_mmlu_full_vi", stand_in=True)
    assert plan["te"] == TaskChoice("global_mmlu_full_te", stand_in=True)
    assert plan["th"] is None and plan["jv"] is None
    assert plan["ko"] == TaskChoice("mmmlu_ko_kr", stand_in=False)


def test_mgsm_tasks_are_named_one_by_one_per_variant():
    direct = _names(task_plan(["sw", "zh"], ["mgsm"], mgsm_variant="direct"))["mgsm"]
    assert direct == {"sw": "mgsm_direct_sw", "zh": "mgsm_direct_zh"}
    with pytest.raises(SafeswapError, match="unknown MGSM variant 'english-cot'"):
        task_plan(["sw"], ["mgsm"], mgsm_variant="english-cot")


def test_unknown_language_or_benchmark_is_a_clear_error():
    with pytest.raises(SafeswapError, match=r"unsupported language\(s\) xx"):
        task_plan(["ko", "xx"])
    with pytest.raises(SafeswapError, match="unknown benchmark 'hellaswag'"):
        task_plan(["ko"], ["hellaswag"])


def test_every_mapped_name_is_a_task_of_the_installed_lm_eval():
    import lm_eval
    from lm_eval.tasks import TaskManager

    # Index only the benchmark folders (the full index takes several times longer).
    root = Path(lm_eval.__file__).parent / "tasks"
    folders = ["belebele", "openai-mmmlu", "mgsm", "global_mmlu/full/te", "global_mmlu/full/vi", "mmlu/default"]
    manager = TaskManager(include_path=[str(root / f) for f in folders], include_defaults=False)
    names = set(BELEBELE_TASKS.values()) | set(MMMLU_TASKS.values()) | set(MMMLU_STAND_INS.values())
    names |= {pattern.format(lang) for pattern in MGSM_VARIANTS.values() for lang in MGSM_LANGUAGES}
    assert len(names) == 11 + 7 + 2 + 12
    assert sorted(n for n in names if n not in manager.all_tasks) == []
