"""The search space file (YAML): methods with parameter ranges, constraints and budgets, validated into typed specs.

Every mistake is one SafeswapError line naming the field (`methods.adaptive.tau.low`, ...).
A parameter is given as a fixed value (`tau: 0.001`), a list of choices
(`granularity: [layer, module]`) or a range (`tau: {low: 0.0001, high: 0.01, log: true}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safeswap.errors import SafeswapError
from safeswap.files import load_yaml

OUTSIDE_LAYERS = ("blend", "language", "safety")
CHOICES = {
    "granularity": ("layer", "module", "projection"),
    "criterion": ("norm", "direction"),
    "outside_layers": OUTSIDE_LAYERS,
}
# What each method's search parameters are: kind ("float", "int", "choice") and the closed bounds of a number.
UNIT = (0.0, 1.0)
METHOD_KEYS: dict[str, dict[str, tuple[str, tuple[float, float] | None]]] = {
    "adaptive": {"granularity": ("choice", None), "tau": ("float", (0.0, 1.0)), "alpha": ("float", UNIT),
                 "criterion": ("choice", None), "threshold": ("float", (-1.0, 1.0))},
    "layer-swap": {"bottom": ("int", (0, 1000)), "top": ("int", (0, 1000)), "transition_bottom": ("int", (0, 1000)),
                   "transition_top": ("int", (0, 1000)), "alpha": ("float", UNIT)},
    "linear": {"weight": ("float", UNIT)},
    "task-arithmetic": {"safety_weight": ("float", (0.0, 10.0)), "language_weight": ("float", (0.0, 10.0)),
                        "lambda": ("float", (0.0, 10.0))},
    "ties": {"density": ("float", (1e-6, 1.0)), "lambda": ("float", (0.0, 10.0))},
    "dare-linear": {"density": ("float", (1e-6, 1.0)), "lambda": ("float", (0.0, 10.0))},
    "dare-ties": {"density": ("float", (1e-6, 1.0)), "lambda": ("float", (0.0, 10.0))},
    "slerp": {"t": ("float", UNIT)},
}
COMMON_KEYS = {"outside_layers": ("choice", None)}  # a plan choice every method takes
SAMPLERS = ("tpe", "nsga2")
TOP_KEYS = ("methods", "seed", "trials", "parallel", "sampler", "languages", "constraints", "probe", "split", "keep_weights",
            "generation", "final")
CONSTRAINT_KEYS = ("max_benign_refusal_over_language", "min_kept_language_gain", "min_harmful_refusal",
                   "min_harmful_refusal_over_language", "min_in_language")
GENERATION_KEYS = ("top", "harmful", "benign", "max_new_tokens", "batch_size")
FINAL_KEYS = ("harmful", "benign", "references")
PROBE_KEYS = ("harmful", "benign", "batch_size", "max_length")
SPLIT_KEYS = ("search_fraction", "seed")


@dataclass(frozen=True)
class Param:
    """One searched parameter: a fixed value, a choice among values, or a number range."""

    name: str
    kind: str  # "fixed", "choice", "float", "int"
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None


@dataclass(frozen=True)
class MethodSpace:
    method: str
    params: tuple[Param, ...]


@dataclass(frozen=True)
class Constraints:
    """What the recommended candidate must meet (None = not required)."""

    max_benign_refusal_over_language: float | None = 0.05
    min_kept_language_gain: float | None = 0.7
    min_harmful_refusal: float | None = None
    min_harmful_refusal_over_language: float | None = None  # harmful refusal at least the language expert's + this
    min_in_language: float | None = None  # share of answers in the prompt's language: judged candidates only


@dataclass(frozen=True)
class GenerationStage:
    """The probe's best candidates, answered with generation and judged, on the search split."""

    top: int = 4  # how many probe-ranked candidates (0: none; the probe alone recommends)
    harmful: int = 20  # search-split harmful prompts per target language
    benign: int = 20  # search-split benign prompts in the first target language
    max_new_tokens: int = 64
    batch_size: int = 16


@dataclass(frozen=True)
class FinalStage:
    """The held-out evaluation of the recommended candidate, the references and the models (None: skipped)."""

    harmful: int = 40  # held-out harmful prompts, each in English and every target language
    benign: int = 30  # held-out benign prompts, in English and the first target language
    references: bool = True  # the reference merges too, not only the recommended one


