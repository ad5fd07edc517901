"""Which unit of a unit-based plan (adaptive, layer-swap) a tensor belongs to.

- layer granularity: every tensor of the layer, its norms included, follows the layer's unit;
- module granularity: attention and MLP tensors follow their module's unit
  (unscored attention members such as q_norm/k_norm included); norms stay with the language expert;
- projection granularity: each scored tensor is its own unit; everything else stays with the language expert.
"""

from __future__ import annotations

from safeswap.read.architecture import ATTENTION, MLP, TensorRole
from safeswap.decide.methods.base import decision_operation, is_outside, outside_operation
from safeswap.decide.operations import Linear, Take
from safeswap.decide.plan_file import MergePlan
from safeswap.decide.specialization import unit_of


def unit_for_tensor(granularity: str, name: str, role: TensorRole) -> str | None:
    """The unit id that decides this tensor, or None where the language expert's tensor stays."""
    if granularity == "layer":
        return f"layer.{role.layer}"
    if granularity == "module" and role.module in (ATTENTION, MLP):
        return unit_of("module", role.layer, role.module, name)
    if granularity == "projection" and role.scored:
        return name
    return None


def model_units(granularity: str, roles: dict[str, TensorRole]) -> dict[str, dict[str, object]]:
    """Every unit the model has at this granularity, with the fields a plan row carries for it."""
    units: dict[str, dict[str, object]] = {}
    for name, role in roles.items():
        uid = None if is_outside(role) else unit_for_tensor(granularity, name, role)
        if uid is None or uid in units:
            continue
        fields: dict[str, object] = {"layer": role.layer}
        if granularity != "layer":
            fields["module"] = role.module
        if granularity == "projection":
            fields["projection"] = role.projection + (".bias" if name.endswith(".bias") else "")
        units[uid] = fields
    return units


def unit_operation(plan: MergePlan, granularity: str, name: str, role: TensorRole) -> Take | Linear:
    if is_outside(role):
        return outside_operation(plan)
    uid = unit_for_tensor(granularity, name, role)
    if uid is None:
        return Take("language")
    return decision_operation(plan.unit(uid), plan.parameters.get("alpha", 0.5))
