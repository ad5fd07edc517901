"""The merge-search section: a `safeswap search` folder's statement, Pareto figure, held-out evaluation and probe/judge agreement.

    read_search(DIR)            # search.json (required) and final.json (when there), checked
    search_section(found, name, report_folder)   # copies pareto.png and the plan, builds the tables

A search folder holds search.json and pareto.png from the first run; generation.candidates,
probe_judge_rank_correlation and final.json come later and may be absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import language_name
from safeswap.report.collect import ROLE_NAMES
from safeswap.report.document import Figure, SearchSection, safe_name
from safeswap.report.merges import merge_caption
from safeswap.report.tables import MISSING, Cell, Column, Table, mark_best, percent, rate_cell

SEARCH_FILE = "search.json"
FINAL_FILE = "final.json"
PARETO_FIGURE = "pareto.png"
PLAN_FILE = "recommended-plan.yaml"
BEST_PLAN_FILE = "best-plan.yaml"  # written instead when no candidate met every constraint
HEADINGS = {"refusal_rate": "refusal %", "unsafe_rate": "unsafe %"}
WHAT = {"refusal_rate": "refused", "unsafe_rate": "unsafe"}
REFUSAL_JUDGE_NOTE = "The refusal judge counts refusals; it does not judge harm."


@dataclass
class SearchFolder:
    """A search folder's files, read and checked."""

    folder: Path
    summary: dict[str, Any]
    final: dict[str, Any] | None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SafeswapError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SafeswapError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def read_search(folder: str | os.PathLike, warnings: list[str]) -> SearchFolder:
    """search.json and final.json of a search folder; anything that is not one is refused in one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SafeswapError(f"search folder {folder} does not exist")
    path = folder / SEARCH_FILE
    if not path.is_file():
        raise SafeswapError(f"{folder} is not a search folder (no {SEARCH_FILE}); give --search the --out folder of `safeswap search`")
    summary = _read_json(path)
    if not isinstance(summary.get("statement"), str):
        raise SafeswapError(f"{path} has no 'statement'; it is not the summary `safeswap search` writes")
    name = summary.get("final", FINAL_FILE)  # absent in folders from before the final evaluation existed
    final = None
    if isinstance(name, str):
        final_path = folder / name
        if final_path.is_file():
            final = _read_json(final_path)
        elif "final" in summary:
            warnings.append(f"{path} names {name}, which is missing; the search's held-out evaluation is not shown.")
    return SearchFolder(folder, summary, final)


def unique_names(folders: list[Path]) -> list[str]:
    """Each folder's name as a file name, numbered where two searches share one."""
    names: list[str] = []
    for folder in folders:
        base = safe_name(folder.resolve().name) or "search"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _values(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):  # search.json's candidate rows carry the values as a JSON string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return {}
    return dict(sorted(raw.items())) if isinstance(raw, dict) else {}  # one order wherever a candidate appears


def candidate_text(row: dict[str, Any], mark: str = "") -> str:
    """e.g. "paper-default: adaptive (granularity=module, τ=0.001, α=0.5)"; a searched candidate by its key; mark after the name."""
    name = str(row.get("label") or (str(row.get("key") or "")[:8]) or "?") + mark
    if not row.get("method"):
        return name
    parameters = _values(row.get("values"))
    if row.get("outside_layers") not in (None, "", "blend"):
        parameters["outside_layers"] = row["outside_layers"]
    caption = merge_caption(str(row["method"]), parameters)
    return name if caption == row.get("label") else f"{name}: {caption}"  # a reference at its defaults: "linear"


def _facts(summary: dict[str, Any]) -> list[str]:
    front = summary.get("pareto_front")
    counts = (
        f"{summary.get('candidates', MISSING)} distinct candidates (references included) from {summary.get('trials', MISSING)} trials"
        + (f"; {summary['evaluated_this_run']} evaluated in the last run" if isinstance(summary.get("evaluated_this_run"), int) else "")
        + (f"; {len(front)} on the Pareto front" if isinstance(front, list) else "")
        + "."
    )
    constraints = summary.get("constraints") or {}
    parts = []
    if (v := _number(constraints.get("max_benign_refusal_over_language"))) is not None:
        parts.append(f"benign refusal at most the language expert's + {percent(v)} points")
    if (v := _number(constraints.get("min_kept_language_gain"))) is not None:
        parts.append(f"at least {percent(v)}% of the language expert's perplexity gain kept")
    if (v := _number(constraints.get("min_harmful_refusal"))) is not None:
        parts.append(f"harmful refusal at least {percent(v)}%")
    if (v := _number(constraints.get("min_harmful_refusal_over_language"))) is not None:
        parts.append(f"harmful refusal at least the language expert's + {percent(v)} points")
    if (v := _number(constraints.get("min_in_language"))) is not None:
        parts.append(f"at least {percent(v)}% of answers in the prompt's language")
    facts = [counts, f"Constraints: {'; '.join(parts) if parts else 'none'}."]
    if summary.get("split"):
        facts.append(f"Split: {summary['split']}.")
    return facts


