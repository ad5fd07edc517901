"""The statistics file: per-tensor changes and per-unit scores, readable by pandas.

`safeswap analyze --out DIR` writes:
  statistics.json   everything below plus the input models and their fingerprints
  tensor_stats.csv  one row per scored tensor: name, layer, module, projection, numel,
                    base_norm, delta_safety, delta_language, dot (<S - B, L - B>),
                    r_safety, r_language, cos
  unit_scores.csv   one row per unit: unit, layer, module, decision, d, p_safety, p_language,
                    cos (both criteria's statistics, whichever decided)
(api.analyze draws specialization.png, direction.png and decisions.png beside them.)
A plan can be made from this folder alone: `safeswap plan --statistics DIR`; files
written before `dot` was measured still plan with the norm criterion.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeswap.version import __version__
from safeswap.files import atomic_write, read_document
from safeswap.errors import SafeswapError
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


def load_statistics(path: str | os.PathLike) -> Statistics:
    path, data = read_document(path, STATISTICS_FILENAME, "statistics", json.loads, (json.JSONDecodeError,),
                               STATISTICS_FORMAT)
    try:
        tensors = [
            TensorStat(t["name"], int(t["layer"]), t["module"], t["projection"], int(t["numel"]),
                       float(t["base_norm"]), float(t["delta_safety"]), float(t["delta_language"]),
                       None if t.get("dot") is None else float(t["dot"]))
            for t in data["tensors"]
        ]
        return Statistics(dict(data["models"]), str(data["architecture"]), int(data["num_layers"]), tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise SafeswapError(f"statistics file {path} is malformed (bad field: {e})") from None
