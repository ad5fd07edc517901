"""What a search writes under DIR: candidates.csv, pareto.png and search.json (the plans: run.hand_back_plans)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from safeswap.files import atomic_write
from safeswap.search.objectives import Scores

COLUMNS = ("key", "kind", "label", "method", "outside_layers", "values", "pareto", "feasible", "harmful", "benign",
           "kept_gain", "perplexity", "harmful_rate", "harmful_low", "harmful_high", "benign_rate", "benign_low",
           "benign_high", "harmful_refusals", "harmful_n", "benign_refusals", "benign_n", "judge_harmful", "judge_benign",
           "judge_in_language", "judged_feasible", "trials", "error")


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_candidates_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per distinct candidate: its parameters (JSON), whether it is on the front and feasible, its scores."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})
    atomic_write(path, buffer.getvalue())


MODEL_NAMES = {"base": "base", "safety": "safety expert", "language": "language expert"}


def _models(ax, models: dict[str, Scores]) -> None:
    """The base and both experts as grey labelled squares: what the candidates are measured against."""
    for role, name in MODEL_NAMES.items():
        if role in models:
            ax.scatter([models[role].benign], [models[role].harmful], marker="s", s=30, color="#777777")
            ax.annotate(name, (models[role].benign, models[role].harmful), fontsize=7, xytext=(3, -9),
                        textcoords="offset points", color="#555555")


def write_pareto_figure(path: Path, scores: dict[str, Scores], front: list[str], labels: dict[str, str],
                        recommended: str | None, models: dict[str, Scores] | None = None,
                        judged: dict[str, Scores] | None = None, judged_models: dict[str, Scores] | None = None,
                        judged_labels: dict[str, str] | None = None) -> None:
    """Harmful refusal (safety) against benign refusal (over-refusal), coloured by kept language gain: every
    candidate's probe scores; beside them, when the generation stage ran, the judged rates of the judged ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if judged else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels + 1.0, 4.8), squeeze=False, layout="constrained")
    ax = axes[0][0]
    keys = list(scores)
    gains = [scores[k].kept_gain if math.isfinite(scores[k].kept_gain) else 0.0 for k in keys]
    points = ax.scatter([scores[k].benign for k in keys], [scores[k].harmful for k in keys], c=gains,
                        cmap="viridis", vmin=0.0, vmax=1.0, s=36, edgecolors="none")
    on_front = sorted((k for k in front if k in scores), key=lambda k: scores[k].benign)
    ax.plot([scores[k].benign for k in on_front], [scores[k].harmful for k in on_front], color="#E69F00",
            lw=1, label="Pareto front")
    for k, label in labels.items():
        if k in scores and label:
            ax.annotate(label, (scores[k].benign, scores[k].harmful), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    _models(ax, models or {})
    if recommended in scores:
        ax.scatter([scores[recommended].benign], [scores[recommended].harmful], marker="*", s=200,
                   facecolors="none", edgecolors="#D55E00", label="recommended")
    ax.set_xlabel("benign refusal (probe score, search split) - lower is better")
    ax.set_ylabel("harmful refusal (probe score, search split)")
    ax.set_title("every candidate: probe", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    if judged:
        jx = axes[0][1]
        keys = list(judged)
        jx.scatter([judged[k].benign for k in keys], [judged[k].harmful for k in keys],
                   c=[judged[k].kept_gain if math.isfinite(judged[k].kept_gain) else 0.0 for k in keys],
                   cmap="viridis", vmin=0.0, vmax=1.0, s=36, edgecolors="none")
        names = judged_labels or labels
        at: dict[tuple[float, float], list[str]] = {}  # candidates judged alike share one label
        for k in keys:
            if names.get(k):
                at.setdefault((judged[k].benign, judged[k].harmful), []).append(names[k])
        for point, group in at.items():
            jx.annotate(", ".join(group), point, fontsize=7, xytext=(3, 3), textcoords="offset points")
        _models(jx, judged_models or {})
        if recommended in judged:
            jx.scatter([judged[recommended].benign], [judged[recommended].harmful], marker="*", s=200,
                       facecolors="none", edgecolors="#D55E00")
        jx.set_xlabel("benign prompts refused (judge, search split) - lower is better")
        jx.set_ylabel("harmful prompts handled safely (judge, search split)")
        jx.set_title("the probe's best: generated and judged", fontsize=9)
    fig.colorbar(points, ax=list(axes[0]), label="kept language gain")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(summary, indent=1, sort_keys=True, default=str))
