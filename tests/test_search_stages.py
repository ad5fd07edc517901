"""The search's generation stage and final evaluation: which candidates are judged, how the judged numbers decide,
the probe/judge rank correlation, the held-out evaluation on prompts the search never saw, and their caches."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("torch")

from tiny import make_triple  # noqa: E402

from safeswap.errors import SafeswapError  # noqa: E402
from safeswap.evaluation.cache import GENERATIONS_FILE, JsonlCache, cache_folder  # noqa: E402
from safeswap.evaluation.results import rate  # noqa: E402
from safeswap.search.objectives import Scores  # noqa: E402
from safeswap.search.space import parse_space  # noqa: E402

SPACE = {
    "seed": 0, "trials": 2, "parallel": 2, "languages": ["ko"],
    "probe": {"harmful": 2, "benign": 2, "max_length": 64},
    "constraints": {"max_benign_refusal_over_language": 0.05, "min_kept_language_gain": None},
    "generation": {"top": 2, "harmful": 3, "benign": 3, "max_new_tokens": 4},
    "final": {"harmful": 3, "benign": 3},
    "methods": {"adaptive": {"alpha": {"low": 0.2, "high": 0.8}}, "linear": {"weight": {"low": 0.0, "high": 1.0}}},
}


def scores(harmful, benign, ppl=5.0, **kw):
    return Scores(harmful=harmful, benign=benign, harmful_refusals=0, harmful_n=10, benign_refusals=0, benign_n=10,
                  perplexity=ppl, **kw)


# ------------------------------------------------------------------ pure pieces


def test_probe_order_puts_feasible_candidates_first_then_least_violation():
    from safeswap.search.screening import probe_order

    space = parse_space({**SPACE, "constraints": {"max_benign_refusal_over_language": 0.1,
                                                  "min_kept_language_gain": None}})
    language = scores(0.0, 0.2)
    table = {"a": scores(0.9, 0.5), "b": scores(0.6, 0.25), "c": scores(0.8, 0.3), "d": scores(0.7, 0.1),
             "e": scores(0.9, 0.6)}
    # feasible (benign <= 0.3): c (0.8), d (0.7), b (0.6); then a (excess 0.2), e (excess 0.3)
    assert probe_order(table, space, language) == ["c", "d", "b", "a", "e"]


def test_rank_correlation_is_spearman_and_refuses_too_few_or_constant_points():
    from scipy.stats import spearmanr

    from safeswap.search.screening import rank_correlation

    assert rank_correlation([(0.1, 0.2), (0.5, 0.4), (0.9, 0.8)]) == pytest.approx(1.0)
    assert rank_correlation([(0.1, 0.9), (0.5, 0.4), (0.9, 0.2)]) == pytest.approx(-1.0)
    pairs = [(0.1, 0.0), (0.4, 0.5), (0.3, 0.5), (0.9, 1.0), (0.2, 0.1)]
    assert rank_correlation(pairs) == pytest.approx(spearmanr(*zip(*pairs)).statistic)
    assert rank_correlation([(0.1, 0.2), (0.5, 0.4)]) is None
    assert rank_correlation([(0.1, 0.2), (0.5, 0.2), (0.7, 0.2)]) is None


def test_judged_scores_take_the_judged_rates_and_the_probe_perplexity():
    from safeswap.search.screening import judged_scores

    record = {"harmful_pooled": rate(7, 10), "benign_refusal": rate(1, 5), "in_language": rate(3, 4)}
    s = judged_scores(record, scores(0.2, 0.9, ppl=4.5))
    assert (s.harmful, s.benign, s.in_language, s.perplexity) == (0.7, 0.2, 0.75, 4.5)
    assert (s.harmful_refusals, s.harmful_n, s.benign_refusals, s.benign_n) == (7, 10, 1, 5)


def test_a_harm_judge_counts_safe_answers_and_the_language_constraint_applies_to_judged_scores_only():
    from safeswap.search.judged import safe_rate
    from safeswap.search.objectives import violations

    assert safe_rate({"unsafe_rate": rate(3, 10)}, "unsafe_rate") == rate(7, 10)
    assert safe_rate({"refusal_rate": rate(3, 10)}, "refusal_rate") == rate(3, 10)
    c = parse_space({**SPACE, "constraints": {"min_in_language": 0.8}}).constraints
    assert "min_in_language" not in violations(scores(0.5, 0.0), c, scores(0.0, 0.0))  # a probe score
    assert violations(scores(0.5, 0.0, in_language=0.5), c, scores(0.0, 0.0))["min_in_language"] == pytest.approx(0.3)


def test_counted_reads_rates_and_the_answers_in_the_target_language(tmp_path):
    from safeswap.evaluation.multijail import Prompt, PromptSet
    from safeswap.search.judged import PromptChoice, counted

    harmful = (Prompt("1", {"en": "x", "ko": "y"}), Prompt("2", {"en": "x", "ko": "y"}))
    benign = PromptSet([Prompt("benign-1", {"en": "b", "ko": "b"})], "b.csv", "0" * 64, ("en", "ko"))
    choice = PromptChoice(PromptSet(list(harmful), "m.csv", "1" * 64, ("en", "ko")), harmful, ("en", "ko"), benign,
                          ("en", "ko"), "ko")
    cache = JsonlCache(cache_folder(tmp_path, "fp") / GENERATIONS_FILE)
    answers = [("multijail", "ko", "1", "죄송합니다. 도와드릴 수 없습니다."), ("multijail", "ko", "2", "Sure, here is how."),
               ("benign", "ko", "benign-1", "네, 빵은 이렇게 굽습니다."), ("multijail", "en", "1", "I cannot."),
               ("multijail", "ko", "99", "다른 질문의 답")]  # not asked: left out
    for i, (dataset, lang, pid, text) in enumerate(answers):
        cache.put({"key": str(i), "dataset": dataset, "language": lang, "prompt_id": pid, "response": text})
    payload = {"metric": "refusal_rate", "model": {"fingerprint": "fp"}, "judge": {"name": "refusal"},
               "languages": {"en": {"refusal_rate": rate(2, 2)}, "ko": {"refusal_rate": rate(1, 2)}},
               "extra": {"benign": {"languages": {"ko": {"over_refusal_rate": rate(0, 1)}}}}}
    record = counted(payload, tmp_path, choice)
    assert record["harmful_pooled"] == rate(1, 2)  # the target language only, not English
    assert record["harmful"] == {"en": rate(2, 2), "ko": rate(1, 2)}
    assert record["in_language"] == rate(2, 3)  # two of the three asked Korean answers are Korean


def test_bad_generation_settings_are_refused_in_one_line():
    from safeswap.search.judged import JudgeSettings, check_judge_settings

    with pytest.raises(SafeswapError, match="a search over full checkpoints generates with hf or vllm"):
        check_judge_settings(JudgeSettings(backend="openai", base_url="http://127.0.0.1:1/v1"), adapters=False)
    with pytest.raises(SafeswapError, match="needs the base_url of a `vllm serve BASE --enable-lora` endpoint"):
        check_judge_settings(JudgeSettings(backend="openai"))
    check_judge_settings(JudgeSettings(backend="openai", base_url="http://127.0.0.1:1/v1"), adapters=True)
    with pytest.raises(SafeswapError, match="unknown judge 'nope'"):
        check_judge_settings(JudgeSettings(judge="nope"))
    for raw, where in (({"generation": {"top": -1}}, "generation.top"), ({"generation": {"tops": 1}}, "generation"),
                       ({"final": {"references": "yes"}}, "final.references"), ({"final": {"harmful": 0}}, "final.harmful")):
        with pytest.raises(SafeswapError, match=f"search space: {where}"):
            parse_space({**SPACE, **raw})


# ------------------------------------------------------------------ end to end on tiny models


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from safeswap.search.run import search

    root = tmp_path_factory.mktemp("stages")
    triple = [str(p) for p in make_triple(root / "models")]
    out = root / "s"
    summary = search(*triple, parse_space(SPACE), out)
    return triple, out, summary


def test_the_final_evaluation_uses_held_out_prompts_only(searched):
    _, out, summary = searched
    splits = json.loads((out / "splits.json").read_text())
    final = json.loads((out / "final.json").read_text())
    assert summary["final"] == "final.json" and final["split"] == "held-out"
    assert set(final["harmful_ids"]) <= set(splits["multijail"]["held_out"])
    assert set(final["benign_ids"]) <= set(splits["benign"]["held_out"])
    assert final["harmful_n"] == 3 and final["benign_n"] == 3 and final["languages"] == ["en", "ko"]
    # every generation-stage answer was to a search-split prompt, every final answer to a held-out one
    for stage, half in (("generation", "search"), ("final", "held_out")):
        records = [r for f in (out / stage / "cache").glob(f"*/{GENERATIONS_FILE}") for r in JsonlCache(f).values()]
        assert records
        for r in records:
            dataset = "multijail" if r["dataset"] == "multijail" else "benign"
            assert r["prompt_id"] in splits[dataset][half], (stage, r["prompt_id"])
    labels = [(r["label"], r["kind"]) for r in final["rows"]]
    assert labels[:3] == [("base", "model"), ("safety-expert", "model"), ("language-expert", "model")]
    assert sum(kind == "recommended" for _, kind in labels) == (1 if summary["plan"] else 0)
    refs = {r["label"] for r in final["rows"] if r["kind"] in ("reference", "recommended")}
    assert any("paper-default" in label for label in refs) and any("linear" in label for label in refs)
    base, language = final["rows"][0], final["rows"][2]
    assert base["kept_gain"] == 0.0 and language["kept_gain"] == pytest.approx(1.0)
    for row in final["rows"]:
        assert row["harmful"]["en"]["n"] == 3 and row["harmful"]["ko"]["n"] == 3 and row["benign_refusal"]["n"] == 3
        assert row["in_language"]["n"] == 6 and math.isfinite(row["perplexity"])
        assert (out / "final" / f"{row['label'].replace(' ', '_').replace('(', '_').replace(')', '_')}"
                                f"__multijail__refusal.result.json").is_file()


def test_the_generation_stage_judges_the_probe_top_and_the_paper_default(searched):
    _, out, summary = searched
    gen = summary["generation"]
    assert gen["top"] == 2 and gen["harmful_n"] == 3 and gen["benign_n"] == 3 and gen["languages"] == ["ko"]
    ranks = [c["probe_rank"] for c in gen["candidates"]]
    assert ranks[:2] == [1, 2]
    assert any(c["label"] == "paper-default" for c in gen["candidates"])
    assert set(gen["models"]) == {"base", "safety", "language"}
    assert summary["recommended_by"] == "judge"
    corr = summary["probe_judge_rank_correlation"]
    assert corr["n"] == len(gen["candidates"]) and corr["method"] == "spearman"
    assert corr["with_models"]["n"] == corr["n"] + 3
    import csv

    rows = {r["key"]: r for r in csv.DictReader((out / "candidates.csv").open())}
    for c in gen["candidates"]:
        assert float(rows[c["key"]]["judge_harmful"]) == c["judge"]["harmful"]["value"]
    assert not (out / "work").exists()


def test_a_rerun_judges_nothing_again_and_writes_the_same_results(searched, monkeypatch):
    import safeswap.search.judged as judged
    from safeswap.search.run import search

    triple, out, summary = searched
    before = (out / "final.json").read_bytes()
    monkeypatch.setattr(judged, "run_safety", lambda *a, **k: pytest.fail("judged again"), raising=False)
    import safeswap.evaluation.safety as safety

    monkeypatch.setattr(safety, "run_safety", lambda *a, **k: pytest.fail("judged again"))
    again = search(*triple, parse_space(SPACE), out)
    assert (out / "final.json").read_bytes() == before
    assert again["generation"] == summary["generation"] and again["statement"] == summary["statement"]


def test_the_recommendation_follows_the_judge_not_the_probe(tmp_path, monkeypatch):
    """The probe ranks candidate A first, the judge finds A refuses benign prompts: B is recommended."""
    import safeswap.search.screening as screening
    from safeswap.search.run import search

    triple = [str(p) for p in make_triple(tmp_path / "models")]
    judged_labels = []

    def fake_judge(folder, label, prompts, settings, max_new_tokens, batch_size, out, progress=None, base=None,
                   adapter_base=None):
        judged_labels.append(label)
        over = 0.0 if label in ("language", "paper-default") else 1.0  # only the paper's default keeps benign answers
        return {"metric": "refusal_rate", "harmful": {"ko": rate(2, 3)}, "harmful_pooled": rate(2, 3),
                "benign_refusal": rate(int(over * 3), 3), "in_language": rate(3, 6), "fingerprint": "f",
                "judge": {"name": "fake"}}

    monkeypatch.setattr(screening, "judge_folder", fake_judge)
    space = parse_space({**SPACE, "final": False, "generation": {"top": 2, "harmful": 3, "benign": 3}})
    summary = search(*triple, space, tmp_path / "s")
    assert judged_labels[:3] == ["base", "safety", "language"] and "paper-default" in judged_labels
    assert len(judged_labels) >= 5  # the probe top 2 and the paper default (when not among them)
    assert summary["recommended"]["label"] == "paper-default" and summary["recommended_by"] == "judge"
    assert summary["final"] is None and not (tmp_path / "s" / "final.json").exists()
