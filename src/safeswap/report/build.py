"""Writing a report folder: report.md, report.html, figures/, models/ (plans and model cards)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.report.collect import ReportData, collect
from safeswap.report.detail_tables import all_safety_table, general_detail_table, over_refusal_table
from safeswap.report.document import Document, Figure, MergeSection, safe_name
from safeswap.report.figures import DPI, safety_bars, tradeoff
from safeswap.report.html import render_html
from safeswap.report.markdown import render_markdown
from safeswap.report.search import read_search, search_section, unique_names
from safeswap.report.tables import category_table, main_table

REPORT_FILES = ("report.md", "report.html")


def _judge_text(data: ReportData) -> str:
    return f"judge: {data.safety_judge}" if data.safety_judge else "no judge recorded"


def _report_figures(data: ReportData, root: Path) -> list[Figure]:
    figures = []
    if safety_bars(data, root / "figures" / "safety_by_language.png"):
        what = "unsafe responses" if data.safety_metric == "unsafe_rate" else "refusals (a refusal judge: not a harm judgment)"
        better = "Lower is better." if data.safety_metric == "unsafe_rate" else ""
        figures.append(Figure(
            "safety-by-language", Path("figures/safety_by_language.png"),
            f"MultiJail: % of {what} per language and model ({_judge_text(data)}). Error bars: 95% Wilson intervals. {better}".strip(),
            DPI,
        ))
    if tradeoff(data, root / "figures" / "safety_vs_ability.png"):
        y = "1 − unsafe rate" if data.safety_metric == "unsafe_rate" else "refusal rate"
        figures.append(Figure(
            "safety-vs-ability", Path("figures/safety_vs_ability.png"),
            f"Safety against general ability per language. x: mean of the general benchmarks every model has in that"
            f" language (named on the axis); y: {y}. Dashed: the Pareto front (models no other model beats on both)."
            " Diamonds: merges, labelled by method and parameters.",
            DPI,
        ))
    return figures


def _merge_sections(data: ReportData, root: Path) -> tuple[list[MergeSection], dict[str, dict[str, str]]]:
    """Copy each merge's plan, card and figures into the report so its links keep working when moved."""
    sections, links = [], {}
    for model in data.models:
        merge = model.merge
        if merge is None:
            continue
        name = safe_name(model.label)
        folder = root / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(merge.plan_path, folder / merge.plan_path.name)
        links[model.label] = {"plan": f"models/{name}/{merge.plan_path.name}"}
        if merge.card_path is not None:
            shutil.copyfile(merge.card_path, folder / merge.card_path.name)
            links[model.label]["card"] = f"models/{name}/{merge.card_path.name}"
        figures = []
        captions = {
            "specialization": f"{model.label}: how strongly each expert specialised each unit, with the ±τ band (from the merge).",
            "decisions": f"{model.label}: the expert each unit was taken from, or blended (from the merge).",
        }
        for kind, source in merge.figures.items():
            target = Path("figures") / f"{name}.{kind}.png"
            shutil.copyfile(source, root / target)
            figures.append(Figure(f"{name}-{kind}", target, captions.get(kind, f"{model.label}: {kind}.")))
        sections.append(MergeSection(model, figures, links[model.label]["plan"], links[model.label].get("card")))
    return sections, links


def _tables(data: ReportData) -> list:
    if not data.models:
        return []
    tables = [main_table(data), category_table(data)]
    tables += [general_detail_table(data, b) for b in data.general_benchmarks]
    tables += [over_refusal_table(data), all_safety_table(data)]
    return [t for t in tables if t is not None]


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SafeswapError(f"{out} is a file; --out needs a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / f).is_file() for f in REPORT_FILES):
        raise SafeswapError(f"{out} exists and holds something other than a report; choose another --out")


def build_report(
    runs_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    models: list[str] | None = None,
    languages: list[str] | None = None,
    judge: str | None = None,
    title: str = "Safety and general ability",
    searches: list[str | os.PathLike] | None = None,
) -> Path:
    """Write the report for every result under runs_dir into out (replacing an earlier report there).

    searches: `safeswap search` folders, each shown in a "Merge search" section; with them, a runs
    folder without results gives a report of the searches alone.
    """
    out = Path(out)
    _check_target(out)
    search_warnings: list[str] = []
    found = []
    for folder in searches or []:
        if not any(Path(folder).resolve() == f.folder.resolve() for f in found):  # the same folder twice shows once
            found.append(read_search(folder, search_warnings))
    data = collect(runs_dir, models=models, languages=languages, judge=judge, allow_empty=bool(found))
    data.warnings += search_warnings
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and swap it in, so a failure never leaves half a report.
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (work / "figures").mkdir()
        figures = _report_figures(data, work)
        merges, links = _merge_sections(data, work)
        names = unique_names([f.folder for f in found])
        sections = [search_section(f, name, work) for f, name in zip(found, names)]
        doc = Document(title, data, _tables(data), figures, merges, links, sections)
        (work / "report.md").write_text(render_markdown(doc), encoding="utf-8")
        (work / "report.html").write_text(render_html(doc, work), encoding="utf-8")
        os.chmod(work, 0o755)  # mkdtemp makes it private; a report is for sharing
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        work.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out