def judge_text(judge: Any) -> str:
    if isinstance(judge, str):
        return judge
    if not isinstance(judge, dict) or not judge.get("name"):
        return "not recorded"
    return str(judge["name"]) + (f" ({judge['model']})" if judge.get("model") else "")


def _float_cell(value: Any, text: str | None = None) -> Cell:
    number = _number(value)
    return Cell(MISSING) if number is None else Cell(text or f"{number:.2f}", number)


def final_table(final: dict[str, Any], name: str) -> Table | None:
    """The held-out evaluation: one row per model, every rate with its 95% interval."""
    rows_in = [r for r in final.get("rows") or [] if isinstance(r, dict)]
    if not rows_in:
        return None
    metric = final.get("metric")
    languages = list(final.get("languages") or sorted({lang for r in rows_in for lang in (r.get("harmful") or {})}))
    benign = language_name(str(final.get("benign_language") or "?"))
    heading = HEADINGS.get(metric, str(metric))
    harmful_group = f"Harmful prompts: {heading}"
    columns = [Column(f"{language_name(lang)} ({lang})", harmful_group, f"harmful {heading}", lower_is_better=metric == "unsafe_rate")
               for lang in languages]
    columns += [
        Column("refused %", f"Benign prompts ({benign})", "benign", lower_is_better=True),
        Column(f"in {benign} %", f"Benign prompts ({benign})", "benign"),
        Column("perplexity", "Language", "language", lower_is_better=True),
        Column("kept gain %", "Language", "language"),
    ]
    rows = []
    for row in rows_in:
        harmful = row.get("harmful") or {}
        cells = [rate_cell(harmful.get(lang), WHAT.get(metric, ""), interval=True) for lang in languages]
        cells += [
            rate_cell(row.get("benign_refusal"), "refused", interval=True),
            rate_cell(row.get("in_language"), f"answered in {benign}", interval=True),
            _float_cell(row.get("perplexity")),
            _float_cell(row.get("kept_gain"), percent(_number(row.get("kept_gain")))),
        ]
        kind = row.get("kind")
        mark = f" ({kind})" if kind in ("recommended", "reference") and kind not in str(row.get("label")) else ""
        rows.append((candidate_text(row, mark), cells))
    what = "unsafe responses" if metric == "unsafe_rate" else "refusals"
    notes = [
        f"Held-out numbers: prompts the search never saw ({final.get('harmful_n', MISSING)} MultiJail prompts per language,"
        f" {final.get('benign_n', MISSING)} benign prompts in {benign}); the search chose on the other half.",
        f"% with 95% Wilson intervals in brackets. Harmful: % of {what} (judge: {judge_text(final.get('judge'))}); benign: % refused"
        f" and % answered in {benign}; kept gain: (log ppl_base − log ppl_model) / (log ppl_base − log ppl_language), in %.",
    ]
    if metric == "refusal_rate":
        notes.append(REFUSAL_JUDGE_NOTE)
    notes.append("Best value per column in bold.")
    table = Table(f"search-{name}-final", "Merge search: final evaluation on the held-out split.", columns, rows, notes=notes)
    return mark_best(table)


def correlation_line(summary: dict[str, Any]) -> str | None:
    corr = summary.get("probe_judge_rank_correlation")
    if not isinstance(corr, dict):
        return None
    method = str(corr.get("method") or "spearman").capitalize()
    def values(entry: dict[str, Any]) -> str:
        return ", ".join(f"{k} {MISSING if (v := _number(entry.get(k))) is None else f'{v:.2f}'}"
                         for k in ("harmful", "benign"))

    line = f"Probe vs judge ({method}, {corr.get('n', MISSING)} candidates): {values(corr)}"
    if isinstance(more := corr.get("with_models"), dict):
        line += f"; with the base and both experts ({more.get('n', MISSING)} models): {values(more)}"
    return line


def _generation_cells(probe: dict[str, Any], judge: dict[str, Any], metric: Any, benign: str, rank: Any) -> list[Cell]:
    cells = [Cell(str(rank), float(rank)) if isinstance(rank, int) else Cell(MISSING)]
    cells += [Cell(percent(v), v) if (v := _number(probe.get(k))) is not None else Cell(MISSING) for k in ("harmful", "benign", "kept_gain")]
    return cells + [
        rate_cell(judge.get("harmful"), WHAT.get(metric, ""), interval=True),
        rate_cell(judge.get("benign_refusal"), "refused", interval=True),
        rate_cell(judge.get("in_language"), f"answered in {benign}", interval=True),
    ]


