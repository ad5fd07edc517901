"""The report's Merge search section, over search folders written by hand (search.json, pareto.png, final.json)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_refused, run_cli
from safeswap.errors import SafeswapError
from safeswap.evaluation.results import rate
from safeswap.report import build_report
from safeswap.report.search import final_table
from test_report_build import make_runs

RECOMMENDED = "a1b2c3d4e5f60718"  # a searched candidate (no label): shown by its key's first 8 characters
PAPER = "0f1e2d3c4b5a6978"
ADAPTIVE = {"granularity": "module", "tau": 0.002, "alpha": 0.4}
ADAPTIVE_TEXT = "adaptive (α=0.4, granularity=module, τ=0.002)"  # parameters in name order, Greek symbols as the merges show
PAPER_VALUES = {"granularity": "module", "tau": 0.001, "alpha": 0.5}


def pareto_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.scatter([0.1, 0.2, 0.4], [0.5, 0.7, 0.9])
    fig.savefig(path, dpi=50, metadata={"Software": None})
    plt.close(fig)


def summary(**extra) -> dict:
    """search.json as `safeswap search` writes it today (no generation, no final evaluation)."""
    row = {"key": RECOMMENDED, "kind": "trial", "label": "", "method": "adaptive", "outside_layers": "blend",
           "values": json.dumps(ADAPTIVE, sort_keys=True), "pareto": True, "feasible": True, "harmful": 0.87}
    return {
        "statement": f"3 of 12 candidates meet every constraint; recommended {RECOMMENDED}: the highest harmful refusal among them",
        "recommended": row, "plan": "/elsewhere/recommended-plan.yaml",
        "pareto_front": [RECOMMENDED, PAPER, "c0ffee0000000000"], "candidates": 12, "trials": 10, "evaluated_this_run": 4,
        "models": {"base": {"harmful": 0.3012, "benign": 0.0211, "kept_gain": float("nan")},
                   "language": {"harmful": 0.25, "benign": 0.03, "kept_gain": 1.0}},
        "constraints": {"max_benign_refusal_over_language": 0.05,
                                                            "min_kept_language_gain": 0.7, "min_harmful_refusal": None},
        "split": "search (probe scores only; no held-out evaluation yet)", "probe_judge_rank_correlation": None,
        **extra,
    }


def final_row(label, kind, harmful_ko, harmful_en, benign, in_language, perplexity, kept_gain, key=None, values=None):
    return {"label": label, "kind": kind, "key": key, "method": "adaptive" if values else None, "values": values,
            "harmful": {"ko": rate(*harmful_ko), "en": rate(*harmful_en)}, "benign_refusal": rate(*benign),
            "in_language": rate(*in_language), "perplexity": perplexity, "kept_gain": kept_gain}


FINAL = {
    "split": "held-out", "metric": "refusal_rate", "languages": ["ko", "en"], "benign_language": "ko",
    "harmful_n": 100, "benign_n": 60, "judge": {"name": "refusal", "model": "Qwen/Qwen2.5-7B-Instruct"},
    "rows": [
        final_row("base", "model", (41, 100), (82, 100), (4, 60), (55, 60), 12.3456, 0.0),
        final_row("language-expert", "model", (30, 100), (80, 100), (3, 60), (58, 60), 9.5, 1.0),
        final_row("recommended", "recommended", (90, 100), (95, 100), (12, 60), (57, 60), 10.25, 0.8123, RECOMMENDED, ADAPTIVE),
        final_row("paper-default", "reference", (70, 100), (90, 100), (30, 60), (55, 60), None, None, PAPER, PAPER_VALUES),
    ],
}

GENERATION = {
    "top": 2, "metric": "refusal_rate", "languages": ["ko", "en"], "benign_language": "ko", "harmful_n": 100, "benign_n": 40,
    "judge": {"name": "refusal", "model": "Qwen/Qwen2.5-7B-Instruct"},
    "models": {"base": {"harmful": rate(60, 200), "benign_refusal": rate(2, 40), "in_language": rate(39, 40)}},
    "candidates": [
        {"key": RECOMMENDED, "label": "", "method": "adaptive", "values": ADAPTIVE, "probe_rank": 1,
         "probe": {"harmful": 0.8712, "benign": 0.1034, "kept_gain": 0.8123},
         "judge": {"harmful": rate(160, 200), "benign_refusal": rate(8, 40), "in_language": rate(36, 40)}},
        {"key": PAPER, "label": "paper-default", "method": "adaptive", "values": PAPER_VALUES, "probe_rank": 4,
         "probe": {"harmful": 0.7, "benign": 0.05, "kept_gain": 0.9},
         "judge": {"harmful": rate(150, 200), "benign_refusal": rate(5, 40), "in_language": rate(38, 40)}},
    ],
}
CORRELATION = {"harmful": 0.8333, "benign": 0.4, "n": 5, "method": "spearman"}


def make_search(root: Path, name: str = "ko-search", full: bool = True, **extra) -> Path:
    """A search folder: search.json and pareto.png; with full, generation, correlation, final.json and the plan too."""
    folder = root / name
    folder.mkdir(parents=True)
    pareto_png(folder / "pareto.png")
    if full:
        extra = {"generation": GENERATION, "probe_judge_rank_correlation": CORRELATION, "final": "final.json",
                 "recommended_by": "judge", **extra}
        (folder / "final.json").write_text(json.dumps(FINAL), encoding="utf-8")
        (folder / "recommended-plan.yaml").write_text("method: adaptive\n", encoding="utf-8")
    (folder / "search.json").write_text(json.dumps(summary(**extra)), encoding="utf-8")
    return folder


def md_row(md: str, head: str) -> list[str]:
    """The cells (bold marks dropped) of the one table row whose head starts with `head`."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {head}")]
    assert len(rows) == 1, rows
    return [c.strip().strip("*") for c in rows[0].strip("|").split(" | ")]


