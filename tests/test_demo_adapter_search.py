"""The demo's handed-back plan (recommended, else best with its misses), its table label and README lines, and the
largest logit difference between an adapter on its base and the same merge in full weights."""

from pathlib import Path

import pytest

from safeswap.demo.search_stage import DemoSearch
from safeswap.demo.summary import adapter_section, search_section, table


def summary(**extra):
    return {"candidates": 5, "trials": 4, "recommended_by": "judge", "plan": None, "best_plan": None,
            "recommended": None, "best": None, "best_misses": {}, "statement": "no candidate met every constraint",
            **extra}


def test_the_demo_replays_the_recommended_plan_else_the_best_one_with_its_misses(tmp_path):
    recommended = DemoSearch(tmp_path, summary(plan=str(tmp_path / "recommended-plan.yaml")), {})
    assert recommended.plan == tmp_path / "recommended-plan.yaml" and recommended.misses is None
    best = DemoSearch(tmp_path, summary(best_plan=str(tmp_path / "best-plan.yaml"),
                                        best_misses={"min_harmful_refusal_over_language": 0.1523}), {})
    assert best.plan == tmp_path / "best-plan.yaml"
    assert best.misses == "min_harmful_refusal_over_language by 0.152"
    nothing = DemoSearch(tmp_path, summary(), {})
    assert nothing.plan is None and nothing.misses is None


def test_a_best_only_row_is_labelled_with_its_misses_and_the_readme_says_so(tmp_path):
    rate = {"k": 1, "n": 2, "value": 0.5, "low": 0.1, "high": 0.9}
    result = {"metric": "refusal_rate", "languages": {"en": {"refusal_rate": rate}, "ko": {"refusal_rate": rate}},
              "extra": {"benign": {"languages": {"ko": {"over_refusal_rate": rate}}}}}
    rows = [{"model": "merge-searched", "note": "best only: misses x by 0.1", "result": result,
             "in_language": {"ko": rate}, "perplexity": 3.0, "kept_language_gain": 0.5}]
    assert "| merge-searched (best only: misses x by 0.1) |" in table(rows, "ko")
    best = {"method": "adaptive", "values": {"alpha": 0.3}}
    searched = DemoSearch(tmp_path / "search", summary(best=best, best_plan="b", best_misses={"x": 0.1},
                                                       replay="safeswap merge --plan b --output adapter --out DIR"), {})
    text = "\n".join(search_section(searched, tmp_path))
    assert "handed back its best: adaptive {'alpha': 0.3} (plan: `search/best-plan.yaml`), which misses x by 0.1" in text
    assert "`safeswap merge --plan b --output adapter --out DIR`" in text
    lines = adapter_section({"folder": str(tmp_path / "models" / "a"), "prompts": 12,
                             "max_abs_logit_difference": 0.0123}, tmp_path)
    assert "**0.0123**" in lines[1] and "`models/a`" in lines[1] and "12 of the demo's held-out prompts" in lines[1]


def test_the_logit_difference_is_zero_for_the_same_merge_and_not_for_another(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    import shutil

    import tiny
    from test_adapters import make_adapter

    from safeswap.demo.adapter_check import max_logit_difference

    base = tiny.make_model(tmp_path / "base", "llama", layers=2, dtype=torch.float32)
    adapter, merged = make_adapter(base, tmp_path / "a", ["q_proj", "up_proj"], 4, 8, 5, dtype=torch.float32)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (base / name).is_file():
            shutil.copy(base / name, merged / name)
    prompts = ["안녕하세요", "How do I bake bread?"]
    assert max_logit_difference(base, adapter, merged, prompts) < 1e-4
    assert max_logit_difference(base, adapter, base, prompts) > 1e-3  # the adapter really changes the model
