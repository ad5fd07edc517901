"""The merge plan: a reviewable, editable, replayable record of every decision.

A plan file is YAML (JSON is valid YAML, so both load; a key twice is refused). It
records the method and its parameters, the input models with their fingerprints and
every file's size and full sha256 (so a replay names the file that changed), and for
unit-based methods one line per unit with its decision and the statistics that
led to it. `safeswap merge --plan FILE` derives every tensor's operation from
the decisions alone, so a decision edited by hand is honoured on replay.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safeswap.version import __version__
from safeswap.decide.parameters import check_alpha
from safeswap.files import atomic_write, load_yaml, read_document
from safeswap.merged_folder import PLAN_FILENAME
from safeswap.errors import SafeswapError

PLAN_FORMAT = "safeswap.plan/1"
DECISIONS = ("safety", "language", "blend")
OUTSIDE_CHOICES = ("blend", "language", "safety")
TOKENIZER_CHOICES = ("base", "safety", "language")


@dataclass
class MergePlan:
    method: str
    parameters: dict[str, Any]
    models: dict[str, dict[str, str]]
    architecture: str
    num_layers: int
    outside_layers: str = "blend"
    tokenizer_from: str = "language"
    units: list[dict[str, Any]] = field(default_factory=list)
    safeswap_version: str = __version__
    _index: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _indexed: list | None = field(default=None, init=False, repr=False, compare=False)

    def unit(self, unit_id: str) -> dict[str, Any]:
        """The row of one unit. Replay asks once per tensor, so rows are indexed by id; the index is
        rebuilt whenever `units` is replaced by another list (rows edited in place need no rebuild)."""
        if self._indexed is not self.units:
            self._index = {u["unit"]: u for u in self.units}
            self._indexed = self.units
        try:
            return self._index[unit_id]
        except KeyError:
            raise SafeswapError(f"plan has no entry for unit {unit_id}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "safeswap_version": self.safeswap_version,
            "method": self.method,
            "parameters": self.parameters,
            "architecture": self.architecture,
            "num_layers": self.num_layers,
            "outside_layers": self.outside_layers,
            "tokenizer_from": self.tokenizer_from,
            "models": self.models,
            "units": self.units,
        }

    def to_yaml(self) -> str:
        header = (
            f"# safeswap merge plan ({self.method}). Edit a unit's decision (safety | language | blend,\n"
            "# blends may carry their own alpha) and replay with: safeswap merge --plan THIS_FILE --out DIR\n"
        )
        return header + yaml.dump(self.to_dict(), Dumper=_PlanDumper, sort_keys=False, allow_unicode=True, width=200)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILENAME
        return atomic_write(path, self.to_yaml())


PLAN_FIELDS = tuple(MergePlan("", {}, {}, "", 0).to_dict())


class _PlanDumper(yaml.SafeDumper):
    """Block style for the plan, one flow-style line per unit so a plan reads like a table."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict):
    flow = "unit" in data  # unit rows
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_PlanDumper.add_representer(dict, _represent_dict)


