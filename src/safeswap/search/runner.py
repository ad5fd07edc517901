"""Evaluate one candidate: plan it from the cached statistics, merge it with the pipeline, probe it.

A SearchContext is made once per search (the statistics, the inputs' sha256, the
fingerprints and the search-split prompts); it holds no open file, so it pickles to a
process or a Ray task. A candidate whose merged model fits in memory (fits_in_memory) is
streamed by the pipeline into a dict and probed from there, with no checkpoint written;
any other, and every candidate of a space with keep_weights, is written under
DIR/work/<key>/ first. Each candidate's result is cached as DIR/candidates/<key>.json: a
candidate is never evaluated twice, also not by a resumed search.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from safeswap.decide.planning import analyse, build_plan, method_parameters
from safeswap.decide.statistics import Statistics
from safeswap.errors import SafeswapError
from safeswap.files import atomic_write
from safeswap.read.checkpoint import Checkpoint
from safeswap.read.inputs import open_inputs
from safeswap.read.sources import resolve_model
from safeswap.search.candidates import Candidate
from safeswap.search.objectives import Scores
from safeswap.search.probe import load_into, load_merged, load_model, perplexity, refusal_scores
from safeswap.write.hasher import hash_folders

# A merged model is probed from memory when twice its float32 size is at most this share of the
# memory available now: while it loads, its tensors (stored dtype, at most float32) and the float32
# model are both held; the rest is left to activations, other workers and the page cache.
MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class SearchContext:
    """Everything a candidate's evaluation needs, computed once per search."""

    base: str
    safety: str
    language: str
    out: str  # the search folder DIR
    statistics: Statistics
    harmful: dict[str, tuple[str, ...]]  # language -> search-split harmful prompt texts
    benign: tuple[str, ...]  # search-split benign prompts in the target language
    benign_language: str
    ability_texts: tuple[str, ...]  # texts for the held-out perplexity
    batch_size: int = 8
    max_length: int = 256
    keep_weights: bool = False
    device: str | None = None
    in_memory: bool | None = None  # probe candidates without writing them: None decides by size (fits_in_memory)
    input_sha256: dict | None = None  # hash_inputs(...), for written candidates' manifests; None hashes per merge
    adapters: bool = False  # the experts are LoRA adapters: candidates are adapters, probed in one loaded base


def measure_statistics(base: str, safety: str, language: str) -> Statistics:
    """The triple's statistics (norms and dots, inputs fingerprinted), once per search."""
    inputs = open_inputs({"base": base, "safety": safety, "language": language})
    try:
        return analyse(inputs, show_progress=False, dots=True)
    finally:
        inputs.close()


def hash_inputs(base: str, safety: str, language: str) -> dict:
    """The inputs' sha256 as a one-language merge's manifest records them ({base, safety, language:
    {file name: {size, sha256}}}), once per search: WriteSettings.input_sha256 of every written candidate."""
    inputs = open_inputs({"base": base, "safety": safety, "language": language})
    try:
        folders = {key: m.folder for key, m in inputs.models.items()}
    finally:
        inputs.close()
    return hash_folders(folders)


@lru_cache(maxsize=8)
def merged_float32_bytes(language: str) -> int:
    """Bytes of the merged model in float32: a merge has the receiver's (the language expert's) tensors."""
    checkpoint = Checkpoint(resolve_model(language, "language"), "language")
    try:
        return 4 * sum(t.numel for t in checkpoint.tensors.values())
    finally:
        checkpoint.close()


def available_memory() -> int:
    """Bytes a new allocation can take now: Linux's MemAvailable (free memory plus the page cache it can
    drop), else the free pages, else (no such sysconf, macOS) the physical memory; 0 when none is known.
    (Not psutil: safeswap does not depend on it.)"""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no such sysconf name on this system
            continue
    return 0


def fits_in_memory(context: SearchContext) -> bool:
    """Whether a candidate is probed from memory: never with keep_weights (it wants the folder), else as
    context.in_memory says, else when 2 x its float32 bytes <= MEMORY_FRACTION x available memory."""
    if context.keep_weights:
        return False
    if context.in_memory is not None:
        return context.in_memory
    return 2 * merged_float32_bytes(context.language) <= MEMORY_FRACTION * available_memory()


def score_model(context: SearchContext, path: str | Path) -> Scores:
    """Probe one model folder on the search split: harmful and benign refusal scores, perplexity."""
    return _probe(context, *load_model(path, context.device, context.base))


# The float32 model of the last candidate probed from memory in this process, with its tokenizer, keyed by
# (language expert, device): the next candidate's tensors are copied into it in place (load_into) instead
# of building a model again (transformers' loading took a second a candidate on the 135M demo model).
_held: dict = {}


def score_tensors(context: SearchContext, tensors: dict) -> Scores:
    """Probe a merged model held in memory (name -> tensor, emptied once loaded), as score_model probes
    its written folder: the language expert's config and tokenizer, which a search's merges keep."""
    key = (context.language, context.device)
    try:
        held = _held.get(key)
        if held is None or not load_into(held[0], tensors):
            _held.clear()  # one model at a time
            held = load_merged(context.language, tensors, context.device, context.base)
            _held[key] = held
    finally:
        tensors.clear()  # the float32 model holds its own copy
    return _probe(context, *held)


