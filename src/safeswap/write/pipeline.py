"""Several language experts in one run: one merged model per language under OUT/<lang>/.

The base and the safety expert are read once for all languages, in the analysis
(one norm pass computes ||S - B|| and every ||L_i - B||) and in the merge (each
input chunk is read once and feeds every output). Each language gets its own
plan, normalised over its own units, so OUT/<lang>/ is byte-identical to a
separate `safeswap merge` of that language.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from safeswap.api import (
    _build_plan, _check_choices, _check_free_space, _method_parameters, _model_records, _operations, _output_bytes,
    _write_figures, finish_output,
)
from safeswap.write.engine import OutputJob, dtype_name, execute
from safeswap.errors import SafeswapError
from safeswap.read.inputs import Inputs, open_inputs
from safeswap.write.hasher import input_hasher
from safeswap.decide.methods import get_method
from safeswap.progress import console, task
from safeswap.decide.specialization import measure_many
from safeswap.decide.statistics import Statistics
from safeswap.write.destination import check_destination
from safeswap.write.writer import atomic_output, parse_size

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def parse_language_args(values: list[str]) -> dict[str, str]:
    """['ko=PATH', 'sw=PATH'] -> {'ko': 'PATH', 'sw': 'PATH'}; codes name the output subfolders."""
    languages: dict[str, str] = {}
    for value in values:
        code, sep, path = value.partition("=")
        if not sep or not _CODE.match(code) or not path:
            raise SafeswapError(f"--language {value!r}: with several languages write CODE=PATH, e.g. ko=./ko-expert")
        if code in languages:
            raise SafeswapError(f"--language {code} is given twice")
        languages[code] = path
    return languages


def _view(inputs: Inputs, key: str) -> Inputs:
    """The base / safety / language triple of one language, sharing the open checkpoints."""
    models = {"base": inputs.models["base"], "safety": inputs.models["safety"], "language": inputs.models[key]}
    refs = {"base": inputs.refs["base"], "safety": inputs.refs["safety"], "language": inputs.refs[key]}
    return Inputs(models, inputs.family, inputs.roles, refs)


def merge_languages(
    base, safety, languages: dict[str, str], *, out: str | os.PathLike, method: str = "adaptive",
    granularity: str | None = None, tau: float | None = None, alpha: float | None = None,
    parameters: dict[str, Any] | None = None, outside_layers: str = "blend", tokenizer_from: str = "language",
    dtype: str | None = None, shard_size: str | int = "5GB", force: bool = False, revision: str | None = None,
    show_progress: bool = False, allow_nonfinite: bool = False, command: str | None = None,
) -> dict[str, Path]:
    """Merge the safety expert with each language expert; returns {code: OUT/code}."""
    if not languages:
        raise SafeswapError("no language experts given")
    out = Path(out).expanduser()
    shard_bytes, out_dtype = parse_size(shard_size, "--shard-size"), dtype_name(dtype)
    params = _method_parameters(method, parameters, granularity=granularity, tau=tau, alpha=alpha)
    _check_choices(outside_layers, tokenizer_from)
    keys = {code: f"language:{code}" for code in languages}
    refs = {"base": base, "safety": safety, **{keys[c]: p for c, p in languages.items()}}
    inputs = open_inputs(refs, revision, receiver=keys[next(iter(languages))])
    hasher = None
    try:
        views = {code: _view(inputs, key) for code, key in keys.items()}
        order = inputs.tensor_names()
        for code, view in views.items():
            if view.tensor_names() != order:
                raise SafeswapError(f"language expert {code} stores its tensors in another order; merge it separately")
        needed = _output_bytes(inputs, out_dtype) * len(languages)
        check_destination(out, force, inputs.folders())
        _check_free_space(out, needed)
        hasher = input_hasher({role: m.folder for role, m in inputs.models.items()})
        stats = None
        if get_method(method).uses_statistics:
            n = sum(1 for r in inputs.roles.values() if r.scored)
            with task("analysing", n, show_progress, unit="tensors") as advance:
                stats = measure_many(inputs, list(keys.values()), lambda name: advance(1), allow_nonfinite)
        plans, jobs = {}, []
        for code, view in views.items():
            records = _model_records(view)
            records["language"]["code"] = code
            lang_stats = Statistics(records, view.receiver.architecture, view.num_layers, stats[keys[code]]) if stats else None
            plan_ = _build_plan(method, params, lang_stats, view, outside_layers, tokenizer_from)
            plan_.models = records
            plans[code] = plan_
        with atomic_output(out, force, needed) as tmp, ThreadPoolExecutor(max_workers=1) as side:
            for code in languages:
                (tmp / code).mkdir()
                jobs.append(OutputJob(tmp / code, _operations(plans[code], views[code]),
                                      {"base": "base", "safety": "safety", "language": keys[code]}))
            figures = side.submit(lambda: [_write_figures(plans[c], tmp / c) for c in languages])
            with task("merging", needed, show_progress, unit="bytes") as advance:
                hashes = execute(inputs, jobs, shard_bytes, out_dtype, on_bytes=advance, allow_nonfinite=allow_nonfinite,
                                 inputs_checked=stats is not None)
            figures.result()
            all_inputs = hasher.result()
            for (code, view), shard_hashes in zip(views.items(), hashes):
                subset = {"base": all_inputs["base"], "safety": all_inputs["safety"], "language": all_inputs[keys[code]]}
                finish_output(view, plans[code], tmp / code, shard_hashes, subset, out_dtype, command)
    finally:
        if hasher is not None:
            hasher.cancel()
        inputs.close()
    if show_progress:
        console.print(f"[green]{len(languages)} merged models written under[/green] {out}")
    return {code: out / code for code in languages}
