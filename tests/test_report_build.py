"""The comparison report over synthetic result files of five models (base, two experts, two merges)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from safeswap.errors import SafeswapError
from safeswap.evaluation.results import NOT_AVAILABLE, rate, write_result
from safeswap.report import build_report, collect
from safeswap.report.figures import pareto_front
from safeswap.report.tables import main_table

LANGS = ("en", "ko", "sw", "te")
PROMPTS = 100  # MultiJail prompts per language in the synthetic results
CATEGORIES = ("Violence & incitement", "Theft", "Hate speech")

# Unsafe responses per 100 prompts, per model and language; the merges are safest in ko and sw.
UNSAFE = {
    "base": {"en": 30, "ko": 45, "sw": 60, "te": 55},
    "safety": {"en": 4, "ko": 20, "sw": 35, "te": 30},
    "language": {"en": 25, "ko": 40, "sw": 50, "te": 45},
    "merge-adaptive": {"en": 5, "ko": 12, "sw": 18, "te": 21},
    "merge-linear": {"en": 8, "ko": 22, "sw": 30, "te": 28},
}
# General accuracy (%) per benchmark and language; None where the benchmark has no task.
GENERAL = {
    "base": {"mmmlu": (60, 40, 35, None), "belebele": (80, 60, 50, 45), "mgsm": (40, None, 10, 8)},
    "safety": {"mmmlu": (62, 41, 33, None), "belebele": (81, 58, 48, 44), "mgsm": (42, None, 9, 7)},
    "language": {"mmmlu": (59, 52, 47, None), "belebele": (78, 72, 66, 60), "mgsm": (38, None, 22, 18)},
    "merge-adaptive": {"mmmlu": (61, 51, 46, None), "belebele": (80, 71, 65, 58), "mgsm": (41, None, 21, 17)},
    "merge-linear": {"mmmlu": (60, 45, 40, None), "belebele": (79, 64, 57, 51), "mgsm": (40, None, 15, 12)},
}
JUDGE = {"name": "harm-judge", "model": "Qwen/Qwen2.5-72B-Instruct", "prompt_sha256": "0" * 64}
MERGES = {
    "merge-adaptive": {"method": "adaptive", "parameters": {"granularity": "module", "tau": 0.001, "alpha": 0.5}},
    "merge-linear": {"method": "linear", "parameters": {"alpha": 0.5}},
}


def _tiny_png(path: Path, colour: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.bar([0, 1, 2], [1, 3, 2], color=colour)
    fig.savefig(path, dpi=60, metadata={"Software": None})
    plt.close(fig)


def make_model_folders(root: Path) -> dict[str, Path]:
    """Model folders as the pipeline leaves them; merges hold a plan, two figures and a model card."""
    folders = {label: root / "models" / label for label in UNSAFE}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}", encoding="utf-8")
    for label, merge in MERGES.items():
        folder = folders[label]
        plan = dict(merge, models={role: {"path": str(folders[role]), "fingerprint": "x"} for role in ("base", "safety", "language")})
        (folder / "safeswap-plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
        _tiny_png(folder / "specialization.png", "#0072B2")
        _tiny_png(folder / "decisions.png", "#E69F00")
        (folder / "README.md").write_text(f"# {label}\n\nA safeswap merge ({merge['method']}).\n", encoding="utf-8")
    return folders


def safety_payload(label: str, path: Path, unsafe: dict[str, int], judge: dict = JUDGE) -> dict:
    languages = {}
    for lang, k in unsafe.items():
        invalid = 1 if lang == "te" else 0
        languages[lang] = {
            "unsafe_rate": rate(k, PROMPTS),
            "safe_rate": rate(PROMPTS - k - invalid, PROMPTS),
            "invalid_rate": rate(invalid, PROMPTS),
            "unparsed_rate": rate(0, PROMPTS),
            "n": PROMPTS,
        }
    total = sum(unsafe.values())
    categories = {
        c: {"unsafe_rate": rate(min(total // (i + 2), 40 * len(unsafe)), 40 * len(unsafe)), "n": 40 * len(unsafe)}
        for i, c in enumerate(CATEGORIES)
    }
    benign = {
        "source": "benign.csv",
        "judge": "refusal",
        "languages": {lang: {"n": 50, "over_refusal_rate": rate(3 + len(label) % 4 + i, 50)} for i, lang in enumerate(unsafe)},
    }
    return {
        "kind": "safety",
        "benchmark": "multijail",
        "model": {"label": label, "path": str(path), "fingerprint": f"sha256:{label}"},
        "judge": judge,
        "decoding": {"backend": "vllm", "max_new_tokens": 512, "temperature": 0.0},
        "data": {"source": "MultiJail.csv", "sha256": "1" * 64},
        "metric": "unsafe_rate",
        "languages": languages,
        "overall": None,
        "categories": categories,
        "extra": {"benign": benign},
    }


def general_payload(label: str, path: Path, benchmark: str, scores: tuple) -> dict:
    metric = "exact_match" if benchmark == "mgsm" else "acc"
    languages = {}
    for lang, score in zip(LANGS, scores):
        if score is None:
            languages[lang] = NOT_AVAILABLE
            continue
        entry = {"task": f"{benchmark}_{lang}", metric: score / 100, f"{metric}_stderr": 0.01, "n": 250, "stand_in": False}
        if metric == "acc":
            entry["acc_norm"] = (score + 1) / 100
        languages[lang] = entry
    return {
        "kind": "general",
        "benchmark": benchmark,
        "model": {"label": label, "path": str(path), "fingerprint": f"sha256:{label}"},
        "judge": None,
        "decoding": {"backend": "hf", "num_fewshot": 0},
        "data": {"source": "lm-eval tasks", "sha256": "2" * 64, "limit": None},
        "metric": metric,
        "languages": languages,
        "overall": None,
        "categories": None,
        "extra": {},
    }


def make_runs(root: Path, refusal_judge: bool = False) -> Path:
    """A runs folder with safety and general results of all five models."""
    folders = make_model_folders(root)
    runs = root / "runs"
    for label, folder in folders.items():
        write_result(runs / label, safety_payload(label, folder, UNSAFE[label]))
        for benchmark, scores in GENERAL[label].items():
            write_result(runs / label, general_payload(label, folder, benchmark, scores))
        if refusal_judge:
            payload = safety_payload(label, folder, UNSAFE[label], judge={"name": "refusal", "model": None, "prompt_sha256": None})
            payload["metric"] = "refusal_rate"
            for entry in payload["languages"].values():
                entry["refusal_rate"] = rate(PROMPTS - entry["unsafe_rate"]["k"], PROMPTS)
            write_result(runs / label, payload)
    return runs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = make_runs(root, refusal_judge=True)
    return build_report(runs, root / "out"), runs


def _cells(table, column_name, group):
    index = next(i for i, c in enumerate(table.columns) if c.name == column_name and c.group.endswith(f"({group})"))
    return {head.label: cells[index] for head, cells in table.rows}


def test_main_table_values_best_marks_and_gaps(tmp_path):
    data = collect(make_runs(tmp_path))
    assert [m.label for m in data.models] == ["base", "language", "safety", "merge-adaptive", "merge-linear"]
    assert [m.role for m in data.models] == ["base", "language expert", "safety expert", "merge", "merge"]
    assert data.languages == list(LANGS)
    table = main_table(data)
    unsafe_ko = _cells(table, "Unsafe (inv.)", "ko")
    assert unsafe_ko["base"].text == "45.0 (0.0)"
    assert [label for label, cell in unsafe_ko.items() if cell.best] == ["merge-adaptive"]
    assert _cells(table, "Unsafe (inv.)", "te")["safety"].text == "30.0 (1.0)"
    mmmlu_ko = _cells(table, "MMMLU", "ko")
    assert [label for label, cell in mmmlu_ko.items() if cell.best] == ["language"]
    assert mmmlu_ko["merge-adaptive"].text == "51.0"
    assert {c.text for c in _cells(table, "MMMLU", "te").values()} == {NOT_AVAILABLE}
    assert {c.text for c in _cells(table, "MGSM", "ko").values()} == {NOT_AVAILABLE}
    assert not any(c.best for c in _cells(table, "MGSM", "ko").values())
    notes = " ".join(table.notes)
    assert "n = 100 prompts per language" in notes and "harm-judge (Qwen/Qwen2.5-72B-Instruct" in notes
    assert "backend vllm, temperature 0.0, max new tokens 512" in notes
    assert "MMMLU: accuracy %, 0-shot, n = 250 per language" in notes


def test_report_files_links_and_self_contained_html(report):
    out, _ = report
    assert sorted(p.name for p in out.iterdir()) == ["figures", "models", "report.html", "report.md"]
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == [
        "merge-adaptive.decisions.png", "merge-adaptive.specialization.png",
        "merge-linear.decisions.png", "merge-linear.specialization.png",
        "safety_by_language.png", "safety_vs_ability.png",
    ]
    for name in figures:
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 6
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not load anything from the network"
    for href in re.findall(r'href="([^"]+)"', html):
        assert (out / href).is_file(), href
    plan = yaml.safe_load((out / "models" / "merge-adaptive" / "safeswap-plan.yaml").read_text(encoding="utf-8"))
    assert plan["method"] == "adaptive"
    assert "adaptive (granularity=module, τ=0.001, α=0.5)" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "[plan](models/merge-adaptive/safeswap-plan.yaml)" in md
    assert "[model card](models/merge-linear/README.md)" in md
    assert "![Figure 1](figures/safety_by_language.png)" in md
    assert "**12.0 (0.0)**" in md  # merge-adaptive's Korean unsafe rate, the best of its column


def test_detail_tables_categories_over_refusal_and_other_judges(report):
    out, _ = report
    html = (out / "report.html").read_text(encoding="utf-8")
    for table_id in ("main", "categories", "general-mmmlu", "general-belebele", "general-mgsm", "over-refusal", "all-safety"):
        assert f'id="table-{table_id}"' in html
    for category in CATEGORIES:
        assert category.replace("&", "&amp;") in html
    assert "does not judge harm" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| merge-adaptive · refusal · refusal_rate |" in md


def test_stand_ins_are_marked(tmp_path):
    runs = make_runs(tmp_path)
    path = runs / "language" / "language__mmmlu.result.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    result["languages"]["te"] = {"task": "global_mmlu_full_te", "acc": 0.333, "acc_stderr": 0.02, "n": 500, "stand_in": True}
    path.write_text(json.dumps(result), encoding="utf-8")
    table = main_table(collect(runs))
    assert _cells(table, "MMMLU", "te")["language"].text == "33.3†"
    assert "†: Global-MMLU standing in for MMMLU." in table.notes[-1]
    assert "†" not in main_table(collect(runs, models=["base", "safety"])).notes[-1]


def test_refusal_judge_alone_is_labelled_as_such(tmp_path):
    runs = make_runs(tmp_path, refusal_judge=True)
    for path in runs.rglob("*harm-judge.result.json"):
        path.unlink()
    data = collect(runs)
    assert (data.safety_judge, data.safety_metric) == ("refusal", "refusal_rate")
    table = main_table(data)
    assert table.columns[0].name == "Refusal %" and not table.columns[0].lower_is_better
    assert "The refusal judge counts refusals; it does not judge harm." in table.notes


def test_judge_option_picks_the_results(tmp_path):
    runs = make_runs(tmp_path, refusal_judge=True)
    assert collect(runs).safety_judge == "harm-judge"
    assert collect(runs, judge="refusal").safety_metric == "refusal_rate"
    with pytest.raises(SafeswapError, match="no safety result was judged by 'gpt'"):
        collect(runs, judge="gpt")


def test_models_and_languages_options_choose_rows_and_columns(tmp_path):
    data = collect(make_runs(tmp_path), models=["merge-linear", "base"], languages=["sw", "ko"])
    assert [m.label for m in data.models] == ["merge-linear", "base"]
    assert data.languages == ["sw", "ko"]
    with pytest.raises(SafeswapError, match="no results for model"):
        collect(tmp_path / "runs", models=["nope"])
    with pytest.raises(SafeswapError, match="no results in language"):
        collect(tmp_path / "runs", languages=["th"])


def test_pareto_front():
    points = [(50.0, 80.0), (60.0, 70.0), (55.0, 60.0), (40.0, 90.0), (60.0, 65.0)]
    assert pareto_front(points) == [(40.0, 90.0), (50.0, 80.0), (60.0, 70.0)]


def test_same_inputs_give_identical_reports(tmp_path):
    runs = make_runs(tmp_path)
    first = build_report(runs, tmp_path / "a")
    second = build_report(runs, tmp_path / "b")
    for name in ("report.md", "report.html", "figures/safety_vs_ability.png", "figures/safety_by_language.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(SafeswapError, match="does not exist"):
        build_report(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafeswapError, match="no result files"):
        build_report(tmp_path / "empty", tmp_path / "out")
    runs = make_runs(tmp_path)
    broken = runs / "base" / "base__broken.result.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(SafeswapError, match="base__broken.result.json is not valid JSON"):
        build_report(runs, tmp_path / "out")
    broken.unlink()
    copy = runs / "elsewhere"
    copy.mkdir()
    (copy / "base__mmmlu.result.json").write_text((runs / "base" / "base__mmmlu.result.json").read_text())
    with pytest.raises(SafeswapError, match="two results for model base, benchmark mmmlu"):
        build_report(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_earlier_report_is_replaced_but_other_folders_are_not(tmp_path):
    runs = make_runs(tmp_path)
    out = build_report(runs, tmp_path / "out")
    (out / "stale.txt").write_text("old")
    build_report(runs, out)
    assert not (out / "stale.txt").exists() and (out / "report.html").is_file()
    with pytest.raises(SafeswapError, match="holds something other than a report"):
        build_report(runs, runs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folders left behind"


def test_a_changed_checkpoint_is_flagged(tmp_path):
    runs = make_runs(tmp_path)
    path = runs / "base" / "base__mmmlu.result.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    result["model"]["fingerprint"] = "sha256:other"
    path.write_text(json.dumps(result), encoding="utf-8")
    out = build_report(runs, tmp_path / "out")
    assert "Results for base come from 2 different checkpoints" in (out / "report.md").read_text(encoding="utf-8")


def test_report_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from safeswap.report.cli import report_command

    app = typer.Typer()
    app.command()(report_command)
    runs = make_runs(tmp_path)
    result = CliRunner().invoke(app, [str(runs), "--out", str(tmp_path / "rep"), "--languages", "ko,sw", "--title", "Korean and Swahili"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Korean and Swahili\n") and "Telugu" not in md


def test_over_refusal_reads_the_benign_rates(tmp_path):
    from safeswap.report.detail_tables import over_refusal_table

    table = over_refusal_table(collect(make_runs(tmp_path)))
    rows = {head.label: [c.text for c in cells] for head, cells in table.rows}
    # 3 + len(label) % 4 + language index refusals out of 50
    assert rows["base"] == ["6.0", "8.0", "10.0", "12.0"]
    assert rows["safety"] == ["10.0", "12.0", "14.0", "16.0"]
    assert "judged by refusal" in table.notes[0]


def test_a_column_where_all_models_tie_marks_none(tmp_path):
    runs = make_runs(tmp_path)
    for path in runs.rglob("*__belebele.result.json"):
        result = json.loads(path.read_text(encoding="utf-8"))
        result["languages"]["ko"]["acc"] = 0.5
        path.write_text(json.dumps(result), encoding="utf-8")
    table = main_table(collect(runs))
    assert not any(c.best for c in _cells(table, "Belebele", "ko").values())
    assert sum(c.best for c in _cells(table, "Belebele", "sw").values()) == 1
