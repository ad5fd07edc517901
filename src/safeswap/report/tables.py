"""The report's tables, as plain data that the Markdown and HTML writers both render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safeswap.evaluation.languages import language_name
from safeswap.evaluation.results import NOT_AVAILABLE
from safeswap.report.collect import BENCHMARK_NAMES, ModelResults, ReportData, Result

MISSING = "–"  # not evaluated (as opposed to "n/a": the benchmark has no task for the language)
STAND_IN_MARK = "†"


@dataclass
class Cell:
    text: str
    value: float | None = None  # what "best" compares; None for n/a and missing
    best: bool = False
    title: str | None = None  # detail shown on hover in the HTML


@dataclass
class Column:
    name: str
    group: str = ""  # spanning header above (e.g. a language)
    group_short: str = ""  # the group in a one-line header (e.g. "ko")
    lower_is_better: bool = False
    mark_best: bool = True


@dataclass
class Table:
    key: str
    caption: str
    columns: list[Column]
    rows: list[tuple[ModelResults | str, list[Cell]]]
    notes: list[str] = field(default_factory=list)
    row_header: str = "Model"
    full_row_heads: bool = False  # model rows show role or merge, and links to plan and card


def percent(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{100 * value:.{digits}f}"


def rate_value(entry: Any) -> float | None:
    if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
        return float(entry["value"])
    if isinstance(entry, (int, float)):
        return float(entry)
    return None


def rate_title(entry: Any, what: str) -> str | None:
    if not isinstance(entry, dict) or "low" not in entry:
        return None
    return f"95% CI {100 * entry['low']:.1f}–{100 * entry['high']:.1f}; {entry.get('k')}/{entry.get('n')} {what}"


def rate_cell(entry: Any, what: str, interval: bool = False) -> Cell:
    """A rate's cell: its percent (with the 95% interval beside it when asked, as `safeswap eval` prints it), the detail on hover."""
    value = rate_value(entry)
    if value is None:
        return Cell(MISSING)
    text = percent(value)
    if interval and isinstance(entry, dict) and rate_value(entry.get("low")) is not None and rate_value(entry.get("high")) is not None:
        text += f" [{percent(entry['low'])}, {percent(entry['high'])}]"
    return Cell(text, value, title=rate_title(entry, what))


def _mark(cells: list[Cell], lower_is_better: bool) -> None:
    """Bold the best of some cells; ties at the shown precision all count, and all-equal marks none."""
    valued = [c for c in cells if c.value is not None]
    shown = [round(c.value, 3) for c in valued]
    if len(set(shown)) < 2:
        return
    best = min(shown) if lower_is_better else max(shown)
    for cell, value in zip(valued, shown):
        cell.best = value == best


def mark_best(table: Table) -> Table:
    """Mark the best value of each column."""
    for index, column in enumerate(table.columns):
        if column.mark_best:
            _mark([cells[index] for _, cells in table.rows], column.lower_is_better)
    return table


def _language_entry(result: Result | None, lang: str) -> dict[str, Any] | Cell:
    """A result's scores for a language, or the cell that says why there are none (not run, or n/a)."""
    entry = None if result is None else (result.data.get("languages") or {}).get(lang)
    if entry is None:
        return Cell(MISSING)
    if entry == NOT_AVAILABLE:
        return Cell(NOT_AVAILABLE)
    return entry


def safety_cell(data: ReportData, model: ModelResults, lang: str) -> Cell:
    entry = _language_entry(data.headline_safety(model), lang)
    if isinstance(entry, Cell):
        return entry
    rate = entry.get(data.safety_metric)
    value = rate_value(rate)
    if value is None:
        return Cell(MISSING)
    text = percent(value)
    invalid = rate_value(entry.get("invalid_rate"))
    if invalid is not None:
        text += f" ({percent(invalid)})"
    what = "unsafe" if data.safety_metric == "unsafe_rate" else "refused"
    return Cell(text, value, title=rate_title(rate, what))


def general_cell(model: ModelResults, benchmark: str, lang: str) -> Cell:
    result = model.general.get(benchmark)
    entry = _language_entry(result, lang)
    if isinstance(entry, Cell):
        return entry
    value = entry.get(result.data["metric"])
    if not isinstance(value, (int, float)):
        return Cell(MISSING)
    text = percent(value) + (STAND_IN_MARK if entry.get("stand_in") else "")
    stderr = entry.get(f"{result.data['metric']}_stderr")
    title = f"{entry.get('task')}: ±{100 * stderr:.1f} (stderr), n={entry.get('n')}" if isinstance(stderr, (int, float)) else entry.get("task")
    return Cell(text, float(value), title=title)


def _safety_heading(data: ReportData) -> str:
    return "Unsafe (inv.)" if data.safety_metric == "unsafe_rate" else "Refusal %"


