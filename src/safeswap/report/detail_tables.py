"""Tables behind the main one: each general benchmark in full, over-refusal, every safety judge."""

from __future__ import annotations

from safeswap.evaluation.languages import language_name
from safeswap.evaluation.results import NOT_AVAILABLE
from safeswap.report.collect import BENCHMARK_NAMES, ReportData
from safeswap.report.tables import (
    MISSING,
    STAND_IN_MARK,
    Cell,
    Column,
    Table,
    rate_title,
    rate_value,
    mark_best,
    percent,
)


def _language_columns(data: ReportData, lower_is_better: bool = False) -> list[Column]:
    return [Column(f"{language_name(lang)} ({lang})", lower_is_better=lower_is_better) for lang in data.languages]


def general_detail_table(data: ReportData, benchmark: str) -> Table:
    """Every model on one benchmark: score ± stderr, with acc_norm (or MGSM's strict match) beside it."""
    rows = []
    tasks: set[str] = set()
    for model in data.models:
        result = model.general.get(benchmark)
        cells = []
        for lang in data.languages:
            entry = (result.data.get("languages") or {}).get(lang) if result else None
            if entry is None:
                cells.append(Cell(MISSING))
                continue
            if entry == NOT_AVAILABLE:
                cells.append(Cell(NOT_AVAILABLE))
                continue
            metric = result.data["metric"]
            tasks.add(str(entry.get("task")))
            value = entry.get(metric)
            stderr = entry.get(f"{metric}_stderr")
            text = percent(value) + (STAND_IN_MARK if entry.get("stand_in") else "")
            if isinstance(stderr, (int, float)):
                text += f" ± {100 * stderr:.1f}"
            second = entry.get("acc_norm") if metric == "acc" else entry.get("exact_match_strict")
            if isinstance(second, (int, float)):
                text += f" ({percent(second)})"
            cells.append(Cell(text, float(value) if isinstance(value, (int, float)) else None, title=f"{entry.get('task')}, n={entry.get('n')}"))
        rows.append((model, cells))
    if benchmark == "mgsm":
        what = "exact match % (flexible-extract) ± stderr, strict-match in parentheses"
    else:
        what = "accuracy % ± stderr, length-normalised accuracy (acc_norm) in parentheses"
    table = Table(f"general-{benchmark}", f"{BENCHMARK_NAMES[benchmark]} in detail.", _language_columns(data), rows)
    table.notes = [f"{what}. lm-eval tasks: {', '.join(sorted(tasks)) or 'none'}.", "Best headline value per column in bold."]
    return mark_best(table)


def benign_refusal(benign: dict, lang: str) -> dict | None:
    """The over-refusal rate of one language from a safety result's `extra.benign`."""
    # Written as {"languages": {lang: {"over_refusal_rate": rate}}}; {lang: {"refusal_rate": rate}} also read.
    per_language = benign.get("languages") if isinstance(benign.get("languages"), dict) else benign
    entry = per_language.get(lang)
    if not isinstance(entry, dict):
        return None
    return entry.get("over_refusal_rate") or entry.get("refusal_rate")


def over_refusal_table(data: ReportData) -> Table | None:
    """Refusals of benign prompts (over-refusal), where the safety evaluation measured them."""
    rows = []
    judges = set()
    for model in data.models:
        result = data.headline_safety(model)
        benign = ((result.data.get("extra") or {}).get("benign") or {}) if result else {}
        if not benign:
            continue
        if isinstance(benign.get("judge"), str):
            judges.add(benign["judge"])
        cells = []
        for lang in data.languages:
            rate = benign_refusal(benign, lang)
            value = rate_value(rate)
            cells.append(Cell(percent(value), value, title=rate_title(rate, "refused")) if value is not None else Cell(MISSING))
        rows.append((model, cells))
    if not rows:
        return None
    table = Table("over-refusal", "Over-refusal: benign prompts refused.", _language_columns(data, lower_is_better=True), rows)
    judged = f", judged by {', '.join(sorted(judges))}" if judges else ""
    table.notes = [f"% of harmless prompts the model refused{judged} (lower is better). Best value per column in bold."]
    return mark_best(table)


def all_safety_table(data: ReportData) -> Table | None:
    """Every safety result, one row per model and judge, when there is more than the main table shows."""
    pairs = {(r.judge, r.data.get("metric")) for m in data.models for r in m.safety}
    if len(pairs) < 2:
        return None
    rows = []
    for model in data.models:
        for result in sorted(model.safety, key=lambda r: (str(r.judge), str(r.data.get("metric")))):
            metric = result.data.get("metric")
            cells = []
            for lang in data.languages:
                entry = (result.data.get("languages") or {}).get(lang)
                rate = entry.get(metric) if isinstance(entry, dict) else None
                value = rate_value(rate)
                cells.append(Cell(percent(value), value, title=rate_title(rate, "")) if value is not None else Cell(entry if entry == NOT_AVAILABLE else MISSING))
            rows.append((f"{model.label} · {result.judge or 'no judge'} · {metric}", cells))
    columns = [Column(c.name, mark_best=False) for c in _language_columns(data)]
    table = Table("all-safety", "Every safety result (all judges).", columns, rows, row_header="Model · judge · metric")
    table.notes = ["refusal_rate comes from a refusal judge: it counts refusals and does not judge harm."]
    return table
