"""Merge methods by name: a table of name -> "module:Class", imported on first use.

Adding a method is writing its class (with its facts: name, summary, mergekit_name,
parameters, build_units, operation) and one line here. The table holds strings, so
the CLI can list the names without importing torch.
"""

from __future__ import annotations

import importlib
import os

from safeswap.decide.plan_file import MergePlan, read_plan
from safeswap.errors import SafeswapError

METHODS: dict[str, str] = {
    "adaptive": "safeswap.decide.methods.adaptive:Adaptive",
    "layer-swap": "safeswap.decide.methods.layer_swap:LayerSwap",
    "linear": "safeswap.decide.methods.linear:LinearMerge",
    "task-arithmetic": "safeswap.decide.methods.task_arithmetic:TaskArithmetic",
    "ties": "safeswap.decide.methods.ties:Ties",
    "dare-linear": "safeswap.decide.methods.dare_linear:DareLinear",
    "dare-ties": "safeswap.decide.methods.dare_ties:DareTies",
    "slerp": "safeswap.decide.methods.slerp:SlerpMerge",
}


def get_method(name: str):
    """An instance of the named method (a safeswap.decide.methods.base.MergeMethod)."""
    try:
        module, _, cls = METHODS[name].partition(":")
    except KeyError:
        raise SafeswapError(f"unknown merge method {name!r}; choose one of {', '.join(METHODS)}") from None
    method = getattr(importlib.import_module(module), cls)()
    assert method.name == name, f"{METHODS[name]} is named {method.name!r}"
    return method


def load_plan(path: str | os.PathLike) -> MergePlan:
    """Read a plan file and check it whole: its format, then its method and that method's parameters."""
    plan = read_plan(path)
    get_method(plan.method).validate_parameters(plan.parameters)
    return plan