@dataclass(frozen=True)
class SearchSpace:
    methods: tuple[MethodSpace, ...]
    seed: int = 0
    trials: int = 20
    parallel: int = 1
    sampler: str = "tpe"
    languages: tuple[str, ...] = ("ko",)
    constraints: Constraints = field(default_factory=Constraints)
    probe_harmful: int = 40
    probe_benign: int = 40
    batch_size: int = 8
    max_length: int = 256
    search_fraction: float = 0.5
    split_seed: int = 0
    keep_weights: bool = False
    generation: GenerationStage = field(default_factory=GenerationStage)
    final: FinalStage | None = field(default_factory=FinalStage)


def _fail(where: str, message: str) -> SafeswapError:
    return SafeswapError(f"search space: {where}: {message}")


def _number(value: Any, where: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise _fail(where, f"must be a whole number, got {value!r}")
    return int(value) if integer else float(value)


def _in_bounds(value: float, bounds: tuple[float, float] | None, where: str) -> None:
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise _fail(where, f"{value:g} is outside [{bounds[0]:g}, {bounds[1]:g}]")


def _param(name: str, raw: Any, kind: str, bounds, where: str) -> Param:
    if kind == "choice":
        values = tuple(raw) if isinstance(raw, list) else (raw,)
        if not values:
            raise _fail(where, "an empty list of choices")
        for v in values:
            if v not in CHOICES[name]:
                raise _fail(where, f"unknown value {v!r}; choose from {', '.join(CHOICES[name])}")
        return Param(name, "choice" if len(values) > 1 else "fixed", values)
    integer = kind == "int"
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"low", "high", "log", "step"})
        if unknown:
            raise _fail(where, f"unknown key {unknown[0]!r}; a range takes low, high, log, step")
        if "low" not in raw or "high" not in raw:
            raise _fail(where, "a range needs both low and high")
        low, high = _number(raw["low"], f"{where}.low", integer), _number(raw["high"], f"{where}.high", integer)
        _in_bounds(low, bounds, f"{where}.low")
        _in_bounds(high, bounds, f"{where}.high")
        if low > high:
            raise _fail(where, f"low {low:g} is above high {high:g}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise _fail(f"{where}.log", f"must be true or false, got {log!r}")
        if log and low <= 0:
            raise _fail(f"{where}.low", "a log range needs low > 0")
        step = raw.get("step")
        if step is not None:
            if not integer:
                raise _fail(f"{where}.step", "only whole-number parameters take a step")
            step = _number(step, f"{where}.step", True)
            if step < 1:
                raise _fail(f"{where}.step", "must be at least 1")
        return Param(name, kind, low=low, high=high, log=log, step=step)
    if isinstance(raw, list):
        if not raw:
            raise _fail(where, "an empty list of choices")
        values = tuple(_number(v, f"{where}[{i}]", integer) for i, v in enumerate(raw))
        for i, v in enumerate(values):
            _in_bounds(v, bounds, f"{where}[{i}]")
        return Param(name, "choice" if len(values) > 1 else "fixed", values)
    value = _number(raw, where, integer)
    _in_bounds(value, bounds, where)
    return Param(name, "fixed", (value,))


def _method(method: str, raw: Any) -> MethodSpace:
    where = f"methods.{method}"
    if method not in METHOD_KEYS:
        raise _fail("methods", f"unknown method {method!r}; choose from {', '.join(METHOD_KEYS)}")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(where, f"must be a mapping of parameter ranges, got {type(raw).__name__}")
    keys = {**METHOD_KEYS[method], **COMMON_KEYS}
    params = []
    for name, value in raw.items():
        if name not in keys:
            raise _fail(where, f"unknown parameter {name!r}; {method} takes {', '.join(keys)}")
        kind, bounds = keys[name]
        params.append(_param(name, value, kind, bounds, f"{where}.{name}"))
    if method == "layer-swap" and not {"bottom", "top"} <= {p.name for p in params}:
        raise _fail(where, "layer-swap needs bottom and top (values or ranges)")
    return MethodSpace(method, tuple(params))


def _section(raw: dict, name: str, keys: tuple[str, ...]) -> dict:
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        raise _fail(name, f"must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise _fail(name, f"unknown key {unknown[0]!r}; it takes {', '.join(keys)}")
    return section


def _count(value: Any, where: str, minimum: int = 1) -> int:
    n = _number(value, where, integer=True)
    if n < minimum:
        raise _fail(where, f"must be at least {minimum}, got {n}")
    return int(n)


def _fraction(value: Any, where: str) -> float | None:
    if value is None:
        return None
    v = _number(value, where)
    _in_bounds(v, (0.0, 1.0), where)
    return v


def _generation(raw: dict) -> GenerationStage:
    g = _section(raw, "generation", GENERATION_KEYS)
    d = GenerationStage()
    return GenerationStage(top=_count(g.get("top", d.top), "generation.top", 0),
                           harmful=_count(g.get("harmful", d.harmful), "generation.harmful"),
                           benign=_count(g.get("benign", d.benign), "generation.benign"),
                           max_new_tokens=_count(g.get("max_new_tokens", d.max_new_tokens), "generation.max_new_tokens"),
                           batch_size=_count(g.get("batch_size", d.batch_size), "generation.batch_size"))


def _final(raw: dict) -> FinalStage | None:
    """`final: false` skips the held-out evaluation; a mapping sets its sizes."""
    if raw.get("final", True) is False:
        return None
    if raw.get("final") is True:
        return FinalStage()
    f = _section(raw, "final", FINAL_KEYS)
    d = FinalStage()
    references = f.get("references", d.references)
    if not isinstance(references, bool):
        raise _fail("final.references", f"must be true or false, got {references!r}")
    return FinalStage(harmful=_count(f.get("harmful", d.harmful), "final.harmful"),
                      benign=_count(f.get("benign", d.benign), "final.benign"), references=references)


def parse_space(raw: Any) -> SearchSpace:
    """A validated SearchSpace from the parsed YAML document."""
    if not isinstance(raw, dict):
        raise _fail("top level", f"must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise _fail("top level", f"unknown key {unknown[0]!r}; the file takes {', '.join(TOP_KEYS)}")
    methods = raw.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise _fail("methods", "give at least one method with its parameter ranges")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise _fail("sampler", f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    languages = raw.get("languages", ["ko"])
    languages = [languages] if isinstance(languages, str) else languages
    if not isinstance(languages, list) or not languages or not all(isinstance(x, str) and x for x in languages):
        raise _fail("languages", f"must be a list of language codes, got {raw.get('languages')!r}")
    c = _section(raw, "constraints", CONSTRAINT_KEYS)
    default = Constraints()
    constraints = Constraints(**{k: _fraction(c.get(k, getattr(default, k)), f"constraints.{k}") for k in CONSTRAINT_KEYS})
    probe = _section(raw, "probe", PROBE_KEYS)
    split = _section(raw, "split", SPLIT_KEYS)
    fraction = _fraction(split.get("search_fraction", 0.5), "split.search_fraction")
    if not 0.0 < fraction < 1.0:
        raise _fail("split.search_fraction", f"must lie strictly between 0 and 1, got {fraction:g}")
    keep = raw.get("keep_weights", False)
    if not isinstance(keep, bool):
        raise _fail("keep_weights", f"must be true or false, got {keep!r}")
    return SearchSpace(
        methods=tuple(_method(m, v) for m, v in methods.items()),
        seed=int(_number(raw.get("seed", 0), "seed", integer=True)),
        trials=_count(raw.get("trials", 20), "trials"),
        parallel=_count(raw.get("parallel", 1), "parallel"),
        sampler=sampler,
        languages=tuple(languages),
        constraints=constraints,
        probe_harmful=_count(probe.get("harmful", 40), "probe.harmful"),
        probe_benign=_count(probe.get("benign", 40), "probe.benign"),
        batch_size=_count(probe.get("batch_size", 8), "probe.batch_size"),
        max_length=_count(probe.get("max_length", 256), "probe.max_length", 8),
        search_fraction=fraction,
        split_seed=int(_number(split.get("seed", 0), "split.seed", integer=True)),
        keep_weights=keep,
        generation=_generation(raw),
        final=_final(raw),
    )


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search space file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SafeswapError(f"search space file not found: {path}")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None)  # names a duplicate key
        raise SafeswapError(f"search space {path}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    return parse_space(raw)
