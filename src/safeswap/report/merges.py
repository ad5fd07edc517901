"""Finding a merged model's plan, figures and model card next to its weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safeswap.files import load_yaml
from safeswap.merged_folder import CARD_FILENAME, DECISIONS_FIGURE, DIRECTION_FIGURE, PLAN_FILENAME, SPECIALIZATION_FIGURE

MERGE_FIGURES = {"specialization": SPECIALIZATION_FIGURE, "direction": DIRECTION_FIGURE, "decisions": DECISIONS_FIGURE}

# Short symbols for the parameters a paper would write as Greek letters.
_SYMBOLS = {"tau": "τ", "alpha": "α", "beta": "β", "lambda": "λ"}


@dataclass
class MergeInfo:
    """What the merge engine left in a merged model's folder."""

    folder: Path
    method: str
    parameters: dict[str, Any]
    plan_path: Path
    card_path: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # role ("base", "safety", "language") -> path

    def caption(self) -> str:
        """e.g. "adaptive (granularity=module, τ=0.001, α=0.5)"."""
        return merge_caption(self.method, self.parameters)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def merge_caption(method: str, parameters: dict[str, Any]) -> str:
    parts = [f"{_SYMBOLS.get(k, k)}={_format_value(v)}" for k, v in parameters.items() if not isinstance(v, (dict, list))]
    return f"{method} ({', '.join(parts)})" if parts else method


def model_folder(path: str | None, runs_dir: Path) -> Path | None:
    """The model's folder on this machine: as recorded, or relative to the runs folder."""
    if not path:
        return None
    recorded = Path(path).expanduser()
    for candidate in (recorded, runs_dir / recorded, runs_dir.parent / recorded):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def find_merge(path: str | None, runs_dir: Path, warnings: list[str]) -> MergeInfo | None:
    """The merge next to a model path, or None for a model that is not a safeswap merge."""
    folder = model_folder(path, runs_dir)
    if folder is None or not (folder / PLAN_FILENAME).is_file():
        return None
    plan_path = folder / PLAN_FILENAME
    # Read leniently rather than with decide.plan_file.read_plan: a plan the report cannot fully
    # check (another format version, a hand edit) still shows its method, with a warning at worst.
    try:
        plan = load_yaml(plan_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        warnings.append(f"{plan_path} could not be read ({type(e).__name__}); the model is shown without its plan.")
        return None
    if not isinstance(plan, dict) or "method" not in plan:
        warnings.append(f"{plan_path} has no top-level 'method'; the model is shown without its plan.")
        return None
    parameters = plan.get("parameters") or {}
    inputs = {}
    for role, entry in (plan.get("models") or {}).items():
        if isinstance(entry, dict) and entry.get("path"):
            inputs[str(role)] = str(entry["path"])
    card = folder / CARD_FILENAME
    return MergeInfo(
        folder=folder,
        method=str(plan["method"]),
        parameters=dict(parameters) if isinstance(parameters, dict) else {},
        plan_path=plan_path,
        card_path=card if card.is_file() else None,
        figures={name: folder / f for name, f in MERGE_FIGURES.items() if (folder / f).is_file()},
        inputs=inputs,
    )
