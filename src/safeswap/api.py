"""The Python API: analyze -> plan -> merge. The CLI only wraps these three functions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from safeswap.version import __version__
import torch

from safeswap.read.checkpoint import DTYPES, FLOAT_DTYPES, Checkpoint
from safeswap.errors import SafeswapError
from safeswap.write.hasher import input_hasher
from safeswap.write.manifest import verify_outputs, write_manifest
from safeswap.write.model_card import write_model_card
from safeswap.decide.plan_figures import decisions_figure, specialization_figure
from safeswap.merged_folder import DECISIONS_FIGURE, PLAN_FILENAME, SPECIALIZATION_FIGURE
from safeswap.read.inputs import Inputs, fingerprint, open_inputs
from safeswap.write.engine import OutputJob, dtype_name, execute, output_dtype
from safeswap.decide.methods import get_method
from safeswap.decide.methods.replay import check_plan_fits
from safeswap.decide.operations import Take
from safeswap.decide.plan_file import OUTSIDE_CHOICES, TOKENIZER_CHOICES, MergePlan, check_fingerprints, load_plan, model_reference
from safeswap.progress import console, task
from safeswap.read.shards import TOKENIZER_FILES, model_file
from safeswap.decide.specialization import measure
from safeswap.decide.statistics import Statistics, load_statistics, save_statistics
from safeswap.write.destination import check_destination
from safeswap.write.writer import atomic_output, parse_size



def _refs(base, safety, language) -> dict[str, Any]:
    return {"base": base, "safety": safety, "language": language}


def _model_records(inputs: Inputs) -> dict[str, dict[str, str]]:
    return {role: {"path": model_reference(inputs.refs[role]), "fingerprint": fingerprint(m)}
            for role, m in inputs.models.items()}


def _measure(inputs: Inputs, show_progress: bool, allow_nonfinite: bool = False) -> Statistics:
    n = sum(1 for r in inputs.roles.values() if r.scored)
    with task("analysing", n, show_progress, unit="tensors") as advance:
        tensors = measure(inputs, on_tensor=lambda name: advance(1), allow_nonfinite=allow_nonfinite)
    return Statistics(_model_records(inputs), inputs.receiver.architecture, inputs.num_layers, tensors)


def analyze(
    base, safety, language, out: str | os.PathLike | None = None, *, granularity: str = "module",
    tau: float = 0.001, revision: str | None = None, show_progress: bool = False, allow_nonfinite: bool = False,
) -> Statistics:
    """Measure how much each expert changed each tensor and unit; optionally write the statistics folder."""
    params = get_method("adaptive").validate_parameters({"granularity": granularity, "tau": tau})
    inputs = open_inputs(_refs(base, safety, language), revision)
    try:
        stats = _measure(inputs, show_progress, allow_nonfinite)
    finally:
        inputs.close()
    if out is not None:
        units = get_method("adaptive").build_units(None, stats.tensors, params)
        save_statistics(stats, out, units, params)
        specialization_figure(units, params["tau"], Path(out) / SPECIALIZATION_FIGURE)
        decisions_figure(units, stats.num_layers, Path(out) / DECISIONS_FIGURE)
    return stats


def _method_parameters(method: str, parameters: dict[str, Any] | None, **named) -> dict[str, Any]:
    given = {k: v for k, v in named.items() if v is not None}
    return get_method(method).validate_parameters({**given, **(parameters or {})})


def _check_choices(outside_layers: str, tokenizer_from: str) -> None:
    if outside_layers not in OUTSIDE_CHOICES:
        raise SafeswapError(f"--outside-layers must be one of {', '.join(OUTSIDE_CHOICES)}, got {outside_layers!r}")
    if tokenizer_from not in TOKENIZER_CHOICES:
        raise SafeswapError(f"--tokenizer-from must be one of {', '.join(TOKENIZER_CHOICES)}, got {tokenizer_from!r}")


def _build_plan(method_name: str, params: dict, stats: Statistics | None, inputs: Inputs | None,
                outside_layers: str, tokenizer_from: str) -> MergePlan:
    _check_choices(outside_layers, tokenizer_from)
    method = get_method(method_name)
    models = stats.models if stats else _model_records(inputs)
    architecture = stats.architecture if stats else inputs.receiver.architecture
    num_layers = stats.num_layers if stats else inputs.num_layers
    units = method.build_units(inputs, stats.tensors if stats else None, params)
    return MergePlan(method_name, params, models, architecture, num_layers, outside_layers, tokenizer_from, units)


def plan(
    base=None, safety=None, language=None, *, statistics: str | os.PathLike | None = None,
    method: str = "adaptive", out: str | os.PathLike | None = None, granularity: str | None = None,
    tau: float | None = None, alpha: float | None = None, parameters: dict[str, Any] | None = None,
    outside_layers: str = "blend", tokenizer_from: str = "language", revision: str | None = None,
    show_progress: bool = False, allow_nonfinite: bool = False,
) -> MergePlan:
    """Decide every unit; from the models (analysing them) or from a statistics file."""
    params = _method_parameters(method, parameters, granularity=granularity, tau=tau, alpha=alpha)
    _check_choices(outside_layers, tokenizer_from)
    stats = None
    if statistics is not None:
        stats = load_statistics(statistics)
        inputs = None
    else:
        inputs = open_inputs(_refs(base, safety, language), revision)
    try:
        if stats is None and get_method(method).uses_statistics:
            stats = _measure(inputs, show_progress, allow_nonfinite)
        result = _build_plan(method, params, stats, inputs, outside_layers, tokenizer_from)
    finally:
        if inputs is not None:
            inputs.close()
    if out is not None:
        result.save(out)
    return result


def _operations(plan_: MergePlan, inputs: Inputs) -> dict:
    method = get_method(plan_.method)
    ops = {}
    for name in inputs.tensor_names():
        op = method.operation(plan_, name, inputs.roles[name])
        if not isinstance(op, Take) and inputs.receiver.tensors[name].dtype not in FLOAT_DTYPES:
            op = Take("language")  # integer buffers are copied, never averaged
        ops[name] = op
    return ops


def _copy_side_files(inputs: Inputs, plan_: MergePlan, folder: Path, out_dtype: str | None) -> None:
    config = dict(inputs.receiver.config)
    config.pop("auto_map", None)  # remote code is never carried over
    if out_dtype:
        torch_name = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[out_dtype]
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = torch_name
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = model_file(inputs.receiver.folder, "generation_config.json")
    if gen is not None:
        shutil.copyfile(gen, folder / "generation_config.json")
    source = inputs.models[plan_.tokenizer_from].folder
    for name in TOKENIZER_FILES:
        path = model_file(source, name)
        if path is not None:
            if name == "tokenizer_config.json":
                data = json.loads(path.read_text(encoding="utf-8"))
                data.pop("auto_map", None)
                (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            else:
                shutil.copyfile(path, folder / name)


def _write_figures(plan_: MergePlan, folder: Path) -> None:
    if not plan_.units:
        return
    tau = plan_.parameters.get("tau", 0.0)
    if all("d" in u for u in plan_.units):
        specialization_figure(plan_.units, tau, folder / SPECIALIZATION_FIGURE)
    decisions_figure(plan_.units, plan_.num_layers, folder / DECISIONS_FIGURE)


def finish_output(inputs: Inputs, plan_: MergePlan, folder: Path, shard_hashes: dict[str, str],
                  input_hashes: dict, out_dtype: str | None, command: str | None) -> None:
    """Everything a merged folder holds besides its shards and figures: configs, tokenizer,
    plan, model card and manifest."""
    _copy_side_files(inputs, plan_, folder, out_dtype)
    plan_path = plan_.save(folder / PLAN_FILENAME)
    write_model_card(plan_, folder, command)
    plan_sha = hashlib.sha256(plan_path.read_bytes()).hexdigest()
    write_manifest(folder, plan_sha, input_hashes, shard_hashes)


def _output_bytes(inputs: Inputs, out_dtype: str | None) -> int:
    return sum(t.numel * DTYPES[output_dtype(t.dtype, out_dtype)][1] for t in inputs.receiver.tensors.values())


def _check_free_space(out: Path, needed: int) -> None:
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < needed * 1.02 + (64 << 20):  # shards plus a little for configs, figures, file-system slack
        raise SafeswapError(
            f"not enough disk space at {parent}: the merge needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB is free"
        )


def merge(
    base=None, safety=None, language=None, *, out: str | os.PathLike, plan: MergePlan | str | os.PathLike | None = None,
    method: str = "adaptive", granularity: str | None = None, tau: float | None = None, alpha: float | None = None,
    parameters: dict[str, Any] | None = None, outside_layers: str = "blend", tokenizer_from: str = "language",
    dtype: str | None = None, shard_size: str | int = "5GB", force: bool = False, dry_run: bool = False,
    revision: str | None = None, show_progress: bool = False, allow_nonfinite: bool = False,
    command: str | None = None,
) -> Path | MergePlan:
    """Analyse, plan and merge in one step, or replay a plan (given as object or file).

    Returns the output folder, or the plan when dry_run (nothing is written).
    `command`, when given, is recorded in the model card as the way to reproduce the merge.
    """
    out = Path(out).expanduser()
    shard_bytes = parse_size(shard_size, "--shard-size")
    out_dtype = dtype_name(dtype)
    if plan is not None:
        plan_ = plan if isinstance(plan, MergePlan) else load_plan(plan)
        refs = {r: (given or plan_.models.get(r, {}).get("path")) for r, given in _refs(base, safety, language).items()}
        inputs = open_inputs(refs, revision)
    else:
        params = _method_parameters(method, parameters, granularity=granularity, tau=tau, alpha=alpha)
        _check_choices(outside_layers, tokenizer_from)
        inputs = open_inputs(_refs(base, safety, language), revision)
    hasher = None
    try:
        needed = _output_bytes(inputs, out_dtype)
        if not dry_run:
            check_destination(out, force, inputs.folders())
            _check_free_space(out, needed)
            hasher = input_hasher({role: m.folder for role, m in inputs.models.items()})
        analysed = plan is None and get_method(method).uses_statistics  # the analysis checks every input tensor
        if plan is not None:
            check_fingerprints(plan_, {r: fingerprint(m) for r, m in inputs.models.items()})
            check_plan_fits(plan_, inputs.receiver.architecture, inputs.num_layers, inputs.roles)
        else:
            stats = _measure(inputs, show_progress, allow_nonfinite) if analysed else None
            plan_ = _build_plan(method, params, stats, inputs, outside_layers, tokenizer_from)
        ops = _operations(plan_, inputs)
        if dry_run:
            return plan_
        with atomic_output(out, force, needed) as tmp, ThreadPoolExecutor(max_workers=1) as side:
            # Figures are drawn on a side thread while the main work streams tensors.
            figures = side.submit(_write_figures, plan_, tmp)
            with task("merging", needed, show_progress, unit="bytes") as advance:
                (shard_hashes,) = execute(inputs, [OutputJob(tmp, ops)], shard_bytes, out_dtype, on_bytes=advance,
                                          allow_nonfinite=allow_nonfinite, inputs_checked=analysed)
            figures.result()
            finish_output(inputs, plan_, tmp, shard_hashes, hasher.result(), out_dtype, command)
    finally:
        if hasher is not None:
            hasher.cancel()
        inputs.close()
    if show_progress:
        console.print(f"[green]merged model written to[/green] {out}")
    return out


def verify(folder: str | os.PathLike, inputs: bool = False, show_progress: bool = False) -> dict[str, int]:
    """Check a merged folder against its manifest; with inputs, every taken tensor against its source.

    Raises SafeswapError naming the first shard or tensor that differs.
    """
    folder = Path(folder)
    shards = verify_outputs(folder)
    counts = {"shards": shards, "tensors": 0}
    if not inputs:
        return counts
    plan_ = load_plan(folder / PLAN_FILENAME)
    opened = open_inputs({r: m["path"] for r, m in plan_.models.items()})
    try:
        check_fingerprints(plan_, {r: fingerprint(m) for r, m in opened.models.items()})
        check_plan_fits(plan_, opened.receiver.architecture, opened.num_layers, opened.roles)
        merged = Checkpoint(folder, "merged")
        ops = _operations(plan_, opened)
        takes = [n for n, op in ops.items() if isinstance(op, Take)]
        with merged, task("verifying", len(takes), show_progress, unit="tensors") as advance:
            for name in takes:
                source = opened.models[ops[name].role]
                if merged.tensors[name].dtype != source.tensors[name].dtype:
                    continue  # converted by --dtype: not a byte copy
                if not torch.equal(merged.read_raw(name), source.read_raw(name)):
                    raise SafeswapError(f"tensor {name} differs from the {ops[name].role} model it was taken from")
                counts["tensors"] += 1
                advance(1)
    finally:
        opened.close()
    return counts


__all__ = ["analyze", "plan", "merge", "verify", "__version__"]
