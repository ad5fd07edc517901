"""The result file every evaluation writes and the report reads.

One JSON file per (model, benchmark, judge). Schema `safeswap.result/1`:

    {
      "schema": "safeswap.result/1",
      "kind": "safety" | "general",
      "benchmark": "multijail" | "belebele" | "mmmlu" | "mgsm" | ...,
      "model": {"label": str, "path": str, "fingerprint": str},
      "judge": {"name": str, "model": str | null, "prompt_sha256": str | null} | null,
      "decoding": {"backend": str, "max_new_tokens": int, "temperature": float, ...} | null,
      "data": {"source": str, "sha256": str, ...},
      "metric": str,                       # headline metric, e.g. "unsafe_rate", "refusal_rate", "acc"
      "languages": {lang: {metric_name: value_or_rate, "n": int, ...}},
      "overall": {metric_name: value_or_rate, "n": int} | null,
      "categories": {category: {metric_name: value_or_rate, "n": int}} | null,
      "extra": {...},                      # benchmark-specific fields (benign over-refusal, task names, ...)
      "safeswap_version": str
    }

A rate is {"value": float, "low": float, "high": float, "k": int, "n": int}, the
interval being the 95% Wilson score interval. A score that does not exist for a
language (no task for it) is the string "n/a", never a missing key.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "safeswap.result/1"
RESULT_SUFFIX = ".result.json"
NOT_AVAILABLE = "n/a"


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


def rate(k: int, n: int) -> dict[str, Any]:
    """A rate with its 95% Wilson interval, in the schema's shape."""
    low, high = wilson_interval(k, n)
    return {"value": (k / n) if n else float("nan"), "low": low, "high": high, "k": int(k), "n": int(n)}


def result_filename(label: str, benchmark: str, judge: str | None = None) -> str:
    parts = [label, benchmark] + ([judge] if judge else [])
    safe = "__".join("".join(c if c.isalnum() or c in "-._" else "_" for c in p) for p in parts)
    return safe + RESULT_SUFFIX


def write_result(out_dir: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a result JSON atomically (temp file + rename) and return its path."""
    payload = dict(payload)
    payload.setdefault("schema", SCHEMA)
    for key in ("kind", "benchmark", "model", "metric", "languages"):
        if key not in payload:
            raise ValueError(f"result payload lacks required key {key!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judge = (payload.get("judge") or {}).get("name")
    path = out_dir / result_filename(payload["model"]["label"], payload["benchmark"], judge)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".json")
    os.fchmod(fd, 0o644)  # mkstemp makes files private; results are meant to be shared
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def iter_results(runs_dir: str | os.PathLike) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every result file under runs_dir (recursively), sorted by path for stable reports."""
    for path in sorted(Path(runs_dir).rglob("*" + RESULT_SUFFIX)):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            from safeswap.errors import SafeswapError

            raise SafeswapError(f"result file {path} is not valid JSON ({e.__class__.__name__})") from None
        if data.get("schema") == SCHEMA:
            yield path, data
