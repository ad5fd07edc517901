"""Checks shared by the methods' parameters: each returns the clean value or raises one clear line.

Values arrive from the CLI (strings), the Python API (numbers, lists, dicts) or a
plan file (YAML scalars), so every check accepts all three.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from safeswap.errors import SafeswapError

EXPERTS = ("safety", "language")


def reject_unknown(method: str, params: dict[str, Any], allowed: Iterable[str]) -> None:
    """A parameter the method does not use is a mistake (e.g. --tau with --method ties), not something to ignore."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SafeswapError(
            f"method {method} does not take {', '.join(unknown)}; its parameters are {', '.join(sorted(allowed))}"
        )


def check_alpha(alpha: Any, what: str = "alpha") -> float:
    """The safety expert's weight in a blend: a number in [0, 1]."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SafeswapError(f"{what} must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:
        raise SafeswapError(f"{what} must lie in [0, 1], got {a}")
    return a


def number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SafeswapError(f"{what} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SafeswapError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise SafeswapError(f"{what} must be finite, got {value!r}")
    return x


def whole_number(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise SafeswapError(f"{what} must be a whole number, got {value!r}")
    try:
        n = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise SafeswapError(f"{what} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and value != n:
        raise SafeswapError(f"{what} must be a whole number, got {value!r}")
    if n < minimum:
        raise SafeswapError(f"{what} must be >= {minimum}, got {n}")
    return n


def density(value: Any) -> float:
    d = number(value, "density")
    if not 0.0 < d <= 1.0:
        raise SafeswapError(f"density must lie in (0, 1] (the fraction of each task vector kept), got {d}")
    return d


def flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise SafeswapError(f"{what} must be true or false, got {value!r}")


def weights(value: Any) -> dict[str, float]:
    """Per-expert weights from {"safety": a, "language": b}, [a, b], "a,b" or "safety=a,language=b"."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if parts and all("=" in p for p in parts):
            value = dict(p.split("=", 1) for p in parts)
        elif any("=" in p for p in parts):
            raise SafeswapError(f"weights {value!r}: give either 'a,b' or 'safety=a,language=b', not a mix")
        else:
            value = parts
    if isinstance(value, dict):
        names = {str(k).strip(): v for k, v in value.items()}
        if set(names) != set(EXPERTS):
            raise SafeswapError(f"weights must name exactly the experts {', '.join(EXPERTS)}, got {', '.join(names) or 'none'}")
        return {e: number(names[e], f"weight of {e}") for e in EXPERTS}
    if isinstance(value, (list, tuple)):
        if len(value) != len(EXPERTS):
            raise SafeswapError(f"weights takes {len(EXPERTS)} values (safety, language), got {len(value)}")
        return {e: number(v, f"weight of {e}") for e, v in zip(EXPERTS, value)}
    raise SafeswapError(f"weights must be 'a,b' (safety, language), got {value!r}")


_CHECKS = {
    "weights": weights,
    "density": density,
    "lambda": lambda v: number(v, "lambda"),
    "normalize": lambda v: flag(v, "normalize"),
    "seed": lambda v: whole_number(v, "seed"),
}


def weighted_parameters(method: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The checks that linear, task arithmetic, TIES and DARE share: unknown names refused,
    defaults filled in, then weights, density, lambda, normalize and seed checked where the method has them."""
    reject_unknown(method, params, defaults)
    p = {**defaults, **params}
    for key, validate in _CHECKS.items():
        if key in p:
            p[key] = validate(p[key])
    return p


def flag_parameters(**flags: Any) -> dict[str, Any]:
    """The method parameters a command line gave (flags left unset are omitted, so method defaults apply).

    Keys are the plan's parameter names: lambda_ -> lambda, transition-bottom -> transition_bottom.
    """
    return {key.rstrip("_"): value for key, value in flags.items() if value is not None}
