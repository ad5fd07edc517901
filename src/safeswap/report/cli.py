"""`safeswap report RUNS_DIR --out REPORT_DIR [--search DIR ...]`: a thin command over `safeswap.report.build_report`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from safeswap.evaluation.comma_lists import split_commas


def report_command(
    runs_dir: Path = typer.Argument(..., help="Folder searched (recursively) for *.result.json files."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Report folder (an earlier report there is replaced)."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated labels: which models, in which row order."),
    languages: Optional[str] = typer.Option(None, "--languages", "-l", help="Comma-separated languages, in column order."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Safety judge for the main table (default: a harm judge covering most models)."),
    title: str = typer.Option("Safety and general ability", "--title", help="Report title."),
    search: Optional[List[Path]] = typer.Option(
        None, "--search", help="A `safeswap search` folder to show in a Merge search section (repeatable)."),
) -> None:
    """Compare models: main table, per-category safety, figures; report.md and a self-contained report.html."""
    from rich.console import Console

    from safeswap.report.build import build_report

    console = Console(stderr=True)
    with console.status("writing report"):
        path = build_report(runs_dir, out, models=split_commas(models) or None,
                            languages=split_commas(languages) or None, judge=judge, title=title,
                            searches=search or None)
    console.print(f"wrote {path / 'report.md'}")
    console.print(f"wrote {path / 'report.html'}")
