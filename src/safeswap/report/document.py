"""What a report holds, in order, independent of the format it is written in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safeswap.report.collect import ModelResults, ReportData
from safeswap.report.tables import Table


def safe_name(label: str) -> str:
    """A label as a file name (as the result files spell it)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in label)


@dataclass
class Figure:
    key: str
    path: Path  # inside the report folder
    caption: str
    dpi: int | None = None  # when known, the page shows the figure at its printed size


@dataclass
class MergeSection:
    model: ModelResults
    figures: list[Figure]
    plan_link: str | None  # relative to the report folder
    card_link: str | None


@dataclass
class SearchSection:
    """One `safeswap search` folder as the report shows it (built by safeswap.report.search)."""

    name: str  # the folder's name, unique among the report's searches
    folder: Path
    statement: str
    recommended: str | None  # "Recommended (on ...): label: method (parameters)", None when nothing was recommended
    plan_link: str | None  # the recommended plan copied into the report, relative to it
    facts: list[str]  # counts, constraints, split
    figure: Figure | None  # the Pareto front
    final: Table | None  # held-out evaluation
    correlation: str | None  # "Probe vs judge (Spearman, n candidates): harmful 0.83, benign 0.40"
    generation: Table | None  # the candidates generated and judged

    @property
    def tables(self) -> list[Table]:
        return [t for t in (self.final, self.generation) if t is not None]


@dataclass
class Document:
    title: str
    data: ReportData
    tables: list[Table]  # main first
    figures: list[Figure]
    merges: list[MergeSection]
    model_links: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> {"plan": .., "card": ..}
    searches: list[SearchSection] = field(default_factory=list)

    def numbered_tables(self) -> list[tuple[int, Table]]:
        """The report's tables first, then each search's, numbered through."""
        return list(enumerate(self.tables + [t for s in self.searches for t in s.tables], start=1))

    def table_number(self, table: Table) -> int:
        return next(n for n, t in self.numbered_tables() if t is table)

    def numbered_figures(self) -> list[tuple[int, Figure]]:
        """Report figures first, then each merge's own, then each search's, numbered through."""
        figures = list(self.figures) + [f for m in self.merges for f in m.figures]
        figures += [s.figure for s in self.searches if s.figure is not None]
        return list(enumerate(figures, start=1))

    def figure_number(self, figure: Figure) -> int:
        return next(n for n, f in self.numbered_figures() if f is figure)


def role_text(model: ModelResults) -> str:
    """The model's role for the models table: merge method and parameters, base or expert, or a dash."""
    if model.merge is not None:
        return model.merge.caption()
    return model.role or "–"


def row_subtitle(model: ModelResults) -> str:
    """The line under a model's name: its merge method and parameters, or its role."""
    if model.merge is not None:
        return model.merge.caption()
    return model.role if model.role and model.role != model.label else ""
