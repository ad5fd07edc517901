"""Fixed layer swapping (Bandarkar et al., ICLR 2025), with the safety expert in the middle.

For L decoder layers, bottom B, top T and transition zones of Nb and Nt layers:

    layers [0, B)                    language expert
    layers [B, B + Nb)               blends, safety weight j / (Nb + 1) for the j-th layer (j = 1..Nb)
    middle layers                    safety expert
    layers [L - T - Nt, L - T)       blends, safety weight falling from Nt / (Nt + 1) to 1 / (Nt + 1)
    layers [L - T, L)                language expert

A layer unit carries every tensor of the layer, norms included (layer granularity
of the core rule); embeddings, final norm and LM head follow --outside-layers as in
the core rule. "B/T" (e.g. "10/6") given as `bottom` is shorthand for bottom B, top T.
"""

from __future__ import annotations

from typing import Any

from safeswap.errors import SafeswapError
from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.units import unit_operation
from safeswap.decide.specialization import unit_scores


def split_shorthand(p: dict[str, Any]) -> dict[str, Any]:
    """bottom="10/6" -> bottom=10, top=6 (a separately given top must agree)."""
    bottom = p.get("bottom")
    if isinstance(bottom, str) and "/" in bottom:
        b, _, t = bottom.partition("/")
        if p.get("top") is not None and str(p["top"]).strip() != t.strip():
            raise SafeswapError(f"bottom {bottom!r} already sets top to {t.strip()}, but top is {p['top']!r}")
        p = {**p, "bottom": b, "top": t}
    return p


def layer_decisions(num_layers: int, p: dict[str, Any]) -> list[tuple[str, float | None]]:
    """(decision, safety weight of a blend) for every layer, bottom to top."""
    b, t, nb, nt = p["bottom"], p["top"], p["transition_bottom"], p["transition_top"]
    if b + nb + nt + t > num_layers:
        raise SafeswapError(
            f"layer-swap needs bottom + transition-bottom + transition-top + top <= {num_layers} layers, "
            f"got {b} + {nb} + {nt} + {t} = {b + nb + nt + t}"
        )
    rows = []
    for i in range(num_layers):
        if i < b or i >= num_layers - t:
            rows.append(("language", None))
        elif i < b + nb:
            rows.append(("blend", (i - b + 1) / (nb + 1)))
        elif i >= num_layers - t - nt:
            rows.append(("blend", (num_layers - t - i) / (nt + 1)))
        else:
            rows.append(("safety", None))
    return rows


def _num_layers(inputs, stats) -> int:
    if inputs is not None:
        return inputs.num_layers
    if stats:
        return max(s.layer for s in stats) + 1
    raise SafeswapError("layer-swap needs the models or a statistics file to know the number of layers")


class LayerSwap(MergeMethod):
    name = "layer-swap"
    summary = ("fixed layer swapping (Bandarkar et al., ICLR 2025): bottom and top layers from the language "
               "expert, middle layers from the safety expert, linear transition zones between them")
    defaults = {"bottom": None, "top": None, "transition_bottom": 0, "transition_top": 0, "alpha": 0.5}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        if params.get("granularity", "layer") != "layer":
            raise SafeswapError("layer-swap decides whole layers; it takes no granularity other than 'layer'")
        params.pop("granularity", None)
        check.reject_unknown(self.name, params, self.defaults)
        p = split_shorthand({**self.defaults, **params})
        if p["bottom"] is None or p["top"] is None:
            raise SafeswapError("layer-swap needs --bottom B and --top T (or the shorthand --bottom B/T, e.g. 10/6)")
        for key in ("bottom", "top", "transition_bottom", "transition_top"):
            p[key] = check.whole_number(p[key], key.replace("_", "-"))
        p["alpha"] = check.check_alpha(p["alpha"])
        return p

    def build_units(self, inputs, stats, params):
        scores = {u.unit: u for u in unit_scores(stats, "layer")} if stats else {}
        units = []
        for layer, (decision, alpha) in enumerate(layer_decisions(_num_layers(inputs, stats), params)):
            row: dict[str, Any] = {"unit": f"layer.{layer}", "layer": layer, "decision": decision}
            if alpha is not None:
                row["alpha"] = alpha
            score = scores.get(row["unit"])
            if score is not None:  # informative only: the decision does not depend on it
                row.update(d=score.d, p_safety=score.p_safety, p_language=score.p_language)
            units.append(row)
        return units

    def unit_granularity(self, plan):
        return "layer"

    def operation(self, plan, name, role):
        return unit_operation(plan, "layer", name, role)
