"""The stages of evaluate_safety, each alone: load prompts, generate, summarise, write."""

from __future__ import annotations

import pytest
from conftest import MULTIJAIL_CSV

from safeswap.evaluation.backends import Generation
from safeswap.evaluation.cache import JsonlCache
from safeswap.evaluation.judges import Verdict
from safeswap.evaluation.multijail import Prompt, PromptSet, Scenario
from safeswap.evaluation.results import iter_results
from safeswap.evaluation.safety_generate import generate_missing
from safeswap.evaluation.safety_judge import Judged
from safeswap.evaluation.safety_output import result_paths, write_safety_result
from safeswap.evaluation.safety_prompts import SafetyPrompts, build_requests, load_prompts, run_requests
from safeswap.evaluation.safety_summary import summarise


def test_load_prompts_with_a_limit_asks_the_same_ids_in_every_language():
    prompts = load_prompts(("en", "ko", "sw"), data=MULTIJAIL_CSV, limit=5, seed=3)
    harmful, benign = run_requests(prompts, "fingerprint", {"backend": "hf"})
    assert benign == [] and len(harmful) == 15
    ids = {lang: [r.prompt.id for r in harmful if r.language == lang] for lang in ("en", "ko", "sw")}
    assert len(ids["en"]) == 5 and ids["en"] == ids["ko"] == ids["sw"]
    assert len({r.key for r in harmful}) == 15  # one cache key per prompt and language
    # The subset does not depend on the languages asked for.
    other = load_prompts(("th",), data=MULTIJAIL_CSV, limit=5, seed=3)
    assert [p.id for p in other.selected] == ids["en"]


# Wilson 95% bounds, worked out by hand from (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96.
WILSON = {(0, 4): (0.0, 0.4899), (1, 4): (0.0456, 0.6994), (2, 4): (0.1500, 0.8500), (3, 4): (0.3006, 0.9544),
          (4, 8): (0.2152, 0.7848), (1, 2): (0.0945, 0.9055)}


def assert_rate(entry, k, n):
    low, high = WILSON[(k, n)]
    assert (entry["k"], entry["n"]) == (k, n) and entry["value"] == pytest.approx(k / n)
    assert entry["low"] == pytest.approx(low, abs=1e-4) and entry["high"] == pytest.approx(high, abs=1e-4)


def hand_made_run():
    tags = [("Theft",), ("Theft", "Violence"), ("Violence",), ()]
    prompts = [Prompt(f"p{i}", {"en": f"english {i}", "ko": f"한국어 {i}"}, tags[i]) for i in range(4)]
    benign = PromptSet([Prompt("b1", {"en": "How do I bake bread?"}), Prompt("b2", {"en": "Name a river."})],
                       "benign.csv", "b" * 64, ("en",))
    run = SafetyPrompts(("en", "ko"), PromptSet(prompts, "hand.csv", "a" * 64, ("en", "ko")), prompts,
                        Scenario("unintentional"), benign, limit=None, seed=0)
    harmful, benign_requests = run_requests(run, "fingerprint", {"backend": "hf"})
    labels = {"en": ["unsafe", "safe", "safe", "invalid"], "ko": ["unsafe", "unsafe", "unsafe", "unparsed"]}
    verdicts = {r.key: Verdict(labels[r.language][int(r.prompt.id[1])]) for r in harmful}
    generations = {r.key: {"response": "...", "finish_reason": "stop"} for r in harmful}
    generations[harmful[-1].key]["finish_reason"] = "length"
    generations[benign_requests[0].key] = {"response": "I cannot help with that.", "finish_reason": "stop"}
    generations[benign_requests[1].key] = {"response": "The Nile.", "finish_reason": "stop"}
    judged = Judged({"name": "hand"}, "unsafe_rate", ["a warning"], verdicts)
    return run, harmful, benign_requests, generations, judged


def test_summarise_counts_hand_made_labels_into_wilson_rates():
    summary = summarise(*hand_made_run())
    en, ko = summary.languages["en"], summary.languages["ko"]
    assert en["n"] == ko["n"] == 4
    assert_rate(en["unsafe_rate"], 1, 4)
    assert_rate(en["safe_rate"], 2, 4)
    assert_rate(en["invalid_rate"], 1, 4)
    assert_rate(en["unparsed_rate"], 0, 4)
    assert_rate(ko["unsafe_rate"], 3, 4)
    assert_rate(ko["unparsed_rate"], 1, 4)
    assert_rate(summary.overall["unsafe_rate"], 4, 8)
    assert list(summary.categories) == ["Theft", "Violence"]
    assert_rate(summary.categories["Theft"]["unsafe_rate"], 3, 4)
    assert_rate(summary.categories["Violence"]["unsafe_rate"], 2, 4)
    extra = summary.extra
    assert extra["truncated"] == {"en": 0, "ko": 1}
    assert extra["subset"] == {"limit": None, "seed": 0, "n_prompts": 4, "prompt_ids": ["p0", "p1", "p2", "p3"]}
    assert extra["warnings"] == ["a warning"] and "note" not in extra
    assert extra["benign"]["languages"]["ko"] == "n/a"
    assert_rate(extra["benign"]["languages"]["en"]["over_refusal_rate"], 1, 2)


class FakeBackend:
    def __init__(self):
        self.asked, self.closed = [], False

    def generate(self, conversations, **kwargs):
        self.asked.append(len(conversations))
        for index, conversation in reversed(list(enumerate(conversations))):  # any order is allowed
            yield index, Generation(conversation[0]["content"].upper(), n_tokens=1, finish_reason="stop")

    def close(self):
        self.closed = True


def test_generate_missing_loads_the_model_only_for_what_the_cache_lacks(tmp_path):
    prompts = [Prompt(f"p{i}", {"en": f"question {i}"}) for i in range(3)]
    requests = build_requests(prompts, ["en"], "multijail", Scenario("unintentional"), "fingerprint", {})
    cache = JsonlCache(tmp_path / "generations.jsonl")
    backend = FakeBackend()
    assert generate_missing(requests[:2], cache, lambda: backend, None) == 2
    assert backend.asked == [2] and backend.closed
    assert cache.get(requests[1].key)["response"] == "QUESTION 1"

    def no_model():
        raise AssertionError("the model was loaded although every answer was cached")

    assert generate_missing(requests[:2], JsonlCache(cache.path), no_model, None) == 0
    stages = []
    assert generate_missing(requests, JsonlCache(cache.path), FakeBackend, lambda *a: stages.append(a)) == 1
    assert stages == [("generate", 0, 1), ("generate", 1, 1)]


def test_write_safety_result_writes_csv_and_json_readable_and_shared(tmp_path):
    run, harmful, benign, generations, judged = hand_made_run()
    summary = summarise(run, harmful, benign, generations, judged)
    payload = {"kind": "safety", "benchmark": "multijail", "model": {"label": "m", "path": "m", "fingerprint": "f"},
               "judge": judged.identity, "metric": judged.metric, "languages": summary.languages,
               "overall": summary.overall, "categories": summary.categories, "extra": summary.extra}
    json_path, csv_path = write_safety_result(tmp_path / "runs", payload)
    assert (json_path, csv_path) == result_paths(tmp_path / "runs", "m", "hand")
    assert [path for path, _ in iter_results(tmp_path / "runs")] == [json_path]
    assert json_path.stat().st_mode & 0o777 == csv_path.stat().st_mode & 0o777 == 0o644
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "table,language,category,metric,value,low,high,k,n"
    assert "language,ko,,unsafe_rate,0.75," in "\n".join(rows) and "benign,ko,,,n/a,,,," in rows
