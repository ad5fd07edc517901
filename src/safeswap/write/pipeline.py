"""The one merge pipeline: open the inputs, check the destination, decide (or replay), stream, finish.

A merge pairs the safety expert with one or more language experts. The base and the
safety expert are read once for all of them, in the analysis (one norm pass computes
||S - B|| and every ||L_i - B||) and in the write (each input chunk is read once and
feeds every output). Each language gets its own plan, normalised over its own units,
so OUT/<code>/ is byte-identical to a separate one-language merge; a one-language
merge (code None) writes straight into OUT. A one-language merge can also stream into
a dict (`into`) instead of a folder: the same plan, operations and engine, the same bytes,
no file written (`safeswap search` probes candidates that way).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeswap.decide.methods import get_method
from safeswap.decide.methods.replay import check_replay, check_replay_files
from safeswap.decide.plan_file import MergePlan
from safeswap.decide.planning import build_plan, measure_languages, model_records, needs_dots, operations, record_inputs
from safeswap.decide.statistics import Statistics
from safeswap.errors import SafeswapError
from safeswap.progress import console, task
from safeswap.read.checkpoint import DTYPES
from safeswap.read.inputs import Inputs, open_inputs
from safeswap.stage_times import mark
from safeswap.write import adapter_output
from safeswap.write.destination import check_destination, check_free_space
from safeswap.write.engine import OutputJob, execute, output_dtype
from safeswap.write.hasher import input_hasher, known_hashes
from safeswap.write.outputs import finish_output, write_figures
from safeswap.write.writer import atomic_output

SINGLE = None  # the language code of a one-language merge
LANGUAGE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Recipe:
    """How to decide when no plan is given: a method, its checked parameters and the two choices."""

    method: str
    parameters: dict[str, Any]
    outside_layers: str = "blend"
    tokenizer_from: str = "language"


@dataclass(frozen=True)
class WriteSettings:
    out: Path
    dtype: str | None = None  # safetensors dtype name of the output floats; None keeps the inputs'
    shard_bytes: int = 5 * 10**9
    force: bool = False
    show_progress: bool = False
    allow_nonfinite: bool = False
    command: str | None = None  # recorded in the model card as the way to reproduce the merge
    # The inputs' sha256 for the manifest when already computed (write.hasher.hash_folders' shape, keyed
    # by input: base, safety, language or language:<code>); None hashes them during the merge.
    input_sha256: dict | None = None
    output: str = "checkpoint"  # or "adapter": one PEFT LoRA adapter (write.adapter_output), every expert an adapter


def _keys(languages: dict[str | None, str]) -> dict[str | None, str]:
    """Input key of each language expert: 'language' alone, else 'language:<code>' (codes name subfolders)."""
    if SINGLE in languages:
        if len(languages) > 1:
            raise SafeswapError("a one-language merge takes exactly one language expert")
        return {SINGLE: "language"}
    for code in languages:
        if not isinstance(code, str) or not LANGUAGE_CODE.match(code):
            raise SafeswapError(f"language code {code!r} must be letters, digits, '_' or '-' (it names a subfolder)")
    return {code: f"language:{code}" for code in languages}


def _view(inputs: Inputs, key: str) -> Inputs:
    """The base / safety / language triple of one language, sharing the open checkpoints."""
    models = {"base": inputs.models["base"], "safety": inputs.models["safety"], "language": inputs.models[key]}
    refs = {"base": inputs.refs["base"], "safety": inputs.refs["safety"], "language": inputs.refs[key]}
    return Inputs(models, inputs.family, inputs.roles, refs)


def _output_bytes(inputs: Inputs, out_dtype: str | None) -> int:
    return sum(t.numel * DTYPES[output_dtype(t.dtype, out_dtype)][1] for t in inputs.receiver.tensors.values())


def _decide(inputs: Inputs, views: dict, keys: dict, recipe: Recipe, settings: WriteSettings,
            identify: bool) -> dict[str | None, MergePlan]:
    """One plan per language, from statistics measured once for all of them when the method needs them."""
    stats = None
    if get_method(recipe.method).uses_statistics:
        stats = measure_languages(inputs, list(keys.values()), settings.show_progress, settings.allow_nonfinite,
                                  needs_dots(recipe.method, recipe.parameters))
        mark("analysis")
    plans = {}
    for code, view in views.items():
        records = model_records(view, identify=identify)  # else filled from the hasher by _write
        if code is not SINGLE:
            records["language"]["code"] = code
        lang_stats = Statistics(records, view.receiver.architecture, view.num_layers, stats[keys[code]]) if stats else None
        plan = build_plan(recipe.method, recipe.parameters, lang_stats, view, recipe.outside_layers, recipe.tokenizer_from)
        plan.models = records
        plans[code] = plan
    return plans


def _replay(view: Inputs, plan: MergePlan, compute: bool) -> dict[str | None, MergePlan]:
    check_replay(plan, view, compute)  # without compute, files not yet hashed are compared by _write
    return {SINGLE: plan}


def merge(base, safety, languages: dict[str | None, str], settings: WriteSettings, *, recipe: Recipe | None = None,
          plan: MergePlan | None = None, revision: str | None = None, dry_run: bool = False,
          into: dict | None = None) -> dict[str | None, MergePlan]:
    """Write one merged folder per language expert (or, with dry_run, only check and decide); returns the plans.

    Give a recipe to decide, or a plan to replay (one language only). With `into` (a dict, one
    language only) the merged tensors are put there, name -> tensor, byte-identical to the shards a
    merge writes, and nothing is written: settings.out is not touched, and there are no side files,
    figures or manifest.
    """
    keys = _keys(languages)
    if into is not None and SINGLE not in keys:
        raise SafeswapError("a merge into memory takes exactly one language expert")
    as_adapter = settings.output == "adapter"
    if as_adapter:
        if into is not None:
            raise SafeswapError("a merge into memory gives full tensors; --output adapter does not apply to it")
        adapter_output.check_method(plan.method if plan is not None else recipe.method)
    receiver = next(iter(keys.values()))
    inputs = open_inputs({"base": base, "safety": safety, **{keys[c]: ref for c, ref in languages.items()}},
                         revision, receiver=receiver)
    mark("open inputs")
    hasher = None
    try:
        if as_adapter:
            adapter_output.check_experts(inputs)
        views = {code: _view(inputs, key) for code, key in keys.items()}
        for code, view in views.items():
            if view.tensor_names() != inputs.tensor_names():
                raise SafeswapError(f"language expert {code} stores its tensors in another order; merge it separately")
        needed = (adapter_output.adapter_bytes(inputs) if as_adapter else _output_bytes(inputs, settings.dtype)) * len(keys)
        if not dry_run and into is None:
            check_destination(settings.out, settings.force, inputs.folders())
            check_free_space(settings.out, needed)
            folders = {key: m.folder for key, m in inputs.models.items()}
            hasher = (input_hasher(folders) if settings.input_sha256 is None
                      else known_hashes(settings.input_sha256, folders))
        # A write hashes the inputs beside the merge (hasher) and settles their identity at its end.
        plans = (_replay(views[SINGLE], plan, hasher is None) if plan is not None
                 else _decide(inputs, views, keys, recipe, settings, hasher is None))
        ops = {code: operations(plans[code], views[code]) for code in keys}
        if as_adapter:
            factors = {code: adapter_output.require_update(adapter_output.merge_factors(
                           views[code], ops[code], adapter_output.factor_dtype(views[code], settings.dtype),
                           settings.allow_nonfinite)) for code in keys}
        mark("decide")
        if dry_run:
            return plans
        if as_adapter:
            summaries = adapter_output.write_adapters(views, keys, plans, factors, settings, needed,
                                                      lambda: _settle_inputs(views, keys, plans, hasher, plan is not None))
            _report_adapters(settings, summaries)
            return plans
        # The analysis already checked every input tensor for NaN/Inf; a replay did not.
        analysed = plan is None and get_method(recipe.method).uses_statistics
        if into is not None:
            _stream_into(inputs, ops[SINGLE], settings, needed, analysed, into)
            return plans
        _write(inputs, views, keys, plans, ops, settings, needed, hasher, analysed, plan is not None)
    finally:
        if hasher is not None:
            hasher.cancel()
        inputs.close()
    mark("rename")
    if settings.show_progress:
        if SINGLE in keys:
            console.print(f"[green]merged model written to[/green] {settings.out}")
        else:
            console.print(f"[green]{len(keys)} merged models written under[/green] {settings.out}")
    return plans


def _report_adapters(settings: WriteSettings, summaries: dict) -> None:
    if settings.show_progress:
        for code, summary in summaries.items():
            where = settings.out if code is SINGLE else settings.out / code
            console.print(f"[green]adapter written to[/green] {where}: {adapter_output.summary_line(summary)}",
                          soft_wrap=True, highlight=False)


def _stream_into(inputs, ops, settings: WriteSettings, needed: int, analysed: bool, into: dict) -> None:
    with task("merging", needed, settings.show_progress, unit="bytes") as advance:
        execute(inputs, [OutputJob(None, ops, into=into)], settings.shard_bytes, settings.dtype, on_bytes=advance,
                allow_nonfinite=settings.allow_nonfinite, inputs_checked=analysed)


def _settle_inputs(views, keys, plans, hasher, replay: bool) -> dict:
    """Each language's input hashes (base, safety, its expert) once the hasher is done, recorded in its plan; a
    replay first refuses an input changed since the plan was made. Called before the output is committed, so a
    changed input leaves nothing behind."""
    all_inputs = hasher.result()
    subsets = {}
    for code, view in views.items():
        subset = {"base": all_inputs["base"], "safety": all_inputs["safety"], "language": all_inputs[keys[code]]}
        if replay:
            check_replay_files(plans[code], view, subset)
        record_inputs(plans[code], view, subset)
        subsets[code] = subset
    return subsets


def _write(inputs, views, keys, plans, ops, settings: WriteSettings, needed: int, hasher, analysed: bool,
           replay: bool) -> None:
    with atomic_output(settings.out, settings.force, needed) as tmp, ThreadPoolExecutor(max_workers=1) as side:
        folders = {code: tmp if code is SINGLE else tmp / code for code in keys}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        jobs = [OutputJob(folders[code], ops[code], {"base": "base", "safety": "safety", "language": keys[code]})
                for code in keys]
        # Figures are drawn on a side thread while the main work streams tensors.
        figures = side.submit(lambda: [write_figures(plans[code], folders[code]) for code in keys])
        with task("merging", needed, settings.show_progress, unit="bytes") as advance:
            hashes = execute(inputs, jobs, settings.shard_bytes, settings.dtype, on_bytes=advance,
                             allow_nonfinite=settings.allow_nonfinite, inputs_checked=analysed)
        figures.result()
        mark("figures (wait)")
        subsets = _settle_inputs(views, keys, plans, hasher, replay)
        mark("input hashes (wait)")
        for (code, view), shard_hashes in zip(views.items(), hashes):
            finish_output(view, plans[code], folders[code], shard_hashes, subsets[code], settings.dtype,
                          settings.command)
        mark("side files and manifest")