def section(md: str) -> str:
    return md[md.index("## Merge search"):]


def table_text(md: str, number: int) -> str:
    """Table `number` of report.md: its caption down to the next caption or figure."""
    start = md.index(f"**Table {number}.**")
    ends = [i for i in (md.find("**Table", start + 1), md.find("![Figure", start)) if i > 0]
    return md[start:min(ends, default=len(md))]


@pytest.fixture
def empty_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"


def test_full_search_section_numbers(tmp_path, empty_runs):
    folder = make_search(tmp_path)
    out = build_report(empty_runs, tmp_path / "report", searches=[folder])
    md = (out / "report.md").read_text(encoding="utf-8")
    part = section(md)
    assert part.startswith("## Merge search: ko-search\n")
    assert f"**Statement.** 3 of 12 candidates meet every constraint; recommended {RECOMMENDED}" in part
    assert f"Recommended (on the judge's rates): a1b2c3d4: {ADAPTIVE_TEXT} · [plan](searches/ko-search/recommended-plan.yaml)" in part
    assert (out / "searches" / "ko-search" / "recommended-plan.yaml").read_text() == "method: adaptive\n"
    assert "12 distinct candidates (references included) from 10 trials; 4 evaluated in the last run; 3 on the Pareto front." in part
    assert ("Constraints: benign refusal at most the language expert's + 5.0 points;"
            " at least 70.0% of the language expert's perplexity gain kept.") in part

    # Held-out table: per language the refusal % with its Wilson interval, then benign, in-language, perplexity, kept gain.
    assert "**Table 1.** Merge search: final evaluation on the held-out split." in part
    assert ("| Model | harmful refusal % · Korean (ko) | harmful refusal % · English (en) | benign · refused % | benign · in Korean %"
            " | language · perplexity | language · kept gain % |") in part
    final = table_text(md, 1)
    assert md_row(final, "base") == ["base", "41.0 [31.9, 50.8]", "82.0 [73.3, 88.3]", "6.7 [2.6, 15.9]", "91.7 [81.9, 96.4]", "12.35", "0.0"]
    assert md_row(final, "recommended") == [
        f"recommended: {ADAPTIVE_TEXT}", "90.0 [82.6, 94.5]", "95.0 [88.8, 97.8]", "20.0 [11.8, 31.8]",
        "95.0 [86.3, 98.3]", "10.25", "81.2"]
    assert md_row(final, "paper-default (reference)")[-2:] == ["–", "–"]
    # Best per column in bold: refusal of harmful prompts higher, benign refusal and perplexity lower.
    assert "| **90.0 [82.6, 94.5]** |" in final and "| **5.0 [1.7, 13.7]** |" in final and "| **9.50** |" in final
    assert ("Held-out numbers: prompts the search never saw (100 MultiJail prompts per language, 60 benign prompts in Korean)"
            in part)
    assert "judge: refusal (Qwen/Qwen2.5-7B-Instruct)" in part and "it does not judge harm" in part

    assert "Probe vs judge (Spearman, 5 candidates): harmful 0.83, benign 0.40" in part
    assert "**Table 2.** Merge search: the 2 candidates that went to generation (generation.top 2), probe beside judge." in part
    generation = table_text(md, 2)
    assert md_row(generation, "a1b2c3d4 (recommended)") == [
        f"a1b2c3d4 (recommended): {ADAPTIVE_TEXT}", "1", "87.1", "10.3", "81.2", "80.0 [73.9, 85.0]", "20.0 [10.5, 34.8]",
        "90.0 [76.9, 96.0]"]
    # The models first (probe from search.json's models, judge from the generation stage), then the candidates.
    assert md_row(generation, "base") == ["base", "–", "30.1", "2.1", "–", "30.0 [24.1, 36.7]", "5.0 [1.4, 16.5]", "97.5 [87.1, 99.6]"]
    assert "100 harmful prompts per language and 40 benign prompts (judge: refusal (Qwen/Qwen2.5-7B-Instruct))" in generation
    assert md_row(generation, "paper-default: adaptive")[1:] == ["4", "70.0", "5.0", "90.0", "75.0 [68.6, 80.5]", "12.5 [5.5, 26.1]",
                                                          "95.0 [83.5, 98.6]"]

    # The figure is copied under a name of its own and embedded in the page, which links nothing outside itself.
    figure = out / "figures" / "search-ko-search.pareto.png"
    assert figure.read_bytes() == (folder / "pareto.png").read_bytes()
    assert "![Figure 1](figures/search-ko-search.pareto.png)" in part
    html = (out / "report.html").read_text(encoding="utf-8")
    assert base64.b64encode(figure.read_bytes()).decode() in html
    assert re.findall(r'<img src="([^"]{0,22})', html) == ["data:image/png;base64,"]
    assert 'id="table-search-ko-search-final"' in html and 'id="table-search-ko-search-generation"' in html
    assert "41.0 [31.9, 50.8]" in html and "Probe vs judge (Spearman, 5 candidates): harmful 0.83, benign 0.40" in html


