"""Strict replay: a plan must describe exactly the model it is replayed on.

Replay derives every tensor's operation from the plan's decisions alone, so a plan
row the model does not have would be silently ignored and a unit the plan lacks
would have no decision. Both are refused, as are rows whose fields disagree with
the model or that carry a field no plan row has (a typo such as `alhpa` would
otherwise do nothing). Each problem is one line naming the entry.
"""

from __future__ import annotations

from safeswap.errors import SafeswapError
from safeswap.decide.plan_file import MergePlan, check_identity
from safeswap.read.inputs import Inputs, identity
from safeswap.decide.methods import get_method
from safeswap.decide.methods.units import model_units

UNIT_FIELDS = ("unit", "layer", "module", "projection", "decision", "alpha", "d", "p_safety", "p_language", "cos")


def check_plan_fits(plan: MergePlan, architecture: str | None, num_layers: int, roles: dict, where: str = "plan") -> None:
    """Refuse a plan whose header or units do not match the model (its architecture, layers and tensor roles)."""
    if plan.architecture != architecture:
        raise SafeswapError(f"{where} is for {plan.architecture}, but the models are {architecture}")
    if plan.num_layers != num_layers:
        raise SafeswapError(f"{where} has num_layers {plan.num_layers}, but the models have {num_layers} layers")
    granularity = get_method(plan.method).unit_granularity(plan)
    if granularity is None:
        if plan.units:
            raise SafeswapError(f"{where}: method {plan.method} takes no units, but the plan lists {len(plan.units)}")
        return
    expected = model_units(granularity, roles)
    for row in plan.units:
        uid = row["unit"]
        unknown = sorted(set(row) - set(UNIT_FIELDS))
        if unknown:
            raise SafeswapError(f"{where}: unit {uid} has unknown field {unknown[0]!r}; a unit row takes {', '.join(UNIT_FIELDS)}")
        if uid not in expected:
            raise SafeswapError(f"{where}: unit {uid} does not exist in the models at {granularity} granularity")
        for key, value in expected[uid].items():
            if key in row and row[key] != value:
                raise SafeswapError(f"{where}: unit {uid} has {key} {row[key]!r}, but that unit's {key} is {value!r}")
    listed = {row["unit"] for row in plan.units}
    order = {"attention": 0, "mlp": 1}
    missing = sorted((uid for uid in expected if uid not in listed),
                     key=lambda uid: (expected[uid]["layer"], order.get(expected[uid].get("module"), 2), uid))
    if missing:
        raise SafeswapError(
            f"{where}: no entry for unit {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; every unit of the model needs a decision"
        )


def check_replay(plan: MergePlan, inputs: Inputs, compute: bool = True) -> None:
    """Everything a replay checks against the opened models: that they are the models
    the plan was made for (every file's sha256), and that the plan fits them exactly.

    compute=False compares only the sha256 known without reading a file (hub blobs, the
    cache): a merge hashes the rest while it writes and calls check_replay_files at the end."""
    check_replay_files(plan, inputs, None, compute)
    check_plan_fits(plan, inputs.receiver.architecture, inputs.num_layers, inputs.roles)


def check_replay_files(plan: MergePlan, inputs: Inputs, hashes: dict | None, compute: bool = True) -> None:
    """The inputs' files against the plan's record of them, from `hashes` ({role: {name: {size, sha256}}},
    the merge's hasher result) when given; the first changed file is named."""
    current = {role: identity(m, hashes and hashes[role], hashes and hashes.get("base"), compute)
               for role, m in inputs.models.items()}
    check_identity(plan.models, current, {role: m.folder for role, m in inputs.models.items()})
