"""From open models to statistics, to a plan, to one operation per tensor: the decide stage as functions.

Used by the API (analyze, plan) and by the write pipeline; the engine downstream sees
only the {tensor: operation} dict this module returns, never a plan.
"""

from __future__ import annotations

from typing import Any

from safeswap.decide.methods import get_method
from safeswap.decide.methods.adaptive import unit_rows
from safeswap.decide.operations import Take
from safeswap.decide.plan_file import MergePlan, check_choices, model_reference
from safeswap.decide.specialization import TensorStat, measure_many
from safeswap.decide.statistics import Statistics
from safeswap.progress import task
from safeswap.read.checkpoint import FLOAT_DTYPES
from safeswap.read.inputs import Inputs, fingerprint


def model_records(inputs: Inputs) -> dict[str, dict[str, str]]:
    """How a plan or statistics file records its models: path and content fingerprint by role."""
    return {role: {"path": model_reference(inputs.refs[role]), "fingerprint": fingerprint(m)}
            for role, m in inputs.models.items()}


def method_parameters(method: str, parameters: dict[str, Any] | None, **named) -> dict[str, Any]:
    """The method's full, checked parameters from named arguments (None = unset) and a parameters dict."""
    given = {k: v for k, v in named.items() if v is not None}
    return get_method(method).validate_parameters({**given, **(parameters or {})})


def measure_languages(inputs: Inputs, keys: list[str], show_progress: bool,
                      allow_nonfinite: bool = False, dots: bool = True) -> dict[str, list[TensorStat]]:
    """Tensor statistics of the safety expert against each language expert (by input key), with a progress bar.

    dots=False skips <S - B, L - B> (the direction criterion's input) where nothing will read it."""
    n = sum(1 for r in inputs.roles.values() if r.scored)
    with task("analysing", n, show_progress, unit="tensors") as advance:
        return measure_many(inputs, keys, lambda name: advance(1), allow_nonfinite, dots)


def needs_dots(method: str, params: dict[str, Any]) -> bool:
    """Whether a plan of this method and parameters reads the dot products: only the direction criterion does."""
    return method == "adaptive" and params.get("criterion") == "direction"


def analyse(inputs: Inputs, show_progress: bool, allow_nonfinite: bool = False, dots: bool = True) -> Statistics:
    """The statistics of a base / safety / language triple."""
    tensors = measure_languages(inputs, ["language"], show_progress, allow_nonfinite, dots)["language"]
    return Statistics(model_records(inputs), inputs.receiver.architecture, inputs.num_layers, tensors)


def analysis_units(stats: Statistics, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The unit rows `analyze` writes: the adaptive rule's decisions under params' criterion, with d, p_S,
    p_L and cos whatever the criterion, so unit_scores.csv shows both criteria per unit."""
    return unit_rows(stats.tensors, params, with_cos=True)


def build_plan(method_name: str, params: dict, stats: Statistics | None, inputs: Inputs | None,
               outside_layers: str, tokenizer_from: str) -> MergePlan:
    """Decide every unit, from statistics when the method needs them, else from the models' shapes alone."""
    check_choices(outside_layers, tokenizer_from)
    method = get_method(method_name)
    models = stats.models if stats else model_records(inputs)
    architecture = stats.architecture if stats else inputs.receiver.architecture
    num_layers = stats.num_layers if stats else inputs.num_layers
    units = method.build_units(inputs, stats.tensors if stats else None, params)
    return MergePlan(method_name, params, models, architecture, num_layers, outside_layers, tokenizer_from, units)


def operations(plan: MergePlan, inputs: Inputs) -> dict:
    """Replay: the operation for every tensor, derived from the plan's decisions alone."""
    method = get_method(plan.method)
    ops = {}
    for name in inputs.tensor_names():
        op = method.operation(plan, name, inputs.roles[name])
        if not isinstance(op, Take) and inputs.receiver.tensors[name].dtype not in FLOAT_DTYPES:
            op = Take("language")  # integer buffers are copied, never averaged
        ops[name] = op
    return ops
