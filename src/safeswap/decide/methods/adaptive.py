"""Safety-aware adaptive swapping (Shin & Hwang, EACL 2026), with a direction-aware alternative criterion.

Per unit u, with p_X the normalised specialisation of expert X (criterion "norm", the default):
    d(u) = p_safety(u) - p_language(u)
    d >  tau  -> take the safety expert's unit
    d < -tau  -> keep the language expert's unit
    otherwise -> blend alpha * W_safety + (1 - alpha) * W_language

Criterion "direction" (after SafeMERGE, Djuhera et al., 2025), with cos(u) the cosine between
the language expert's update L - B and the safety expert's S - B over the unit's tensors:
    cos < threshold - tau  -> take the safety expert's unit (the language update works against it)
    cos > threshold + tau  -> keep the language expert's unit
    otherwise              -> blend, as above
"""

from __future__ import annotations

from typing import Any, Iterable

from safeswap.errors import SafeswapError
from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.units import unit_operation
from safeswap.decide.specialization import GRANULARITIES, TensorStat, UnitScore, unit_scores

CRITERIA = ("norm", "direction")
DIRECTION_PARAMETERS = {"criterion": "direction", "threshold": 0.0}  # recorded only by direction plans


def decide(d: float, tau: float) -> str:
    """The norm rule: which expert a unit comes from, by d = p_S - p_L and the band ±tau."""
    if d > tau:
        return "safety"
    if d < -tau:
        return "language"
    return "blend"


def decide_direction(cos: float, threshold: float, band: float) -> str:
    """The direction rule: an update opposing the safety expert's (cos below the band) loses the unit to it."""
    if cos < threshold - band:
        return "safety"
    if cos > threshold + band:
        return "language"
    return "blend"


def criterion_of(params: dict[str, Any]) -> str:
    """A plan's criterion; plans without one (every plan made before it existed) follow the norm rule."""
    return params.get("criterion", "norm")


def unit_decision(u: UnitScore, params: dict[str, Any]) -> str:
    if criterion_of(params) == "norm":
        return decide(u.d, params["tau"])
    if u.cos is None:
        raise SafeswapError(
            "these statistics hold no dot products <S - B, L - B> (written before the direction criterion); "
            "re-run `safeswap analyze` or plan from the models"
        )
    return decide_direction(u.cos, params["threshold"], params["tau"])


def unit_rows(stats: Iterable[TensorStat], params: dict[str, Any], with_cos: bool) -> list[dict[str, Any]]:
    """One row per unit: its place, the decision of the params' criterion, d, p_S, p_L and, with_cos, cos.

    Plans of the norm rule leave cos out (their bytes stay what they always were); analyze's
    statistics and direction plans carry it, so both criteria can be read per unit.
    """
    rows = []
    for u in unit_scores(stats, params["granularity"]):
        row: dict[str, Any] = {"unit": u.unit, "layer": u.layer}
        if u.module:
            row["module"] = u.module
        if u.projection:
            row["projection"] = u.projection
        row.update(decision=unit_decision(u, params), d=u.d, p_safety=u.p_safety, p_language=u.p_language)
        if with_cos:
            row["cos"] = u.cos
        rows.append(row)
    return rows


def _threshold(value: Any) -> float:
    t = check.number(value, "threshold")
    if not -1.0 <= t <= 1.0:
        raise SafeswapError(f"threshold must lie in [-1, 1] (it cuts a cosine), got {t}")
    return t


class Adaptive(MergeMethod):
    name = "adaptive"
    summary = ("safety-aware adaptive layer swapping (Shin & Hwang, EACL 2026): each unit comes from the expert "
               "that specialised it more (d = p_S - p_L beyond ±tau); the others are blended alpha·S + (1-alpha)·L. "
               "With criterion direction, a unit comes from the safety expert where the language expert's update "
               "points against the safety expert's (cosine below threshold - tau), from the language expert above "
               "threshold + tau, and is blended between")
    uses_statistics = True
    defaults = {"granularity": "module", "tau": 0.001, "alpha": 0.5}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """The full parameters. The norm criterion's are exactly granularity, tau and alpha, as before the
        direction criterion existed (so its plans keep their bytes); direction adds criterion and threshold."""
        check.reject_unknown(self.name, params, (*self.defaults, *DIRECTION_PARAMETERS))
        p = {**self.defaults, **params}
        criterion = p.pop("criterion", "norm")
        threshold = p.pop("threshold", None)
        if criterion not in CRITERIA:
            raise SafeswapError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        if p["granularity"] not in GRANULARITIES:
            raise SafeswapError(f"unknown granularity {p['granularity']!r}; choose one of {', '.join(GRANULARITIES)}")
        try:
            p["tau"] = float(p["tau"])
        except (TypeError, ValueError):
            raise SafeswapError(f"tau must be a number, got {p['tau']!r}") from None
        if not p["tau"] >= 0:
            raise SafeswapError(f"tau must be >= 0, got {p['tau']}")
        p["alpha"] = check.check_alpha(p["alpha"])
        if criterion == "norm":
            if threshold is not None:
                raise SafeswapError("threshold is the direction criterion's cosine cut; the norm criterion does not "
                                    "take it (set criterion direction, --criterion direction, or drop threshold)")
            return p
        if threshold is None:
            threshold = DIRECTION_PARAMETERS["threshold"]
        return {**p, "criterion": "direction", "threshold": _threshold(threshold)}

    def build_units(self, inputs, stats, params):
        return unit_rows(stats, params, with_cos=criterion_of(params) == "direction")

    def unit_granularity(self, plan):
        return plan.parameters["granularity"]

    def operation(self, plan, name, role):
        return unit_operation(plan, plan.parameters["granularity"], name, role)
