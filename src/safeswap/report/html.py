"""report.html: one self-contained page (styles inline, figures embedded as PNG data).

Styled like a paper appendix: serif text, booktabs-style tables (rules above
and below, none between columns), numbered captions above tables and below
figures.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from safeswap.version import __version__
from safeswap.evaluation.languages import language_name
from safeswap.report.collect import ModelResults
from safeswap.report.document import Document, Figure, SearchSection, role_text, row_subtitle
from safeswap.report.tables import Table

CSS = """
:root { --rule: #000; --muted: #555; }
* { box-sizing: border-box; }
body { font-family: "Latin Modern Roman", "CMU Serif", "STIX Two Text", Georgia, "Times New Roman", serif;
       color: #111; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 2.2rem 2rem 4rem; }
h1 { font-size: 1.55rem; font-weight: normal; margin: 0 0 .3rem; }
h2 { font-size: 1.15rem; font-weight: bold; margin: 2.4rem 0 .8rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.6rem 0 .5rem; }
p.lede { color: var(--muted); margin: 0 0 1.2rem; font-size: .92rem; }
a { color: #0b4f8a; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.8rem; }
.table-box { width: fit-content; margin: 0 auto; }
.table-box table + table { margin-top: 1.1rem; }
table.booktabs { border-collapse: collapse; font-size: .8rem;
                 font-variant-numeric: tabular-nums lining-nums; }
table.booktabs caption { caption-side: top; text-align: left; font-size: .88rem; padding-bottom: .45rem; white-space: nowrap; }
table.booktabs caption b { margin-right: .3rem; }
table.booktabs thead tr:first-child th { border-top: 1.6px solid var(--rule); }
table.booktabs thead tr:last-child th { border-bottom: .8px solid var(--rule); }
table.booktabs tbody tr:last-child td, table.booktabs tbody tr:last-child th { border-bottom: 1.6px solid var(--rule); }
table.booktabs th, table.booktabs td { padding: .26rem .5rem; white-space: nowrap; vertical-align: top; }
table.booktabs th { font-weight: normal; }
table.booktabs th.group { border-bottom: .6px solid var(--rule); text-align: center; font-style: italic; }
table.booktabs th.group span { display: block; }
table.booktabs th.col { text-align: right; }
table.booktabs td.num { text-align: right; }
table.booktabs td.na { color: #888; }
table.booktabs td.sep, table.booktabs th.sep { border-left: .9rem solid transparent; }
table.booktabs th.row { text-align: left; }
table.booktabs th.row .sub { display: block; font-size: .72rem; color: var(--muted); font-style: italic;
                             white-space: normal; max-width: 13rem; }
table.booktabs th.row .links { font-size: .72rem; }
.notes { font-size: .76rem; color: #333; margin: .45rem 0 0; max-width: 62rem; }
.notes p { margin: .15rem 0; }
figure { margin: 1.4rem auto 2rem; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: .84rem; margin-top: .4rem; text-align: left; max-width: 900px; margin-left: auto; margin-right: auto; }
.merge-figures { display: flex; gap: 1.5rem; flex-wrap: wrap; justify-content: center; }
.merge-figures figure { flex: 1 1 420px; margin: .5rem 0 1rem; }
.warnings { border-left: 3px solid #d55e00; padding: .2rem .9rem; font-size: .85rem; }
code { font-size: .78rem; }
table.plain { border-collapse: collapse; font-size: .8rem; margin: 0 auto; }
table.plain th, table.plain td { padding: .22rem .6rem; text-align: left; border-bottom: .5px solid #ddd; }
footer { margin-top: 3rem; font-size: .75rem; color: var(--muted); }
"""


def _row_head(doc: Document, head: ModelResults | str, full: bool) -> str:
    if isinstance(head, str):
        return f'<th class="row" scope="row">{escape(head)}</th>'
    parts = [f"<b>{escape(head.label)}</b>"]
    if not full:
        return f'<th class="row" scope="row">{parts[0]}</th>'
    subtitle = row_subtitle(head)
    if subtitle:
        parts.append(f'<span class="sub">{escape(subtitle)}</span>')
    links = doc.model_links.get(head.label, {})
    anchors = [
        f'<a href="{escape(href)}">{name}</a>' for name, href in (("plan", links.get("plan")), ("model card", links.get("card"))) if href
    ]
    if anchors:
        parts.append(f'<span class="links">{" · ".join(anchors)}</span>')
    return f'<th class="row" scope="row">{"".join(parts)}</th>'


GROUPS_PER_TABLE = 3  # languages side by side before a wide table continues below


def _column_chunks(table: Table) -> list[list[int]]:
    """Column indices per printed table: grouped tables wrap every few groups so the page never scrolls sideways."""
    groups: list[list[int]] = []
    for i, column in enumerate(table.columns):
        if groups and column.group and column.group == table.columns[groups[-1][-1]].group:
            groups[-1].append(i)
        else:
            groups.append([i])
    if not any(c.group for c in table.columns):
        return [list(range(len(table.columns)))]
    return [sum(groups[k : k + GROUPS_PER_TABLE], []) for k in range(0, len(groups), GROUPS_PER_TABLE)]


def _head_rows(table: Table, indices: list[int], starts: set[int]) -> list[str]:
    columns = [table.columns[i] for i in indices]
    if not any(c.group for c in columns):
        return [f'<tr><th class="row">{escape(table.row_header)}</th>' + "".join(f'<th class="col">{escape(c.name)}</th>' for c in columns) + "</tr>"]
    cells = [f'<th rowspan="2" class="row">{escape(table.row_header)}</th>']
    k = 0
    while k < len(indices):
        span = 1
        while k + span < len(indices) and columns[k + span].group == columns[k].group:
            span += 1
        sep = " sep" if indices[k] in starts else ""
        cells.append(f'<th class="group{sep}" colspan="{span}">{escape(columns[k].group)}</th>')
        k += span
    names = "".join(f'<th class="col{" sep" if i in starts else ""}">{escape(table.columns[i].name)}</th>' for i in indices)
    return ["<tr>" + "".join(cells) + "</tr>", "<tr>" + names + "</tr>"]


def table_html(doc: Document, number: int, table: Table) -> str:
    chunks = _column_chunks(table)
    parts = []
    for part, indices in enumerate(chunks):
        starts = {i for i in indices[1:] if table.columns[i].group != table.columns[i - 1].group}
        body = []
        for head, cells in table.rows:
            tds = []
            for i in indices:
                cell = cells[i]
                classes = ["num"] + (["na"] if cell.value is None else []) + (["sep"] if i in starts else [])
                title = f' title="{escape(cell.title)}"' if cell.title else ""
                text = escape(cell.text)
                tds.append(f'<td class="{" ".join(classes)}"{title}>{f"<strong>{text}</strong>" if cell.best else text}</td>')
            body.append("<tr>" + _row_head(doc, head, table.full_row_heads) + "".join(tds) + "</tr>")
        caption = f"<b>Table {number}.</b>{escape(table.caption)}" if part == 0 else f"<b>Table {number}</b> (continued)."
        table_id = f"table-{table.key}" + (f"-{part + 1}" if part else "")
        parts.append(
            f'<table class="booktabs" id="{escape(table_id)}"><caption>{caption}</caption>'
            f"<thead>{''.join(_head_rows(table, indices, starts))}</thead><tbody>{''.join(body)}</tbody></table>"
        )
    notes = "".join(f"<p>{escape(n)}</p>" for n in table.notes)
    return f'<div class="table-wrap"><div class="table-box">{"".join(parts)}<div class="notes">{notes}</div></div></div>'


def _png_width(png: bytes) -> int:
    # The IHDR chunk, first in every PNG, holds the width at bytes 16-20.
    return int.from_bytes(png[16:20], "big")


def _image(root: Path, figure: Figure) -> str:
    png = (root / figure.path).read_bytes()
    encoded = base64.b64encode(png).decode("ascii")
    # 96 CSS pixels per inch: the figure's fonts then appear at their point sizes.
    width = f' width="{round(_png_width(png) * 96 / figure.dpi)}"' if figure.dpi else ""
    return f'<img src="data:image/png;base64,{encoded}"{width} alt="{escape(figure.caption)}">'


def figure_html(doc: Document, root: Path, figure: Figure) -> str:
    number = doc.figure_number(figure)
    return (
        f'<figure id="figure-{escape(figure.key)}">{_image(root, figure)}'
        f"<figcaption><b>Figure {number}.</b> {escape(figure.caption)}</figcaption></figure>"
    )


def search_html(doc: Document, root: Path, section: SearchSection) -> str:
    """A search's section: statement, counts and constraints, Pareto figure, held-out table, probe/judge agreement."""
    parts = [
        f'<section id="search-{escape(section.name)}"><h2>Merge search: {escape(section.name)}</h2>',
        f"<p>Search folder: <code>{escape(str(section.folder))}</code></p>",
        f"<p><b>Statement.</b> {escape(section.statement)}</p>",
    ]
    if section.recommended:
        plan = f' · <a href="{escape(section.plan_link)}">plan</a>' if section.plan_link else ""
        parts.append(f"<p>{escape(section.recommended)}{plan}</p>")
    parts.append("<p>" + "<br>".join(escape(f) for f in section.facts) + "</p>")
    if section.figure is not None:
        parts.append(figure_html(doc, root, section.figure))
    if section.final is not None:
        parts.append(table_html(doc, doc.table_number(section.final), section.final))
    if section.correlation:
        parts.append(f"<p>{escape(section.correlation)}</p>")
    if section.generation is not None:
        parts.append(table_html(doc, doc.table_number(section.generation), section.generation))
    return "".join(parts) + "</section>"


def _results_html(doc: Document, root: Path) -> list[str]:
    """Main results, details, merges: everything drawn from the result files."""
    tables = doc.numbered_tables()[: len(doc.tables)]
    parts = ["<section><h2>Main results</h2>", table_html(doc, *tables[0])]
    parts += [figure_html(doc, root, f) for f in doc.figures]
    parts.append("</section>")
    if len(tables) > 1:
        parts.append("<section><h2>Details</h2>" + "".join(table_html(doc, n, t) for n, t in tables[1:]) + "</section>")
    if doc.merges:
        parts.append("<section><h2>Merges</h2>")
        for section in doc.merges:
            links = [f'<a href="{escape(section.plan_link)}">plan</a>'] if section.plan_link else []
            links += [f'<a href="{escape(section.card_link)}">model card</a>'] if section.card_link else []
            parts.append(f"<h3>{escape(section.model.label)}: {escape(section.model.merge.caption())}</h3>")
            if links:
                parts.append(f"<p>{' · '.join(links)}</p>")
            parts.append('<div class="merge-figures">' + "".join(figure_html(doc, root, f) for f in section.figures) + "</div>")
        parts.append("</section>")
    return parts


def _models_html(doc: Document) -> str:
    rows = "".join(
        f"<tr><td>{escape(m.label)}</td><td>{escape(role_text(m))}</td><td><code>{escape(m.path or '–')}</code></td>"
        f"<td><code>{escape(', '.join(f[:19] + '…' for f in sorted(m.fingerprints)) or '–')}</code></td></tr>"
        for m in doc.data.models
    )
    return (
        '<section><h2>Models</h2><div class="table-wrap"><table class="plain" id="models">'
        f"<thead><tr><th>Model</th><th>Role</th><th>Path</th><th>Fingerprint</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def render_html(doc: Document, root: Path) -> str:
    """The page; `root` is the report folder the figures were written into."""
    data = doc.data
    parts = [f"<header><h1>{escape(doc.title)}</h1>"]
    if data.models:
        languages = ", ".join(language_name(lang) for lang in data.languages)
        parts.append(f'<p class="lede">{len(data.models)} models in {len(data.languages)} languages ({escape(languages)}).</p></header>')
        parts += _results_html(doc, root)
    else:
        parts.append(f'<p class="lede">No evaluation results; {len(doc.searches)} merge search(es) only.</p></header>')
    parts += [search_html(doc, root, s) for s in doc.searches]
    if data.models:
        parts.append(_models_html(doc))
    if data.warnings:
        parts.append('<section><h2>Warnings</h2><div class="warnings">' + "".join(f"<p>{escape(w)}</p>" for w in data.warnings) + "</div></section>")
    searched = f" and the search folders {', '.join(str(s.folder) for s in doc.searches)}" if doc.searches else ""
    parts.append(f"<footer>Written by safeswap {escape(__version__)} from the result files under {escape(str(data.runs_dir))}{escape(searched)}.</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(doc.title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
