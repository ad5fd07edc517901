"""`safeswap eval all`: both evaluations of one model, one command, results side by side."""

import json
import sys
from pathlib import Path

import pytest

from conftest import MULTIJAIL_CSV
from safeswap.cli import main
from safeswap.evaluation.results import iter_results
from tiny import make_model

REPO = Path(__file__).resolve().parents[1]


def test_eval_all_writes_safety_and_general_results(tmp_path, monkeypatch, capsys):
    model = make_model(tmp_path / "tiny", family="llama", seed=3)
    monkeypatch.chdir(REPO)  # the local task files' data paths are relative to the repository
    monkeypatch.setattr(sys, "argv", [
        "safeswap", "eval", "all", "--model", str(model), "--label", "tiny", "--languages", "ko,sw",
        "--out", str(tmp_path / "runs"), "--data", str(MULTIJAIL_CSV), "--limit", "3", "--max-new-tokens", "4",
        "--benchmarks", "belebele,mmmlu", "--tasks-dir", "tests/data/lm_eval_tasks", "--no-builtin-tasks",
        "--general-limit", "2", "--batch-size", "3",
    ])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    results = {(r["kind"], r["benchmark"]): r for _, r in iter_results(tmp_path / "runs")}
    assert set(results) == {("safety", "multijail"), ("general", "belebele"), ("general", "mmmlu")}
    safety = results[("safety", "multijail")]
    assert list(safety["languages"]) == ["ko", "sw"]
    assert safety["languages"]["ko"]["refusal_rate"]["n"] == 3
    general = results[("general", "belebele")]
    assert general["languages"]["sw"]["task"] == "belebele_swh_Latn" and general["languages"]["sw"]["n"] == 2
    assert 0.0 <= general["languages"]["ko"]["acc"] <= 1.0
    assert results[("general", "mmmlu")]["languages"]["ko"]["task"] == "mmmlu_ko_kr"
    assert json.loads(json.dumps(general))["model"]["label"] == safety["model"]["label"] == "tiny"
