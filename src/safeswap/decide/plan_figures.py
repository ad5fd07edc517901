"""The figures of a merge or an analysis: specialization.png, direction.png and decisions.png.

Colours are the Okabe-Ito palette (safe for colour-blind readers): safety blue,
language orange, blend bluish green. specialization.png shows the norm rule's
statistic d, direction.png the direction rule's cos; the figure of the rule that
decided colours its bars by the plan's decisions (hand edits included), the other
by what its own rule would decide, so both criteria can be compared unit by unit.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from safeswap.decide.methods.adaptive import criterion_of, decide, decide_direction  # noqa: E402
from safeswap.merged_folder import DECISIONS_FIGURE, DIRECTION_FIGURE, SPECIALIZATION_FIGURE  # noqa: E402

SAFETY, LANGUAGE, BLEND, NEUTRAL = "#0072B2", "#E69F00", "#009E73", "#999999"
DECISION_COLOURS = {"safety": SAFETY, "language": LANGUAGE, "blend": BLEND}
DECISION_CODES = {"language": 0, "blend": 1, "safety": 2}


def _panels(units: list[dict]) -> list[tuple[str, list[dict]]]:
    """Attention and MLP side by side when units carry a module; one panel otherwise."""
    modules = [m for m in ("attention", "mlp") if any(u.get("module") == m for u in units)]
    if modules:
        return [(m, [u for u in units if u.get("module") == m]) for m in modules]
    return [("", units)]


def _row_key(unit: dict) -> str:
    if "projection" in unit:
        return f"{unit['module']}.{unit['projection']}"
    return unit.get("module") or "layer"


def unit_figures(units: list[dict], num_layers: int, folder: str | Path, parameters: dict) -> list[Path]:
    """specialization.png where every unit carries d, direction.png where every unit carries cos, and
    decisions.png; the figure of the plan's criterion shows its decisions, the other its own rule's."""
    folder, drawn = Path(folder), []
    criterion = criterion_of(parameters)
    tau, threshold = parameters.get("tau", 0.0), parameters.get("threshold", 0.0)
    if units and all("d" in u for u in units):
        own = criterion == "norm"
        decisions = None if own else [decide(u["d"], tau) for u in units]
        drawn.append(specialization_figure(units, tau, folder / SPECIALIZATION_FIGURE, decisions=decisions,
                                           title="" if own else "Specialisation per unit (bars: the norm rule's "
                                           "decision; this plan follows the direction rule)"))
    if units and all(u.get("cos") is not None for u in units):
        own = criterion == "direction"
        decisions = None if own else [decide_direction(u["cos"], threshold, tau) for u in units]
        drawn.append(direction_figure(units, threshold, tau, folder / DIRECTION_FIGURE, decisions=decisions,
                                      title="" if own else "Direction per unit (bars: the direction rule's "
                                      "decision; this plan follows the norm rule)"))
    if units:
        drawn.append(decisions_figure(units, num_layers, folder / DECISIONS_FIGURE))
    return drawn


def _colours(rows: list[dict], decisions: dict[int, str] | None) -> list[str]:
    return [DECISION_COLOURS[decisions[id(u)] if decisions is not None else u["decision"]] for u in rows]


def _layer_axis(ax, rows: list[dict]) -> None:
    x, labels = list(range(len(rows))), [str(u["layer"]) for u in rows]
    ax.set_xlabel("layer" if len(rows) <= 64 and len(set(labels)) == len(labels) else "unit (layer order)")
    step = max(1, len(x) // 16)
    ax.set_xticks(x[::step], labels[::step])
    ax.grid(alpha=0.3, axis="y")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def direction_figure(units: list[dict], threshold: float, band: float, path: str | Path,
                     decisions: list[str] | None = None, title: str = "") -> Path:
    """cos(L - B, S - B) per unit as bars coloured by decision, the threshold line and its ±band, per module.

    decisions (one per unit) colour the bars instead of the units' own decisions.
    """
    by_unit = {id(u): d for u, d in zip(units, decisions)} if decisions is not None else None
    panels = _panels(units)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False, sharey="row")
    for col, (module, rows) in enumerate(panels):
        ax = axes[0][col]
        ax.bar(range(len(rows)), [u["cos"] for u in rows], color=_colours(rows, by_unit), width=0.8)
        ax.axhspan(threshold - band, threshold + band, color=NEUTRAL, alpha=0.25, lw=0)
        ax.axhline(threshold, color="black", lw=0.9, ls="--")
        ax.axhline(0, color="black", lw=0.4)
        ax.set_title(f"{module.upper() if module else 'All units'}: does the language update work against safety?",
                     fontsize=10)
        if col == 0:
            ax.set_ylabel("cos($L - B$, $S - B$)")
        _layer_axis(ax, rows)
    band_label = f"threshold {threshold:g} (dashed) $\\pm$ {band:g}: blend"
    title = title or "Direction per unit: below the band the safety expert's unit is taken"
    return _finish_bars(fig, path, band_label, title, len(panels), top=0.86, bottom=0.2)


def _finish_bars(fig, path: str | Path, band_label: str, title: str, panels: int, **margins) -> Path:
    """The legend (decision colours and the grey band), the title and fixed margins of a per-unit bar figure.

    Fixed margins: tight_layout measured every label and took a third of the drawing time.
    """
    handles = [Patch(color=c, label=f"decision: {k}") for k, c in DECISION_COLOURS.items()]
    handles.append(Patch(color=NEUTRAL, alpha=0.25, label=band_label))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.07 if panels > 1 else 0.12, right=0.99, wspace=0.06, **margins)
    return _save(fig, path)


def specialization_figure(units: list[dict], tau: float, path: str | Path, title: str = "",
                          decisions: list[str] | None = None) -> Path:
    """p_safety and p_language per unit (top) and d with the +-tau band (bottom), per module.

    decisions (one per unit) colour the bars instead of the units' own decisions.
    """
    by_unit = {id(u): d for u, d in zip(units, decisions)} if decisions is not None else None
    panels = _panels(units)
    fig, axes = plt.subplots(2, len(panels), figsize=(6.5 * len(panels), 6.6), squeeze=False, sharex="col", sharey="row")
    for col, (module, rows) in enumerate(panels):
        x = list(range(len(rows)))
        top, bottom = axes[0][col], axes[1][col]
        top.plot(x, [u["p_safety"] for u in rows], "o-", color=SAFETY, ms=3.5, label="$p_S$ (safety expert)")
        top.plot(x, [u["p_language"] for u in rows], "s-", color=LANGUAGE, ms=3.5, label="$p_L$ (language expert)")
        top.set_ylabel("normalised specialisation $p$")
        top.set_title(f"{module.upper() if module else 'All units'}: how much each expert changed each unit")
        top.legend(frameon=False, fontsize=8)
        top.grid(alpha=0.3)
        d = [u["d"] for u in rows]
        bottom.bar(x, d, color=_colours(rows, by_unit), width=0.8)
        bottom.axhspan(-tau, tau, color=NEUTRAL, alpha=0.25, lw=0)
        bottom.axhline(0, color="black", lw=0.6)
        bottom.set_ylabel("$d = p_S - p_L$")
        _layer_axis(bottom, rows)
    title = title or "Specialisation per unit (bars coloured by decision)"
    return _finish_bars(fig, path, f"blend band $\\pm\\tau$ = {tau:g}", title, len(panels), top=0.9, bottom=0.13, hspace=0.08)


def decisions_figure(units: list[dict], num_layers: int, path: str | Path, title: str = "") -> Path:
    """A unit-by-layer heatmap of where each part of the merged model comes from."""
    row_names = list(dict.fromkeys(_row_key(u) for u in units))
    grid = [[float("nan")] * num_layers for _ in row_names]
    for u in units:
        if 0 <= u["layer"] < num_layers:
            grid[row_names.index(_row_key(u))][u["layer"]] = DECISION_CODES[u["decision"]]
    cmap = ListedColormap([LANGUAGE, BLEND, SAFETY])
    label_inches = 0.25 + 0.075 * max(len(r) for r in row_names)  # room for the longest row name
    width = max(6.0, 0.28 * num_layers + 2) + label_inches
    fig, ax = plt.subplots(figsize=(width, 1.3 + 0.4 * len(row_names)))
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=2.5, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(row_names)), row_names)
    step = max(1, num_layers // 32)
    ax.set_xticks(range(0, num_layers, step), [str(i) for i in range(0, num_layers, step)])
    ax.set_xlabel("layer")
    ax.set_xticks([i - 0.5 for i in range(num_layers + 1)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(len(row_names) + 1)], minor=True)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    counts = {k: sum(1 for u in units if u["decision"] == k) for k in DECISION_COLOURS}
    handles = [Patch(color=DECISION_COLOURS[k], label=f"{k} ({counts[k]})") for k in ("safety", "language", "blend")]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    ax.set_title(title or "Where each unit of the merged model comes from", fontsize=10)
    height = fig.get_figheight()
    fig.subplots_adjust(left=label_inches / width, right=0.99, top=1 - 0.45 / height, bottom=0.85 / height)
    return _save(fig, path)
