"""The Python API, one function per stage: analyze, plan, merge, verify. The CLI wraps these.

Each function checks its arguments, then makes one call into its stage:
read/ (open and check the models), decide/ (statistics, plans), write/ (the merge pipeline).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safeswap.decide.methods import get_method, load_plan
from safeswap.decide.plan_file import MergePlan, check_choices
from safeswap.decide.planning import (analyse, analysis_units, build_plan, check_statistics_inputs, method_parameters,
                                     needs_dots)
from safeswap.decide.statistics import Statistics, load_statistics, save_statistics
from safeswap.errors import SafeswapError
from safeswap.read.inputs import open_inputs
from safeswap.write import pipeline
from safeswap.write.adapter_output import check_output_kind
from safeswap.write.destination import check_clear_of_inputs
from safeswap.write.engine import dtype_name
from safeswap.write.verify import verify_folder
from safeswap.write.writer import parse_size


def _refs(base, safety, language) -> dict[str, Any]:
    return {"base": base, "safety": safety, "language": language}


def analyze(
    base, safety, language, out: str | os.PathLike | None = None, *, granularity: str = "module",
    tau: float = 0.001, criterion: str | None = None, threshold: float | None = None, revision: str | None = None,
    show_progress: bool = False, allow_nonfinite: bool = False,
) -> Statistics:
    """Measure how much each expert changed each tensor and unit, and in which direction; optionally write the
    statistics folder with specialization.png, direction.png and decisions.png (decided by `criterion`)."""
    params = method_parameters("adaptive", None, granularity=granularity, tau=tau, criterion=criterion,
                               threshold=threshold)
    inputs = open_inputs(_refs(base, safety, language), revision)
    try:
        if out is not None:
            check_clear_of_inputs(out, inputs.folders(), "statistics folder")
        stats = analyse(inputs, show_progress, allow_nonfinite)
    finally:
        inputs.close()
    if out is not None:
        from safeswap.decide.plan_figures import unit_figures  # matplotlib: only where figures are drawn

        units = analysis_units(stats, params)
        save_statistics(stats, out, units, params)
        unit_figures(units, stats.num_layers, out, params)
    return stats


def plan(
    base=None, safety=None, language=None, *, statistics: str | os.PathLike | None = None,
    method: str = "adaptive", out: str | os.PathLike | None = None, granularity: str | None = None,
    tau: float | None = None, alpha: float | None = None, parameters: dict[str, Any] | None = None,
    outside_layers: str = "blend", tokenizer_from: str = "language", revision: str | None = None,
    show_progress: bool = False, allow_nonfinite: bool = False,
) -> MergePlan:
    """Decide every unit; from the models (analysing them) or from a statistics file."""
    params = method_parameters(method, parameters, granularity=granularity, tau=tau, alpha=alpha)
    check_choices(outside_layers, tokenizer_from)
    if statistics is not None:
        stats = load_statistics(statistics)
        # The models the statistics were measured on (or the ones given): they must still be those bytes.
        refs = {role: given or stats.models.get(role, {}).get("path")
                for role, given in _refs(base, safety, language).items()}
        inputs = open_inputs(refs, revision)
        try:
            if out is not None:
                check_clear_of_inputs(out, inputs.folders(), "plan file")
            check_statistics_inputs(stats, inputs)
        finally:
            inputs.close()
        result = build_plan(method, params, stats, None, outside_layers, tokenizer_from)
    else:
        inputs = open_inputs(_refs(base, safety, language), revision)
        try:
            if out is not None:
                check_clear_of_inputs(out, inputs.folders(), "plan file")
            stats = (analyse(inputs, show_progress, allow_nonfinite, needs_dots(method, params))
                     if get_method(method).uses_statistics else None)
            result = build_plan(method, params, stats, inputs, outside_layers, tokenizer_from)
        finally:
            inputs.close()
    if out is not None:
        result.save(out)
    return result


def merge(
    base=None, safety=None, language: str | os.PathLike | dict[str, str] | None = None, *, out: str | os.PathLike,
    plan: MergePlan | str | os.PathLike | None = None, method: str = "adaptive", granularity: str | None = None,
    tau: float | None = None, alpha: float | None = None, parameters: dict[str, Any] | None = None,
    outside_layers: str = "blend", tokenizer_from: str = "language", dtype: str | None = None,
    shard_size: str | int = "5GB", force: bool = False, dry_run: bool = False, revision: str | None = None,
    show_progress: bool = False, allow_nonfinite: bool = False, command: str | None = None,
    output: str = "checkpoint",
) -> Path | MergePlan:
    """Analyse, plan and merge in one step, or replay a plan (given as object or file).

    `language` is one expert, or {code: expert} for several: then OUT/<code>/ holds each
    merge, reading the base and the safety expert once for all. Returns the output folder,
    or the plan when dry_run (nothing is written). `command`, when given, is recorded in the
    model card as the way to reproduce the merge. output="adapter" writes, where every expert is a
    LoRA adapter over `base`, one PEFT LoRA adapter instead of full weights (write.adapter_output;
    `dtype` is then the factors' dtype).
    """
    several = isinstance(language, dict)
    if several and (plan is not None or dry_run):
        raise SafeswapError("--plan and --dry-run take a single --language")
    if several and not language:
        raise SafeswapError("no language experts given")
    settings = pipeline.WriteSettings(
        Path(out).expanduser(), dtype_name(dtype), parse_size(shard_size, "--shard-size"), force, show_progress,
        allow_nonfinite, command, output=check_output_kind(output),
    )
    recipe = None
    if plan is not None:
        plan = plan if isinstance(plan, MergePlan) else load_plan(plan)
        base, safety, language = (given or plan.models.get(role, {}).get("path")
                                  for role, given in _refs(base, safety, language).items())
    else:
        recipe = pipeline.Recipe(method, method_parameters(method, parameters, granularity=granularity, tau=tau, alpha=alpha),
                                 outside_layers, tokenizer_from)
        check_choices(outside_layers, tokenizer_from)
    languages = language if several else {pipeline.SINGLE: language}
    plans = pipeline.merge(base, safety, languages, settings, recipe=recipe, plan=plan, revision=revision, dry_run=dry_run)
    return plans[pipeline.SINGLE] if dry_run else settings.out


def verify(folder: str | os.PathLike, inputs: bool = False, show_progress: bool = False) -> dict[str, int]:
    """Check a merged folder against its manifest; with inputs, every taken tensor against its source.

    Raises SafeswapError naming the first shard or tensor that differs.
    """
    return verify_folder(Path(folder), inputs, show_progress)


__all__ = ["analyze", "plan", "merge", "verify"]