def release_held_model() -> None:
    """Let go of the model score_tensors keeps for the next candidate (the probe stage is over)."""
    _held.clear()


def _probe(context: SearchContext, model, tokenizer) -> Scores:
    harmful = [refusal_scores(model, tokenizer, texts, code, context.batch_size, context.max_length)
               for code, texts in context.harmful.items()]
    benign = refusal_scores(model, tokenizer, context.benign, context.benign_language, context.batch_size,
                            context.max_length)
    ppl = perplexity(model, tokenizer, context.ability_texts, context.batch_size, context.max_length)
    h_scores = [s for h in harmful for s in h.scores]
    return Scores(
        harmful=sum(h_scores) / len(h_scores), benign=benign.mean,
        harmful_refusals=sum(h.refusals for h in harmful), harmful_n=len(h_scores),
        benign_refusals=benign.refusals, benign_n=len(benign.scores), perplexity=ppl,
    )


def plan_of(context: SearchContext, candidate: Candidate):
    """The candidate's merge plan, decided from the cached statistics (no model is read)."""
    params = method_parameters(candidate.method, candidate.parameters())
    return build_plan(candidate.method, params, context.statistics, None, candidate.outside_layers, "language")


def _cache_path(context: SearchContext, key: str) -> Path:
    return Path(context.out) / "candidates" / f"{key}.json"


def cached(context: SearchContext, candidate: Candidate) -> dict[str, Any] | None:
    path = _cache_path(context, candidate.key)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _settings(context: SearchContext, folder: Path):
    from safeswap.write.pipeline import WriteSettings

    return WriteSettings(out=folder, force=True, input_sha256=context.input_sha256)


@contextlib.contextmanager
def written(context: SearchContext, candidate: Candidate, name: str) -> Iterator[Path]:
    """DIR/work/<name>: the candidate merged by the pipeline from its plan, for whatever needs a folder (the
    probe of a model too large for memory, the backends of the generation stage and the final evaluation);
    deleted on exit unless the space keeps weights."""
    from safeswap.write.pipeline import merge

    folder = Path(context.out) / "work" / name
    try:
        if context.adapters:  # the candidate as a PEFT adapter folder on the base, which every backend runs
            from safeswap.search.adapters import open_experts, plan_factors, write_candidate_adapter

            inputs = open_experts(context.base, context.safety, context.language)
            write_candidate_adapter(folder, plan_factors(plan_of(context, candidate), inputs), context.base)
        else:
            merge(context.base, context.safety, {None: context.language}, _settings(context, folder),
                  plan=plan_of(context, candidate))
        yield folder
    finally:
        if not context.keep_weights and folder.exists():
            shutil.rmtree(folder)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # DIR/work, once nothing else is written there


def evaluate(context: SearchContext, candidate: Candidate) -> dict[str, Any]:
    """The candidate's record {candidate, scores | error}: from the cache, else planned, merged, probed and cached.

    A candidate the methods refuse (layer-swap with more layers than the model has, say) is
    recorded with its error and not tried again."""
    from safeswap.write.pipeline import merge

    if (record := cached(context, candidate)) is not None:
        return record
    try:
        if context.adapters:  # the candidate's factors swapped into this process's loaded base: nothing merged
            from safeswap.search.adapter_probe import candidate_model

            scores = _probe(context, *candidate_model(context, plan_of(context, candidate)))
        elif fits_in_memory(context):
            tensors: dict = {}
            # The settings' folder names the candidate even in memory, where nothing is written.
            merge(context.base, context.safety, {None: context.language},
                  _settings(context, Path(context.out) / "work" / candidate.key),
                  plan=plan_of(context, candidate), into=tensors)
            scores = score_tensors(context, tensors)
        else:
            with written(context, candidate, candidate.key) as folder:
                scores = score_model(context, folder)
        record = {"candidate": candidate.to_dict(), "scores": asdict(scores)}
    except SafeswapError as e:
        record = {"candidate": candidate.to_dict(), "error": str(e)}
    path = _cache_path(context, candidate.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
    return record


def reference_models(context: SearchContext) -> dict[str, Scores]:
    """The base's, the safety expert's and the language expert's scores, cached in DIR/models.json."""
    path = Path(context.out) / "models.json"
    if path.is_file():
        return {role: Scores(**s) for role, s in json.loads(path.read_text(encoding="utf-8")).items()}
    if context.adapters:
        from safeswap.search.adapter_probe import role_model

        scores = {role: _probe(context, *role_model(context, role)) for role in ("base", "safety", "language")}
    else:
        scores = {role: score_model(context, getattr(context, role)) for role in ("base", "safety", "language")}
    atomic_write(path, json.dumps({r: asdict(s) for r, s in scores.items()}, indent=1).encode("utf-8"))
    return scores