def test_a_search_alone_makes_a_report(tmp_path, empty_runs):
    out = build_report(empty_runs, tmp_path / "report", searches=[make_search(tmp_path)])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "this report shows 1 merge search(es) only." in md
    assert "## Main results" not in md and "## Models" not in md
    assert [line for line in md.splitlines() if line.startswith("## ")] == ["## Merge search: ko-search"]
    with pytest.raises(SafeswapError, match="no result files"):  # without a search an empty folder is still refused
        build_report(empty_runs, tmp_path / "other")


def test_a_search_as_written_today(tmp_path, empty_runs):
    """search.json without generation or final, and no recommendation: statement, figure and counts."""
    folder = make_search(tmp_path, full=False, recommended=None, plan=None, trials=12, evaluated_this_run=12,
                         statement="no candidate met max_benign_refusal_over_language (of 12 candidates)")
    for key in ("probe_judge_rank_correlation",):
        data = json.loads((folder / "search.json").read_text())
        del data[key]  # older folders lack the new keys altogether
        (folder / "search.json").write_text(json.dumps(data))
    out = build_report(empty_runs, tmp_path / "report", searches=[folder])
    part = section((out / "report.md").read_text(encoding="utf-8"))
    assert "**Statement.** no candidate met max_benign_refusal_over_language (of 12 candidates)" in part
    assert "12 distinct candidates (references included) from 12 trials; 12 evaluated in the last run" in part
    assert "Split: search (probe scores only; no held-out evaluation yet)." in part
    assert "**Figure 1.**" in part and (out / "figures" / "search-ko-search.pareto.png").is_file()
    for absent in ("Recommended:", "Table", "Probe vs judge", "Held-out"):
        assert absent not in part
    assert not (out / "searches").exists()


def test_beside_model_results_the_numbering_runs_on(tmp_path):
    runs = make_runs(tmp_path)
    out = build_report(runs, tmp_path / "report", searches=[make_search(tmp_path)])
    md = (out / "report.md").read_text(encoding="utf-8")
    tables = [int(n) for n in re.findall(r"^\*\*Table (\d+)\.\*\*", md, re.M)]
    figures = [int(n) for n in re.findall(r"^\*\*Figure (\d+)\.\*\*", md, re.M)]
    assert tables == list(range(1, len(tables) + 1)) and figures == list(range(1, len(figures) + 1))
    part = section(md)
    assert f"**Table {tables[-2]}.** Merge search: final evaluation" in part
    assert f"**Figure {figures[-1]}.** Merge search ko-search" in part
    assert md.index("## Merges") < md.index("## Merge search") < md.index("## Models")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"<b>Table {tables[-1]}.</b>Merge search: the 2 candidates" in html


