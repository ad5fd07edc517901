"""The report's figures: safety per language, and safety against general ability.

Colours follow the merge figures (Okabe-Ito, safe for colour-blind readers):
the safety expert blue, the language expert orange, the base grey, merges in
the palette's remaining colours.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from safeswap.evaluation.languages import language_name  # noqa: E402
from safeswap.report.collect import ModelResults, ReportData  # noqa: E402
from safeswap.report.tables import rate_value  # noqa: E402

ROLE_COLOURS = {"base": "#999999", "safety expert": "#0072B2", "language expert": "#E69F00"}
OTHER_COLOURS = ("#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#F0E442")
DPI = 200
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def model_colours(models: list[ModelResults]) -> dict[str, str]:
    colours, others = {}, iter(OTHER_COLOURS)
    for model in models:
        if model.role in ROLE_COLOURS and ROLE_COLOURS[model.role] not in colours.values():
            colours[model.label] = ROLE_COLOURS[model.role]
    for index, model in enumerate(m for m in models if m.label not in colours):
        colours[model.label] = next(others, None) or plt.get_cmap("tab20")(index % 20)
    return colours


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _safety_rate(data: ReportData, model: ModelResults, lang: str) -> dict | None:
    result = data.headline_safety(model)
    entry = (result.data.get("languages") or {}).get(lang) if result else None
    rate = entry.get(data.safety_metric) if isinstance(entry, dict) else None
    return rate if rate_value(rate) is not None else None


def safety_bars(data: ReportData, path: Path) -> Path | None:
    """Grouped bars: the safety rate per language, one bar per model, with 95% intervals."""
    languages = [lang for lang in data.languages if any(_safety_rate(data, m, lang) for m in data.models)]
    models = [m for m in data.models if any(_safety_rate(data, m, lang) for lang in languages)]
    if not languages or not models:
        return None
    colours = model_colours(data.models)
    width = 0.8 / len(models)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(min(10.0, max(7.0, 0.6 + len(languages) * (0.3 + 0.18 * len(models)))), 2.8))
        for i, model in enumerate(models):
            xs, ys, low, high = [], [], [], []
            for j, lang in enumerate(languages):
                rate = _safety_rate(data, model, lang)
                if rate is None:
                    continue
                value = rate_value(rate)
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(100 * value)
                low.append(100 * (value - rate.get("low", value)))
                high.append(100 * (rate.get("high", value) - value))
            ax.bar(xs, ys, width * 0.92, color=colours[model.label], label=model.label)
            ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        ax.set_xticks(range(len(languages)), [language_name(lang) for lang in languages])
        what = "unsafe responses" if data.safety_metric == "unsafe_rate" else "refusals"
        ax.set_ylabel(f"{what} (%)")
        ax.set_ylim(0, min(100, max(5.0, ax.get_ylim()[1])))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(frameon=False, ncol=min(len(models), 5), loc="lower center", bbox_to_anchor=(0.5, 1.0))
        return _save(fig, path)


def _general_score(model: ModelResults, benchmarks: list[str], lang: str) -> float | None:
    scores = []
    for benchmark in benchmarks:
        result = model.general.get(benchmark)
        entry = (result.data.get("languages") or {}).get(lang) if result else None
        value = entry.get(result.data["metric"]) if isinstance(entry, dict) else None
        if not isinstance(value, (int, float)):
            return None
        scores.append(float(value))
    return sum(scores) / len(scores) if scores else None


def _shared_benchmarks(data: ReportData, models: list[ModelResults], lang: str) -> list[str]:
    """Benchmarks every plotted model has a score for in this language, so the means compare like with like."""
    return [b for b in data.general_benchmarks if all(_general_score(m, [b], lang) is not None for m in models)]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (higher is better on both), sorted by x."""
    front = [
        p for p in points
        if not any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)
    ]
    return sorted(set(front))


def legend_label(model: ModelResults) -> str:
    return f"{model.label}: {model.merge.caption()}" if model.merge else model.label


def _staircase(front: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The front's attainment line: everything below and left of it is dominated."""
    xs, ys = [front[0][0]], [front[0][1]]
    for (x0, _), (x1, y1) in zip(front, front[1:]):
        xs += [x0, x1]
        ys += [y1, y1]
    return xs, ys


LABEL_OFFSETS = ((4, 3), (4, -9), (-4, 3), (-4, -9), (4, 10), (4, -16))  # points; tried in this order


def _annotate(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 6) -> None:
    """Label each point at the first offset whose text box overlaps no label placed before it."""
    ax.autoscale_view()
    to_pixels = ax.figure.dpi / 72
    boxes: list[tuple[float, float, float, float]] = []
    for (x, y), label in zip(points, labels):
        px, py = ax.transData.transform((x, y))
        width, height = 0.55 * fontsize * len(label) * to_pixels, fontsize * to_pixels
        for dx, dy in LABEL_OFFSETS:
            left = px + dx * to_pixels - (width if dx < 0 else 0)
            bottom = py + dy * to_pixels
            box = (left, bottom, left + width, bottom + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                break
        boxes.append(box)
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha="right" if dx < 0 else "left")


def tradeoff(data: ReportData, path: Path) -> Path | None:
    """Per language: mean general score (x) against safety (y), the Pareto front drawn."""
    from matplotlib.lines import Line2D

    panels = []
    for lang in data.languages:
        models = [m for m in data.models if _safety_rate(data, m, lang)]
        benchmarks = _shared_benchmarks(data, models, lang)
        if models and benchmarks:
            panels.append((lang, models, benchmarks))
    if not panels:
        return None
    colours = model_colours(data.models)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    safe = data.safety_metric == "unsafe_rate"
    plotted: dict[str, ModelResults] = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns, 2.5 * rows), squeeze=False)
        for ax, (lang, models, benchmarks) in zip(axes.flat, panels):
            points = []
            for model in models:
                x = 100 * _general_score(model, benchmarks, lang)
                value = rate_value(_safety_rate(data, model, lang))
                y = 100 * (1 - value if safe else value)
                points.append((x, y))
                plotted[model.label] = model
                ax.scatter([x], [y], s=30, marker="D" if model.merge else "o", color=colours[model.label],
                           zorder=3, edgecolor="black", linewidth=0.4)
            front = pareto_front(points)
            if len(front) > 1:
                ax.plot(*_staircase(front), ls="--", lw=0.8, color="black", alpha=0.6, zorder=2)
            names = ", ".join("Belebele" if b == "belebele" else b.upper() for b in benchmarks)
            ax.set_title(f"{language_name(lang)} ({lang})")
            ax.set_xlabel(f"general score (%): mean of {names}", fontsize=7)
            ax.set_ylabel("1 − unsafe rate (%)" if safe else "refusal rate (%)")
            ax.grid(alpha=0.3)
            ax.margins(x=0.3, y=0.15)
            _annotate(ax, points, [m.label for m in models])
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        handles = [
            Line2D([], [], ls="none", marker="D" if m.merge else "o", markersize=5, color=colours[label],
                   markeredgecolor="black", markeredgewidth=0.4, label=legend_label(m))
            for label, m in plotted.items()
        ]
        handles.append(Line2D([], [], ls="--", lw=0.8, color="black", alpha=0.6, label="Pareto front"))
        fig.tight_layout()
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(handles)), frameon=False)
        return _save(fig, path)
