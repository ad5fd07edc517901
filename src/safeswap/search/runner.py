"""Evaluate one candidate: plan it from the cached statistics, merge it with the pipeline under DIR, probe it.

A SearchContext is made once per search (the statistics, the fingerprints and the
search-split prompts); it holds no open file, so it pickles to a process or a Ray task.
Each candidate's result is cached as DIR/candidates/<key>.json: a candidate is never
evaluated twice, also not by a resumed search.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safeswap.decide.planning import analyse, build_plan, method_parameters
from safeswap.decide.statistics import Statistics
from safeswap.errors import SafeswapError
from safeswap.files import atomic_write
from safeswap.read.inputs import open_inputs
from safeswap.search.candidates import Candidate
from safeswap.search.objectives import Scores
from safeswap.search.probe import load_model, perplexity, refusal_scores


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


def measure_statistics(base: str, safety: str, language: str) -> Statistics:
    """The triple's statistics (norms and dots, inputs fingerprinted), once per search."""
    inputs = open_inputs({"base": base, "safety": safety, "language": language})
    try:
        return analyse(inputs, show_progress=False, dots=True)
    finally:
        inputs.close()


def score_model(context: SearchContext, path: str | Path) -> Scores:
    """Probe one model folder on the search split: harmful and benign refusal scores, perplexity."""
    model, tokenizer = load_model(path, context.device)
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


def evaluate(context: SearchContext, candidate: Candidate) -> dict[str, Any]:
    """The candidate's record {candidate, scores | error}: from the cache, else planned, merged, probed and cached.

    A candidate the methods refuse (layer-swap with more layers than the model has, say) is
    recorded with its error and not tried again."""
    from safeswap.write.pipeline import WriteSettings, merge

    if (record := cached(context, candidate)) is not None:
        return record
    weights = Path(context.out) / "work" / candidate.key
    try:
        plan = plan_of(context, candidate)
        merge(context.base, context.safety, {None: context.language}, WriteSettings(out=weights, force=True), plan=plan)
        record = {"candidate": candidate.to_dict(), "scores": asdict(score_model(context, weights))}
    except SafeswapError as e:
        record = {"candidate": candidate.to_dict(), "error": str(e)}
    finally:
        if not context.keep_weights and weights.exists():
            shutil.rmtree(weights)
            try:
                weights.parent.rmdir()  # DIR/work, once no candidate is being written there
            except OSError:
                pass
    path = _cache_path(context, candidate.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
    return record


def reference_models(context: SearchContext) -> dict[str, Scores]:
    """The base's, the safety expert's and the language expert's scores, cached in DIR/models.json."""
    path = Path(context.out) / "models.json"
    if path.is_file():
        return {role: Scores(**s) for role, s in json.loads(path.read_text(encoding="utf-8")).items()}
    scores = {role: score_model(context, getattr(context, role)) for role in ("base", "safety", "language")}
    atomic_write(path, json.dumps({r: asdict(s) for r, s in scores.items()}, indent=1).encode("utf-8"))
    return scores
