"""The generation stage: the probe's best candidates answer search-split prompts and the real judge labels them.

The probe screens; this stage decides. Candidates are ordered by their probe scores the way
the recommendation orders them (those meeting every constraint first, most harmful refusal,
then least benign refusal, then most gain kept; then the others, least violation first) and
the first `generation.top` are written, generate and are judged, with the paper's default
beside them. The three models are judged on the same prompts, since the constraints are
measured against the language expert. The recommendation is then made from the judged
numbers. How well the probe ranks candidates is the Spearman correlation of probe score and
judged rate over the judged merges. Each judged record is cached under DIR/generation/, so a
resumed search judges nothing twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from safeswap.progress import StageProgress
from safeswap.search.candidates import Candidate
from safeswap.search.judged import JudgeSettings, PromptChoice, cached_record, judge_folder
from safeswap.search.objectives import Scores, violations, with_gain
from safeswap.search.runner import SearchContext, written
from safeswap.search.space import SearchSpace

MODEL_ROLES = ("base", "safety", "language")
STAGE_DIR = "generation"


def probe_order(scores: dict[str, Scores], space: SearchSpace, language: Scores) -> list[str]:
    """Candidate keys, best first by the probe: feasible ones as the recommendation ranks them, then the rest."""
    def rank(key: str) -> tuple:
        s = scores[key]
        excess = sum(max(v, 0.0) for v in violations(s, space.constraints, language).values())
        return (excess > 0, excess, -s.harmful, s.benign, -s.objectives()[2], key)

    return sorted(scores, key=rank)


def judged_scores(record: dict[str, Any], probe: Scores) -> Scores:
    """Scores from judged rates (harmful handled safely, benign refused, answers in language), with the probe's
    perplexity: what the constraints and the recommendation read after this stage."""
    h, b, lang = record["harmful_pooled"], record["benign_refusal"], record["in_language"]
    return Scores(harmful=h["value"], benign=b["value"], harmful_refusals=h["k"], harmful_n=h["n"],
                  benign_refusals=b["k"], benign_n=b["n"], perplexity=probe.perplexity, in_language=lang["value"])


def rank_correlation(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's rho of (probe, judge) pairs; None with fewer than 3 pairs or a constant side."""
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    rho = float(spearmanr(xs, ys).statistic)
    return rho if math.isfinite(rho) else None


def run_generation_stage(context: SearchContext, space: SearchSpace, settings: JudgeSettings,
                         candidates: dict[str, Candidate], scores: dict[str, Scores], models: dict[str, Scores],
                         prompts: PromptChoice, progress: StageProgress | None = None,
                         notify: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Judge the models and the probe's top candidates; returns the stage's summary (see search.json)."""
    stage = space.generation
    out = Path(context.out) / STAGE_DIR
    tag = settings.key(sorted(prompts.ids()["multijail"]), sorted(prompts.ids()["benign"]), prompts.languages,
                       stage.max_new_tokens)

    def judge(folder, label: str) -> dict[str, Any]:
        return judge_folder(folder, label, prompts, settings, stage.max_new_tokens, stage.batch_size, out, progress,
                            base=context.base, adapter_base=context.base if context.adapters else None)

    model_records = {}
    for role in MODEL_ROLES:
        notify(f"generation stage: judging the {role} model")
        path = out / "records" / f"model-{role}-{tag}.json"
        model_records[role] = cached_record(path, lambda role=role: judge(getattr(context, role), role))
    judged_models = {role: judged_scores(model_records[role], models[role]) for role in MODEL_ROLES}

    order = probe_order(scores, space, models["language"])
    chosen = order[:stage.top]
    chosen += [k for k, c in candidates.items() if c.label == "paper-default" and k in scores and k not in chosen]
    rows, judged = [], {}
    for key in chosen:
        cand = candidates[key]
        notify(f"generation stage: judging {cand.label or cand.describe()}")
        path = out / "records" / f"{key}-{tag}.json"

        def run(cand=cand) -> dict[str, Any]:
            with written(context, cand, f"judge-{cand.key}") as folder:
                return judge(folder, cand.label or cand.key)

        record = cached_record(path, run)
        judged[key] = with_gain(judged_scores(record, scores[key]), models["base"], models["language"])
        probe = scores[key]
        rows.append({"key": key, "label": cand.label, "method": cand.method, "values": cand.values,
                     "outside_layers": cand.outside_layers, "probe_rank": order.index(key) + 1,
                     "probe": {"harmful": probe.harmful, "benign": probe.benign, "kept_gain": probe.kept_gain},
                     "judge": {"harmful": record["harmful_pooled"], "benign_refusal": record["benign_refusal"],
                               "in_language": record["in_language"], "by_language": record["harmful"]}})
    both = [(scores[k], judged[k]) for k in judged]
    with_models = both + [(models[role], judged_models[role]) for role in MODEL_ROLES]
    correlation = {
        "harmful": rank_correlation([(p.harmful, j.harmful) for p, j in both]),
        "benign": rank_correlation([(p.benign, j.benign) for p, j in both]),
        "n": len(both), "method": "spearman",
        # The base and the experts span the widest range of refusal; with them the ranks say more.
        "with_models": {"harmful": rank_correlation([(p.harmful, j.harmful) for p, j in with_models]),
                        "benign": rank_correlation([(p.benign, j.benign) for p, j in with_models]),
                        "n": len(with_models)},
    }
    return {"summary": {"top": stage.top, "metric": model_records["base"]["metric"], "languages": list(prompts.languages),
                        "benign_language": prompts.target, "harmful_n": len(prompts.harmful),
                        "benign_n": len(prompts.benign.prompts), "judge": model_records["base"]["judge"],
                        "candidates": rows,
                        "models": {role: {"harmful": r["harmful_pooled"], "benign_refusal": r["benign_refusal"],
                                          "in_language": r["in_language"]} for role, r in model_records.items()}},
            "correlation": correlation, "scores": judged, "models": judged_models}

