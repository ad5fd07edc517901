"""Candidates: a method with concrete search values, their method parameters, a stable key, and the reference points.

A candidate's key is the sha256 of its method, values and outside-layers choice, so the
same merge suggested twice (or by a resumed search) is evaluated once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from safeswap.search.space import MethodSpace, Param, SearchSpace


@dataclass(frozen=True)
class Candidate:
    """One merge to try: method, its search values (space names) and where the outside tensors come from."""

    method: str
    values: dict[str, Any] = field(default_factory=dict)
    outside_layers: str = "blend"
    label: str = ""  # a reference's name ("paper-default", "linear", ...); "" for searched candidates

    @property
    def key(self) -> str:
        text = json.dumps([self.method, self.values, self.outside_layers], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def parameters(self) -> dict[str, Any]:
        """The method's parameters (as decide.planning.method_parameters takes them) from the search values."""
        v = dict(self.values)
        if self.method == "linear" and "weight" in v:
            w = float(v.pop("weight"))
            v["weights"] = {"safety": w, "language": 1.0 - w}
        if self.method == "task-arithmetic" and ({"safety_weight", "language_weight"} & set(v)):
            v["weights"] = {"safety": float(v.pop("safety_weight", 1.0)), "language": float(v.pop("language_weight", 1.0))}
        return v

    def describe(self) -> str:
        values = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.values.items()))
        outside = "" if self.outside_layers == "blend" else f", outside_layers={self.outside_layers}"
        return f"{self.method}({values}{outside})"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "method": self.method, "values": self.values,
                "outside_layers": self.outside_layers, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(d["method"], dict(d["values"]), d.get("outside_layers", "blend"), d.get("label", ""))


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def suggest(trial, space: SearchSpace) -> Candidate:
    """The candidate an Optuna trial suggests: first the method, then its parameters under '<method>.<name>'."""
    names = [m.method for m in space.methods]
    method = trial.suggest_categorical("method", names) if len(names) > 1 else names[0]
    ms = next(m for m in space.methods if m.method == method)
    values, outside = {}, "blend"
    for p in ms.params:
        value = _suggest_param(trial, f"{method}.{p.name}", p)
        if p.name == "outside_layers":
            outside = value
        else:
            values[p.name] = value
    if method == "adaptive" and values.get("criterion", "norm") == "norm":
        values.pop("threshold", None)  # the direction criterion's cut; the norm rule refuses it
    return Candidate(method, values, outside)


def _suggest_param(trial, name: str, p: Param) -> Any:
    if p.kind == "fixed":
        return p.values[0]
    if p.kind == "choice":
        return trial.suggest_categorical(name, list(p.values))
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=p.step or 1, log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def _fixed(ms: MethodSpace, name: str, default: Any) -> Any:
    """A parameter's fixed value in the space, else the middle of its range or first choice, else default."""
    for p in ms.params:
        if p.name == name:
            if p.values:
                return p.values[0]
            mid = (p.low + p.high) / 2
            return int(round(mid)) if p.kind == "int" else mid
    return default


def references(space: SearchSpace, num_layers: int) -> list[Candidate]:
    """The paper's default (adaptive, module, tau 0.001, alpha 0.5) and each other method of the space at its
    defaults: always evaluated, whatever the sampler does. layer-swap takes its space's values (or middles)."""
    refs = [Candidate("adaptive", {"granularity": "module", "tau": 0.001, "alpha": 0.5}, label="paper-default")]
    for ms in space.methods:
        if ms.method == "adaptive":
            continue
        if ms.method == "layer-swap":
            quarter = max(num_layers // 4, 1)
            values = {"bottom": min(_fixed(ms, "bottom", quarter), num_layers),
                      "top": min(_fixed(ms, "top", quarter), num_layers)}
        else:
            values = {}
        refs.append(Candidate(ms.method, values, label=ms.method))
    return refs
