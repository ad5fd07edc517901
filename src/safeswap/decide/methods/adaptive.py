"""Safety-aware adaptive swapping (Shin & Hwang, EACL 2026).

Per unit u, with p_X the normalised specialisation of expert X:
    d(u) = p_safety(u) - p_language(u)
    d >  tau  -> take the safety expert's unit
    d < -tau  -> keep the language expert's unit
    otherwise -> blend alpha * W_safety + (1 - alpha) * W_language
"""

from __future__ import annotations

from typing import Any

from safeswap.errors import SafeswapError
from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.units import unit_operation
from safeswap.decide.specialization import GRANULARITIES, unit_scores


def decide(d: float, tau: float) -> str:
    if d > tau:
        return "safety"
    if d < -tau:
        return "language"
    return "blend"


class Adaptive(MergeMethod):
    name = "adaptive"
    summary = ("safety-aware adaptive layer swapping (Shin & Hwang, EACL 2026): each unit comes from the expert "
               "that specialised it more (d = p_S - p_L beyond ±tau); the others are blended alpha·S + (1-alpha)·L")
    uses_statistics = True
    defaults = {"granularity": "module", "tau": 0.001, "alpha": 0.5}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        check.reject_unknown(self.name, params, self.defaults)
        p = {**self.defaults, **params}
        if p["granularity"] not in GRANULARITIES:
            raise SafeswapError(f"unknown granularity {p['granularity']!r}; choose one of {', '.join(GRANULARITIES)}")
        try:
            p["tau"] = float(p["tau"])
        except (TypeError, ValueError):
            raise SafeswapError(f"tau must be a number, got {p['tau']!r}") from None
        if not p["tau"] >= 0:
            raise SafeswapError(f"tau must be >= 0, got {p['tau']}")
        p["alpha"] = check.check_alpha(p["alpha"])
        return p

    def build_units(self, inputs, stats, params):
        units = []
        for u in unit_scores(stats, params["granularity"]):
            row = {"unit": u.unit, "layer": u.layer}
            if u.module:
                row["module"] = u.module
            if u.projection:
                row["projection"] = u.projection
            row.update(decision=decide(u.d, params["tau"]), d=u.d, p_safety=u.p_safety, p_language=u.p_language)
            units.append(row)
        return units

    def unit_granularity(self, plan):
        return plan.parameters["granularity"]

    def operation(self, plan, name, role):
        return unit_operation(plan, plan.parameters["granularity"], name, role)
