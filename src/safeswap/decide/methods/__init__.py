"""Merge methods by name. Adding a method is adding a class and one line here."""

from __future__ import annotations

import os

from safeswap.decide.plan_file import MergePlan, read_plan
from safeswap.errors import SafeswapError
from safeswap.decide.methods.adaptive import Adaptive
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.dare_linear import DareLinear
from safeswap.decide.methods.dare_ties import DareTies
from safeswap.decide.methods.layer_swap import LayerSwap
from safeswap.decide.methods.linear import LinearMerge
from safeswap.decide.methods.task_arithmetic import TaskArithmetic
from safeswap.decide.methods.ties import Ties

METHODS: dict[str, type[MergeMethod]] = {
    method.name: method
    for method in (Adaptive, LayerSwap, LinearMerge, TaskArithmetic, Ties, DareLinear, DareTies)
}


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]()
    except KeyError:
        raise SafeswapError(f"unknown merge method {name!r}; choose one of {', '.join(METHODS)}") from None


def load_plan(path: str | os.PathLike) -> MergePlan:
    """Read a plan file and check it whole: its format, then its method and that method's parameters."""
    plan = read_plan(path)
    get_method(plan.method).validate_parameters(plan.parameters)
    return plan
