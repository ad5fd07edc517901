"""The result file every evaluation writes and the report reads: schema `safeswap.result/1`, writer, reader.

One JSON file per (model, benchmark, judge), its fields typed by `ResultPayload`
below. A rate is a `Rate`, the interval being the 95% Wilson score interval. A
score that does not exist for a language (no task for it) is the string "n/a",
never a missing key.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Literal, TypedDict, Union

from safeswap.errors import SafeswapError
from safeswap.files import atomic_write

SCHEMA = "safeswap.result/1"
RESULT_SUFFIX = ".result.json"
NOT_AVAILABLE = "n/a"


class Rate(TypedDict):
    """k of n, with its 95% Wilson interval."""

    value: float  # k / n (NaN when n = 0)
    low: float
    high: float
    k: int
    n: int


class _ModelRequired(TypedDict):
    label: str
    path: str  # an absolute folder, or a hub id / served model name
    fingerprint: str


class ModelInfo(_ModelRequired, total=False):
    revision: str | None  # hub revision (safety results)


class JudgeRecord(TypedDict, total=False):
    """Who labelled the answers; a judge adds its own details (translate, backend, ...) beside these keys."""

    name: str
    model: str | None
    prompt_sha256: str | None


class _DataRequired(TypedDict):
    source: str  # a path, hf://..., bundled:..., or "lm-eval tasks"
    sha256: str | None


class DataInfo(_DataRequired, total=False):
    limit: int | float | None  # general: documents per task
    n_prompts_in_source: int  # safety
    languages_in_source: list[str]  # safety


# One language's (or the pool's, or a category's) scores: "n" and the metric's value(s).
# Safety: {"n": int, "<label>_rate": Rate, ...}. General: {"task": str, "<metric>": float,
# "<metric>_stderr": float | None, "n": int, "stand_in": bool, ...}.
Scores = dict[str, Any]


class _ResultRequired(TypedDict):
    kind: Literal["safety", "general"]
    benchmark: str  # "multijail", "belebele", "mmmlu", "mgsm"
    model: ModelInfo
    metric: str  # the headline metric: "unsafe_rate", "refusal_rate", "acc", "exact_match"
    languages: dict[str, Union[Scores, str]]  # "n/a" where the benchmark has no such language


class ResultPayload(_ResultRequired, total=False):
    """A result file's content (`schema` is filled in by write_result)."""

    schema: str  # SCHEMA
    judge: JudgeRecord | None  # None for general ability
    decoding: dict[str, Any] | None  # backend, max_new_tokens, temperature, ...
    data: DataInfo
    overall: Scores | None
    categories: dict[str, Scores] | None
    extra: dict[str, Any]  # benchmark-specific: benign over-refusal, task names, subset, warnings, ...
    safeswap_version: str


REQUIRED_KEYS = tuple(_ResultRequired.__annotations__)


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n (Wilson 1927).

    Preferred over the normal approximation because it stays inside [0, 1]
    and behaves at k = 0 or k = n, which is common for refusal rates.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}]")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # At k = 0 or k = n the bound is exactly 0 or 1; rounding would leave 1e-16 off.
    return (0.0 if k == 0 else low, 1.0 if k == n else high)


def rate(k: int, n: int) -> Rate:
    """A rate with its 95% Wilson interval, in the schema's shape."""
    low, high = wilson_interval(k, n)
    return {"value": (k / n) if n else float("nan"), "low": low, "high": high, "k": int(k), "n": int(n)}


def result_filename(label: str, benchmark: str, judge: str | None = None) -> str:
    parts = [label, benchmark] + ([judge] if judge else [])
    safe = "__".join("".join(c if c.isalnum() or c in "-._" else "_" for c in p) for p in parts)
    return safe + RESULT_SUFFIX


def write_result(out_dir: str | os.PathLike, payload: ResultPayload) -> Path:
    """Write a result JSON atomically (files.atomic_write) and return its path."""
    payload = ResultPayload(payload)
    payload.setdefault("schema", SCHEMA)
    for key in REQUIRED_KEYS:
        if key not in payload:
            raise ValueError(f"result payload lacks required key {key!r}")
    judge = (payload.get("judge") or {}).get("name")
    path = Path(out_dir) / result_filename(payload["model"]["label"], payload["benchmark"], judge)
    return atomic_write(path, json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def iter_results(runs_dir: str | os.PathLike) -> Iterator[tuple[Path, ResultPayload]]:
    """Every result file under runs_dir (recursively), sorted by path for stable reports."""
    for path in sorted(Path(runs_dir).rglob("*" + RESULT_SUFFIX)):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafeswapError(f"result file {path} is not valid JSON ({e.__class__.__name__})") from None
        if data.get("schema") == SCHEMA:
            yield path, data
