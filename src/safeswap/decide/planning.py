"""From open models to statistics, to a plan, to one operation per tensor: the decide stage as functions.

Used by the API (analyze, plan) and by the write pipeline; the engine downstream sees
only the {tensor: operation} dict this module returns, never a plan.
"""

from __future__ import annotations

from typing import Any

from safeswap.decide.methods import get_method
from safeswap.decide.methods.adaptive import unit_rows
from safeswap.decide.operations import Take
from safeswap.decide.plan_file import MergePlan, check_choices, check_identity, model_reference
from safeswap.decide.specialization import TensorStat, measure_many
from safeswap.decide.statistics import Statistics
from safeswap.errors import SafeswapError
from safeswap.progress import task
from safeswap.read.checkpoint import FLOAT_DTYPES
from safeswap.read.inputs import Inputs, identity


def model_records(inputs: Inputs, hashes: dict | None = None, identify: bool = True) -> dict[str, dict]:
    """How a plan or statistics file records its models, by role: path, content fingerprint and every
    file's {size, sha256} (read.content_id), from `hashes` (the merge's hasher result) when given.

    identify=False records the paths only: a merge fills in the rest from its hasher (record_inputs),
    so that hashing runs beside the write instead of before it."""
    records = {}
    for role, m in inputs.models.items():
        records[role] = {"path": model_reference(inputs.refs[role])}
        if hashes is not None or identify:
            found = identity(m, hashes and hashes[role], hashes and hashes.get("base"))
            records[role].update(fingerprint=found["fingerprint"], files=found["files"])
    return records


def record_inputs(plan: MergePlan, inputs: Inputs, hashes: dict) -> None:
    """Fill the plan's model records with the fingerprints and files' sha256 a merge's hasher computed."""
    for role, record in model_records(inputs, hashes).items():
        plan.models.setdefault(role, {}).update(fingerprint=record["fingerprint"], files=record["files"])


def check_statistics_inputs(stats: Statistics, inputs: Inputs) -> None:
    """Statistics against the models they are used with: the same files, byte for byte (named when
    one changed), and one row per scored tensor with that tensor's layer, module, projection and size."""
    current = {role: identity(m) for role, m in inputs.models.items()}
    check_identity(stats.models, current, {role: m.folder for role, m in inputs.models.items()},
                   "statistics", "re-run `safeswap analyze`")
    if stats.architecture != inputs.receiver.architecture or stats.num_layers != inputs.num_layers:
        raise SafeswapError(f"the statistics are for {stats.architecture} with {stats.num_layers} layers, "
                            f"the models are {inputs.receiver.architecture} with {inputs.num_layers}")
    rows = {t.name: t for t in stats.tensors}
    for name, role in inputs.roles.items():
        if not role.scored:
            continue
        row = rows.pop(name, None)
        if row is None:
            raise SafeswapError(f"the statistics have no row for tensor {name} of the models")
        expected = (role.layer, role.module, role.projection, inputs.receiver.tensors[name].numel)
        if (row.layer, row.module, row.projection, row.numel) != expected:
            raise SafeswapError(f"the statistics row of tensor {name} says layer {row.layer}, {row.module}, "
                                f"{row.projection}, {row.numel} elements; the models say {expected[0]}, "
                                f"{expected[1]}, {expected[2]}, {expected[3]} elements")
    if rows:
        raise SafeswapError(f"the statistics have a row for tensor {next(iter(rows))}, which the models do not score")


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