def read_plan(path: str | os.PathLike) -> MergePlan:
    """Read a plan file and check its format (fields, choices, unit rows); every problem is one line naming it.

    The method's own parameters are checked by safeswap.decide.methods.load_plan, which
    knows the methods; this module does not, so that the methods can import it.
    """
    path, data = read_document(path, PLAN_FILENAME, "plan", load_yaml, (yaml.YAMLError,), PLAN_FORMAT)
    unknown = sorted(set(data) - set(PLAN_FIELDS))
    if unknown:
        raise SafeswapError(f"plan file {path} has unknown field {unknown[0]!r}; a plan takes {', '.join(PLAN_FIELDS)}")
    try:
        plan = MergePlan(
            method=str(data["method"]),
            parameters=dict(data.get("parameters") or {}),
            models={str(k): dict(v) for k, v in dict(data["models"]).items()},
            architecture=str(data["architecture"]),
            num_layers=int(data["num_layers"]),
            outside_layers=str(data.get("outside_layers", "blend")),
            tokenizer_from=str(data.get("tokenizer_from", "language")),
            units=[dict(u) for u in (data.get("units") or [])],
            safeswap_version=str(data.get("safeswap_version", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SafeswapError(f"plan file {path} is malformed (missing or bad field: {e})") from None
    for role, record in plan.models.items():
        record["path"] = _model_path(record.get("path"), path.parent, f"plan file {path}: model {role}")
    check_model_records(plan.models, f"plan file {path}")
    check_format(plan, str(path))
    return plan


def _model_path(ref, plan_folder: Path, what: str) -> str:
    """A plan's model path, made usable from any working folder: an absolute path stays,
    a relative one is taken relative to the plan file, and a hub id stays an id."""
    if not isinstance(ref, str) or not ref:
        raise SafeswapError(f"{what} has no path")
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    beside = plan_folder / path
    if beside.exists() or ref.startswith("."):
        return str(beside.absolute())
    return ref  # a hub id (org/name), or a folder that does not exist anywhere: opening it says so


def model_reference(ref: str | os.PathLike) -> str:
    """How a plan records a model: a local folder as its absolute path, a hub id as given."""
    path = Path(ref).expanduser()
    return str(path.absolute()) if path.exists() else str(ref)


def check_choices(outside_layers: str, tokenizer_from: str, where: str | None = None) -> None:
    """outside_layers and tokenizer_from against their choices; errors name the plan field, or the flag when where is None."""
    for value, choices, field_name in ((outside_layers, OUTSIDE_CHOICES, "outside_layers"),
                                       (tokenizer_from, TOKENIZER_CHOICES, "tokenizer_from")):
        if value not in choices:
            what = f"{where}: {field_name}" if where else "--" + field_name.replace("_", "-")
            raise SafeswapError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def check_format(plan: MergePlan, where: str = "plan") -> None:
    """Everything about a plan that needs no method: choices, unique unit ids, decisions, unit alphas."""
    check_choices(plan.outside_layers, plan.tokenizer_from, where)
    seen = set()
    for u in plan.units:
        uid = u.get("unit")
        if not isinstance(uid, str) or uid in seen:
            raise SafeswapError(f"{where}: unit entries need a unique 'unit' id (bad: {uid!r})")
        seen.add(uid)
        if u.get("decision") not in DECISIONS:
            raise SafeswapError(f"{where}: unit {uid} has decision {u.get('decision')!r}; use one of {', '.join(DECISIONS)}")
        if "alpha" in u:
            check_alpha(u["alpha"], f"{where}: unit {uid} alpha")


def check_model_records(models: dict, where: str) -> None:
    """Each model record of a plan or statistics file: a path, and a fingerprint and files of the right types."""
    for role, record in models.items():
        fingerprint, files = record.get("fingerprint"), record.get("files")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise SafeswapError(f"{where}: model {role} has a fingerprint that is not a string")
        if files is None:
            continue
        if not isinstance(files, dict) or not files:
            raise SafeswapError(f"{where}: model {role} 'files' must map file names to {{size, sha256}}")
        for name, entry in files.items():
            if not (isinstance(entry, dict) and set(entry) == {"size", "sha256"} and _is_size(entry["size"])
                    and isinstance(entry["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
                raise SafeswapError(f"{where}: model {role} file {name!r} must be {{size, sha256}} (a byte count and 64 hex digits)")


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _changed_file(then: dict, now: dict, folder: Path) -> tuple[Path, str] | None:
    """The first file whose record differs (path, what differs), or None; a sha256 unknown now is not compared."""
    for name in sorted(set(then) | set(now)):
        path = folder / name
        if name not in now:
            return path, "is gone"
        if name not in then:
            return path, "is new"
        a, b = then[name], now[name]
        if a["size"] != b["size"]:
            return path, f"changed ({a['size']} bytes then, {b['size']} now)"
        if b["sha256"] is not None and a["sha256"] != b["sha256"]:
            return path, f"changed (sha256 {a['sha256'][:12]}... then, {b['sha256'][:12]}... now)"
    return None


def check_identity(models: dict, current: dict[str, dict], folders: dict, what: str = "plan",
                   remedy: str = "re-run `safeswap plan`") -> None:
    """Refuse models whose bytes are not the ones a plan (or statistics) file was made from, naming the file.

    `current` is each role's identity (read.inputs.identity); a sha256 still unknown there (None:
    not cached, to be hashed during the merge) is not compared here, and the caller checks again
    once it is known. The fingerprint is compared too (a record without files, from an older
    safeswap, has only that)."""
    made = "were made" if what == "statistics" else "was made"
    for role, now in current.items():
        record = models.get(role, {})
        files = record.get("files")
        recorded = record.get("path")
        elsewhere = isinstance(recorded, str) and Path(recorded).expanduser().resolve() != Path(folders[role]).resolve()
        problem = _changed_file(files, now["files"], Path(folders[role])) if isinstance(files, dict) else None
        if problem and elsewhere:
            raise SafeswapError(f"{what} {made} for a different {role} model ({recorded}): its {problem[0].name} {problem[1]}; "
                                f"{remedy} or pass the original model")
        if problem:
            raise SafeswapError(f"{role} model file {problem[0]} {problem[1]} since the {what} {made}; {remedy} "
                                "or restore the file")
        expected = record.get("fingerprint")
        if expected and now["fingerprint"] is not None and expected != now["fingerprint"]:
            older = "" if isinstance(files, dict) else (
                " (it records no file sha256: an older safeswap's fingerprint, which sampled the files, cannot be checked)")
            raise SafeswapError(
                f"{what} {made} for a different {role} model (fingerprint {expected[:19]}..., "
                f"this one is {now['fingerprint'][:19]}...){older}; {remedy} or pass the original model"
            )
