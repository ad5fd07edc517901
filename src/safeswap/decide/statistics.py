"""The statistics file: per-tensor changes and per-unit scores, readable by pandas.

`safeswap analyze --out DIR` writes:
  statistics.json   everything below plus the input models and their fingerprints
  tensor_stats.csv  one row per scored tensor: name, layer, module, projection, numel,
                    base_norm, delta_safety, delta_language, dot (<S - B, L - B>),
                    r_safety, r_language, cos
  unit_scores.csv   one row per unit: unit, layer, module, decision, d, p_safety, p_language,
                    cos (both criteria's statistics, whichever decided)
(api.analyze draws specialization.png, direction.png and decisions.png beside them.)
A plan can be made from this folder: `safeswap plan --statistics DIR` (the models it names must
still be the same bytes, and every scored tensor must have its row); files written before `dot`
was measured still plan with the norm criterion. statistics.json is read as strictly as a shard
header: a key twice, a number that is not finite, a field of the wrong type or out of range is
refused in one line naming it. The CSVs are written for people and pandas; safeswap never reads them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeswap.version import __version__
from safeswap.files import atomic_write, load_json, read_document
from safeswap.errors import SafeswapError
from safeswap.decide.plan_file import check_model_records
from safeswap.decide.specialization import TensorStat

STATISTICS_FORMAT = "safeswap.statistics/1"
STATISTICS_FILENAME = "statistics.json"


@dataclass
class Statistics:
    models: dict[str, dict[str, str]]
    architecture: str
    num_layers: int
    tensors: list[TensorStat]

    def to_dict(self, units: list[dict[str, Any]] | None = None, parameters: dict | None = None) -> dict[str, Any]:
        return {
            "format": STATISTICS_FORMAT,
            "safeswap_version": __version__,
            "architecture": self.architecture,
            "num_layers": self.num_layers,
            "models": self.models,
            "parameters": parameters or {},
            "tensors": [t.row() for t in self.tensors],
            "units": units or [],
        }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def save_statistics(stats: Statistics, folder: str | os.PathLike, units: list[dict], parameters: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write(folder / STATISTICS_FILENAME, json.dumps(stats.to_dict(units, parameters), indent=1) + "\n")
    _write_csv(folder / "tensor_stats.csv", [t.row() for t in stats.tensors])
    _write_csv(folder / "unit_scores.csv", units)
    return path


ROLES = ("base", "safety", "language")
MODULES = ("attention", "mlp")
_NORMS = ("base_norm", "delta_safety", "delta_language")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_nonfinite(value, where: str) -> str | None:
    """Where the first NaN or infinity in a parsed JSON value is ("tensors[3].delta_safety"), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def _tensor(row, index: int, num_layers: int, where: str) -> TensorStat:
    """One tensor row, every field of its type and range."""
    at = f"{where}: tensors[{index}]"
    if not isinstance(row, dict):
        raise SafeswapError(f"{at} is not an object")
    for key, check, wanted in (("name", lambda v: isinstance(v, str) and v, "a tensor name"),
                               ("layer", lambda v: _is_int(v) and 0 <= v < num_layers, f"a layer in 0..{num_layers - 1}"),
                               ("module", lambda v: v in MODULES, " or ".join(MODULES)),
                               ("projection", lambda v: isinstance(v, str) and v, "a projection name"),
                               ("numel", lambda v: _is_int(v) and v > 0, "a positive element count"),
                               *((k, lambda v: _is_number(v) and v >= 0, "a number >= 0") for k in _NORMS),
                               ("dot", lambda v: v is None or _is_number(v), "a number or null")):
        if key not in row and key != "dot":
            raise SafeswapError(f"{at} has no {key}")
        if not check(row.get(key)):
            raise SafeswapError(f"{at}.{key} is {row.get(key)!r}; it must be {wanted}")
    return TensorStat(row["name"], row["layer"], row["module"], row["projection"], row["numel"],
                      *(float(row[k]) for k in _NORMS), None if row.get("dot") is None else float(row["dot"]))


def load_statistics(path: str | os.PathLike) -> Statistics:
    """Read statistics.json, checked field by field (see the module docstring); every problem is one line naming it.

    Whether its models are still the same bytes, and its rows the models' tensors, is checked where the
    models are open (decide.planning.check_statistics_inputs)."""
    path, data = read_document(path, STATISTICS_FILENAME, "statistics", lambda text: load_json(text, constants=True),
                               (json.JSONDecodeError, ValueError), STATISTICS_FORMAT)
    where = f"statistics file {path}"
    nonfinite = _first_nonfinite(data, "")
    if nonfinite:
        raise SafeswapError(f"{where}: {nonfinite} is not a finite number")
    architecture, num_layers, models = data.get("architecture"), data.get("num_layers"), data.get("models")
    if not isinstance(architecture, str) or not architecture:
        raise SafeswapError(f"{where}: architecture must be a model class name")
    if not (_is_int(num_layers) and num_layers > 0):
        raise SafeswapError(f"{where}: num_layers is {num_layers!r}; it must be a positive integer")
    if not isinstance(models, dict) or sorted(models) != sorted(ROLES) or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) and m["path"] for m in models.values()):
        raise SafeswapError(f"{where}: models must give a path for each of {', '.join(ROLES)}")
    check_model_records(models, where)
    tensors = data.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        raise SafeswapError(f"{where}: tensors must be a non-empty list of tensor rows")
    rows = [_tensor(row, i, num_layers, where) for i, row in enumerate(tensors)]
    seen: set[str] = set()
    for row in rows:
        if row.name in seen:
            raise SafeswapError(f"{where}: tensor {row.name} has two rows")
        seen.add(row.name)
    return Statistics({role: dict(m) for role, m in models.items()}, architecture, num_layers, rows)
