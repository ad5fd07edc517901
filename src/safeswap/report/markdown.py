"""report.md: the tables as pipe tables, figures as linked PNGs."""

from __future__ import annotations

from safeswap.evaluation.languages import language_name
from safeswap.report.collect import ModelResults
from safeswap.report.document import Document, Figure, SearchSection, role_text, row_subtitle
from safeswap.report.tables import Table


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row_head(doc: Document, head: ModelResults | str, full: bool) -> str:
    if isinstance(head, str):
        return _escape(head)
    text = f"**{_escape(head.label)}**"
    if not full:
        return text
    subtitle = row_subtitle(head)
    if subtitle:
        text += f" <br>{_escape(subtitle)}"
    links = doc.model_links.get(head.label, {})
    parts = [f"[{name}]({href})" for name, href in (("plan", links.get("plan")), ("model card", links.get("card"))) if href]
    if parts:
        text += " <br>" + " · ".join(parts)
    return text


def table_markdown(doc: Document, number: int, table: Table) -> str:
    headers = [table.row_header] + [f"{c.group_short or c.group} · {c.name}" if c.group else c.name for c in table.columns]
    lines = [
        f"**Table {number}.** {table.caption}",
        "",
        "| " + " | ".join(_escape(h) for h in headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|",
    ]
    for head, cells in table.rows:
        shown = [f"**{_escape(c.text)}**" if c.best else _escape(c.text) for c in cells]
        lines.append("| " + " | ".join([_row_head(doc, head, table.full_row_heads)] + shown) + " |")
    lines.append("")
    lines += [f"*{_escape(note)}*  " for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def _figure(doc: Document, figure: Figure) -> list[str]:
    number = doc.figure_number(figure)
    return [f"![Figure {number}]({figure.path.as_posix()})", "", f"**Figure {number}.** {figure.caption}", ""]


def search_markdown(doc: Document, section: SearchSection) -> list[str]:
    """A search's section: statement, counts and constraints, Pareto figure, held-out table, probe/judge agreement."""
    out = [f"## Merge search: {_escape(section.name)}", "", f"Search folder: `{section.folder}`", "", f"**Statement.** {section.statement}", ""]
    if section.recommended:
        plan = f" · [plan]({section.plan_link})" if section.plan_link else ""
        out += [f"{section.recommended}{plan}", ""]
    out += ["  \n".join(section.facts), ""]
    if section.figure is not None:
        out += _figure(doc, section.figure)
    if section.final is not None:
        out += [table_markdown(doc, doc.table_number(section.final), section.final), ""]
    if section.correlation:
        out += [section.correlation, ""]
    if section.generation is not None:
        out += [table_markdown(doc, doc.table_number(section.generation), section.generation), ""]
    return out


def _models_markdown(doc: Document) -> list[str]:
    """Main results, details, merges: everything drawn from the result files."""
    data = doc.data
    out = [
        f"{len(data.models)} models ({', '.join(m.label for m in data.models)}) in "
        f"{len(data.languages)} languages ({', '.join(language_name(lang) for lang in data.languages)}).",
        "",
    ]
    tables = doc.numbered_tables()[: len(doc.tables)]
    out += ["## Main results", "", table_markdown(doc, *tables[0])]
    for figure in doc.figures:
        out += _figure(doc, figure)
    if len(tables) > 1:
        out += ["## Details", ""]
        for number, table in tables[1:]:
            out += [table_markdown(doc, number, table), ""]
    if doc.merges:
        out += ["## Merges", ""]
        for section in doc.merges:
            model = section.model
            out += [f"### {model.label}: {model.merge.caption()}", ""]
            links = [f"[plan]({section.plan_link})"] if section.plan_link else []
            links += [f"[model card]({section.card_link})"] if section.card_link else []
            if links:
                out += [" · ".join(links), ""]
            for figure in section.figures:
                out += _figure(doc, figure)
    return out


def render_markdown(doc: Document) -> str:
    data = doc.data
    out = [f"# {doc.title}", ""]
    if data.models:
        out += _models_markdown(doc)
    else:
        out += [f"No evaluation results under `{data.runs_dir}`; this report shows {len(doc.searches)} merge search(es) only.", ""]
    for section in doc.searches:
        out += search_markdown(doc, section)
    if data.models:
        out += ["## Models", ""]
        out += ["| Model | Role | Path | Fingerprint |", "|:---|:---|:---|:---|"]
        for model in data.models:
            fingerprints = ", ".join(f"`{f[:19]}…`" for f in sorted(model.fingerprints)) or "–"
            out.append(f"| {_escape(model.label)} | {_escape(role_text(model))} | `{_escape(model.path or '–')}` | {fingerprints} |")
        out.append("")
    if data.warnings:
        out += ["## Warnings", ""] + [f"- {_escape(w)}" for w in data.warnings] + [""]
    return "\n".join(out).rstrip() + "\n"