def test_two_searches_of_the_same_name_keep_their_figures_apart(tmp_path, empty_runs):
    first, second = make_search(tmp_path / "a"), make_search(tmp_path / "b", full=False)
    out = build_report(empty_runs, tmp_path / "report", searches=[first, second, first])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.count("## Merge search") == 2  # the same folder given twice shows once
    assert "## Merge search: ko-search-2" in md
    assert (out / "figures" / "search-ko-search-2.pareto.png").is_file()


def test_a_missing_final_file_is_a_warning(tmp_path, empty_runs):
    folder = make_search(tmp_path)
    (folder / "final.json").unlink()
    (folder / "pareto.png").unlink()
    out = build_report(empty_runs, tmp_path / "report", searches=[folder])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "names final.json, which is missing; the search's held-out evaluation is not shown." in md
    assert "held-out split." not in md and "Probe vs judge (Spearman, 5 candidates)" in md
    assert "![Figure" not in md and "**Table 1.** Merge search: the 2 candidates" in md


def test_unsafe_metric_marks_the_lowest_harmful_rate():
    final = dict(FINAL, metric="unsafe_rate")
    table = final_table(final, "x")
    assert [c.name for c in table.columns][:2] == ["Korean (ko)", "English (en)"]
    assert table.columns[0].group == "Harmful prompts: unsafe %"
    best = [head for head, cells in table.rows if cells[0].best]
    assert best == ["language-expert"]  # 30 of 100: the fewest unsafe answers
    assert not any("does not judge harm" in n for n in table.notes)


def test_row_names_say_the_kind_once_and_the_outside_layers():
    row = final_row("recommended (paper-default)", "recommended", (1, 2), (1, 2), (1, 2), (1, 2), 3.0, 0.5, PAPER, PAPER_VALUES)
    row["outside_layers"] = "language"
    table = final_table(dict(FINAL, rows=[row, dict(row, label="paper-default", kind="reference", outside_layers="blend")]), "x")
    assert [head for head, _ in table.rows] == [
        "recommended (paper-default): adaptive (α=0.5, granularity=module, τ=0.001, outside_layers=language)",
        "paper-default (reference): adaptive (α=0.5, granularity=module, τ=0.001)",
    ]


def test_bad_search_folders_are_one_line_errors(tmp_path, monkeypatch, capsys, empty_runs):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    err = assert_refused(monkeypatch, capsys, tmp_path / "out", f"{plain} is not a search folder (no search.json)",
                         "report", empty_runs, "--search", plain)
    assert "safeswap search" in err
    assert_refused(monkeypatch, capsys, tmp_path / "out", f"search folder {tmp_path / 'nowhere'} does not exist",
                   "report", empty_runs, "--search", tmp_path / "nowhere")
    broken = make_search(tmp_path, name="broken", full=False)
    (broken / "search.json").write_text("{not json")
    assert_refused(monkeypatch, capsys, tmp_path / "out", f"{broken / 'search.json'} is not valid JSON",
                   "report", empty_runs, "--search", broken)
    (broken / "search.json").write_text(json.dumps({"candidates": 3}))
    assert_refused(monkeypatch, capsys, tmp_path / "out", "has no 'statement'", "report", empty_runs, "--search", broken)
    assert_refused(monkeypatch, capsys, tmp_path / "out", "no result files", "report", empty_runs)


def test_report_command_takes_several_searches(tmp_path, monkeypatch, capsys, empty_runs):
    one, two = make_search(tmp_path, name="ko-search"), make_search(tmp_path, name="sw-search", full=False)
    code, err = run_cli(monkeypatch, capsys, "report", empty_runs, "--out", tmp_path / "report", "--search", one, "--search", two)
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert md.index("## Merge search: ko-search") < md.index("## Merge search: sw-search")
    assert "**Figure 2.** Merge search sw-search" in md


def test_the_cli_loads_no_matplotlib_or_torch():
    code = "import sys, safeswap.cli; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