def main_table(data: ReportData) -> Table:
    """One row per model; per language the safety rate and each general benchmark."""
    columns: list[Column] = []
    for lang in data.languages:
        group = f"{language_name(lang)} ({lang})"
        if data.safety_metric:
            columns.append(Column(_safety_heading(data), group, lang, lower_is_better=data.safety_metric == "unsafe_rate"))
        columns += [Column(BENCHMARK_NAMES[b], group, lang) for b in data.general_benchmarks]
    rows = []
    for model in data.models:
        cells = []
        for lang in data.languages:
            if data.safety_metric:
                cells.append(safety_cell(data, model, lang))
            cells += [general_cell(model, b, lang) for b in data.general_benchmarks]
        rows.append((model, cells))
    caption = "Safety and general ability per language."
    return mark_best(Table("main", caption, columns, rows, notes=main_table_notes(data), full_row_heads=True))


def _distinct(values: list[Any]) -> str:
    values = sorted({v for v in values if v is not None}, key=str)
    return ", ".join(str(v) for v in values) if values else "not recorded"


def _n_summary(results: list[dict[str, Any]], languages: list[str], metric: str | None = None) -> str:
    ns = []
    for result in results:
        for lang in languages:
            entry = (result.get("languages") or {}).get(lang)
            if isinstance(entry, dict):
                n = (entry.get(metric) or {}).get("n") if metric and isinstance(entry.get(metric), dict) else entry.get("n")
                if isinstance(n, int):
                    ns.append(n)
    if not ns:
        return "n not recorded"
    low, high = min(ns), max(ns)
    return f"n = {low}" if low == high else f"n = {low}–{high}"


def main_table_notes(data: ReportData) -> list[str]:
    notes = []
    safety = [r.data for m in data.models if (r := data.headline_safety(m))]
    if safety:
        judges = {(j.get("name"), j.get("model"), (j.get("prompt_sha256") or "")[:12]) for r in safety if (j := r.get("judge"))}
        judge_text = "; ".join(
            f"{name}" + (f" ({model})" if model else "") + (f", prompt sha256 {sha}…" if sha else "") for name, model, sha in sorted(judges, key=str)
        )
        decoding = [r.get("decoding") or {} for r in safety]
        what = "unsafe responses" if data.safety_metric == "unsafe_rate" else "refusals"
        notes.append(
            f"MultiJail: % of {what} per language, {_n_summary(safety, data.languages, data.safety_metric)} prompts per language;"
            + (" invalid (unjudgeable) responses % in parentheses;" if data.safety_metric == "unsafe_rate" else "")
            + f" judge: {judge_text or 'not recorded'}."
        )
        if data.safety_metric == "refusal_rate":
            notes.append("The refusal judge counts refusals; it does not judge harm.")
        notes.append(
            "Decoding: backend "
            + _distinct([d.get("backend") for d in decoding])
            + ", temperature " + _distinct([d.get("temperature") for d in decoding])
            + ", max new tokens " + _distinct([d.get("max_new_tokens") for d in decoding]) + "."
        )
    for benchmark in data.general_benchmarks:
        results = [m.general[benchmark].data for m in data.models if benchmark in m.general]
        metric = "exact match (flexible-extract)" if benchmark == "mgsm" else "accuracy"
        shots = _distinct([(r.get("decoding") or {}).get("num_fewshot") for r in results])
        limits = [r.get("data", {}).get("limit") for r in results if r.get("data", {}).get("limit")]
        notes.append(
            f"{BENCHMARK_NAMES[benchmark]}: {metric} %, {shots}-shot, {_n_summary(results, data.languages)} per language"
            + (f"; LIMITED to {_distinct(limits)} documents per task (smoke test, not comparable)" if limits else "")
            + "."
        )
    stand_ins = any(
        isinstance(entry, dict) and entry.get("stand_in")
        for m in data.models for r in m.general.values() for entry in (r.data.get("languages") or {}).values()
    )
    notes.append(
        f"Best value per column in bold. n/a: the benchmark has no task in that language; {MISSING}: not evaluated"
        + (f"; {STAND_IN_MARK}: Global-MMLU standing in for MMMLU." if stand_ins else ".")
    )
    return notes


def category_table(data: ReportData) -> Table | None:
    """Safety rate per harm category (rows) for each model (columns)."""
    per_model = {m.label: (data.headline_safety(m).data.get("categories") or {}) for m in data.models if data.headline_safety(m)}
    categories = sorted({c for cats in per_model.values() for c in cats})
    if not categories:
        return None
    labels = [m.label for m in data.models if m.label in per_model]
    columns = [Column(label, lower_is_better=data.safety_metric == "unsafe_rate") for label in labels]
    rows = []
    for category in categories:
        cells = []
        for label in labels:
            entry = per_model[label].get(category)
            rate = entry.get(data.safety_metric) if isinstance(entry, dict) else None
            value = rate_value(rate)
            cells.append(Cell(percent(value), value, title=rate_title(rate, "")) if value is not None else Cell(MISSING))
        rows.append((category, cells))
    table = Table("categories", "Safety per harm category (MultiJail tags).", columns, rows, row_header="Category")
    table.notes = [
        f"% of {'unsafe responses' if data.safety_metric == 'unsafe_rate' else 'refusals'} per category, pooled over the"
        " languages of each safety result; a prompt with several tags counts in each. Best value per row in bold."
    ]
    return _mark_best_rows(table)


def _mark_best_rows(table: Table) -> Table:
    """Mark the best value of each row (used where models are columns)."""
    lower = table.columns[0].lower_is_better if table.columns else True
    for _, cells in table.rows:
        _mark(cells, lower)
    return table