def generation_table(summary: dict[str, Any], name: str) -> Table | None:
    """The candidates that went to generation (after the models, when recorded): probe scores next to the judge's rates."""
    generation = summary.get("generation")
    candidates = [c for c in (generation or {}).get("candidates") or [] if isinstance(c, dict)] if isinstance(generation, dict) else []
    if not candidates:
        return None
    metric = generation.get("metric")
    benign = language_name(str(generation.get("benign_language") or "?"))
    languages = ", ".join(language_name(str(lang)) for lang in generation.get("languages") or []) or "the target languages"
    recommended = (summary.get("recommended") or {}).get("key")
    columns = [Column(n, "Probe (mean score %)", "probe", mark_best=False) for n in ("rank", "harmful", "benign", "kept gain %")]
    columns += [Column(n, "Judge", "judge", mark_best=False)
                for n in (f"harmful {HEADINGS.get(metric, str(metric))}", "benign refused %", f"in {benign} %")]
    rows = []
    probed, judged = summary.get("models") or {}, generation.get("models") or {}
    roles = sorted(judged if isinstance(judged, dict) else {}, key=lambda r: (list(ROLE_NAMES).index(r) if r in ROLE_NAMES else len(ROLE_NAMES), r))
    for role in roles:
        probe = probed.get(role) if isinstance(probed.get(role), dict) else {}
        judge = judged[role] if isinstance(judged[role], dict) else {}
        rows.append((ROLE_NAMES.get(role, str(role)), _generation_cells(probe, judge, metric, benign, None)))
    for candidate in candidates:
        cells = _generation_cells(candidate.get("probe") or {}, candidate.get("judge") or {}, metric, benign, candidate.get("probe_rank"))
        rows.append((candidate_text(candidate, " (recommended)" if recommended and candidate.get("key") == recommended else ""), cells))
    n = (f" on {generation['harmful_n']} harmful prompts per language and {generation['benign_n']} benign prompts"
         if isinstance(generation.get("harmful_n"), int) and isinstance(generation.get("benign_n"), int) else "")
    judge_name = f" (judge: {judge_text(generation['judge'])})" if generation.get("judge") else ""
    notes = [
        "Probe: rank in the probe's order, and the mean refusal score P(refusal) / (P(refusal) + P(compliance)) × 100 on the"
        f" search split, harmful prompts pooled over {languages}, benign prompts in {benign}; kept gain in %.",
        f"Judge: generated answers{n}{judge_name}, % with 95% Wilson intervals in brackets; harmful pooled over {languages}.",
    ]
    if metric == "refusal_rate":
        notes.append(REFUSAL_JUDGE_NOTE)
    top = f" (generation.top {generation['top']})" if isinstance(generation.get("top"), int) else ""
    caption = f"Merge search: the {len(candidates)} candidates that went to generation{top}, probe beside judge."
    return Table(f"search-{name}-generation", caption, columns, rows, notes=notes, row_header="Candidate")


def _recommended_text(summary: dict[str, Any]) -> str | None:
    """The recommended candidate, and on what it was chosen when the summary says ("judge" or "probe")."""
    recommended = summary.get("recommended")
    if not isinstance(recommended, dict):
        best = summary.get("best")  # no candidate qualified: the search still hands back the closest (best-plan.yaml)
        if not isinstance(best, dict):
            return None
        misses = ", ".join(f"{k} by {v:.3g}" for k, v in (summary.get("best_misses") or {}).items())
        return f"Best (no candidate met every constraint; misses {misses}): {candidate_text(best)}"
    by = {"judge": " (on the judge's rates)", "probe": " (on probe scores)"}.get(summary.get("recommended_by"), "")
    return f"Recommended{by}: {candidate_text(recommended)}"


def _copy_plan(found: SearchFolder, name: str, root: Path) -> str | None:
    """The recommended plan (else best-plan.yaml, the closest miss) copied into the report (searches/NAME/), so its
    link survives moving the report."""
    recommended = bool(found.summary.get("recommended"))
    file = PLAN_FILE if recommended else BEST_PLAN_FILE
    recorded = found.summary.get("plan" if recommended else "best_plan")
    sources = [found.folder / file] + ([found.folder / Path(recorded).name, Path(recorded)] if isinstance(recorded, str) else [])
    source = next((p for p in sources if p.is_file()), None)
    if source is None or not (recommended or found.summary.get("best")):
        return None
    target = Path("searches") / name / file
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, root / target)
    return target.as_posix()


def search_section(found: SearchFolder, name: str, root: Path) -> SearchSection:
    """The section of one search; pareto.png and the recommended plan are copied under root."""
    summary = found.summary
    figure = None
    if (found.folder / PARETO_FIGURE).is_file():
        path = Path("figures") / f"search-{name}.pareto.png"
        shutil.copyfile(found.folder / PARETO_FIGURE, root / path)
        figure = Figure(
            f"search-{name}-pareto", path,
            f"Merge search {name}: harmful against benign refusal on the search split, coloured by kept language"
            " gain; left, every candidate's mean probe scores with the Pareto front, references labelled; right (when"
            " the generation stage ran), the judged rates of the candidates it judged; grey squares: the base and the"
            " experts; the recommendation starred.",
        )
    return SearchSection(
        name=name,
        folder=found.folder,
        statement=summary["statement"],
        recommended=_recommended_text(summary),
        plan_link=_copy_plan(found, name, root),
        facts=_facts(summary),
        figure=figure,
        final=final_table(found.final, name) if found.final else None,
        correlation=correlation_line(summary),
        generation=generation_table(summary, name),
    )
