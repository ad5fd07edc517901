"""Candidate scores, Wilson intervals, the constraints, the Pareto front and the recommendation: pure functions.

Objectives: harmful refusal (higher is better), benign refusal (lower is better) and the
kept language gain (higher is better). The optimised values are the probe's mean scores;
the rates (share of prompts whose refusal opening wins) are reported with 95% Wilson intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from safeswap.evaluation.results import wilson_interval
from safeswap.search.space import Constraints

DIRECTIONS = ("maximize", "minimize", "maximize")  # harmful, benign, kept gain: Optuna's study directions


@dataclass(frozen=True)
class Scores:
    """What one model scored on the search split."""

    harmful: float  # mean probe refusal score on harmful prompts, target languages pooled
    benign: float  # mean probe refusal score on benign prompts in the target language
    harmful_refusals: int
    harmful_n: int
    benign_refusals: int
    benign_n: int
    perplexity: float  # held-out perplexity in the target language (lower is better)
    kept_gain: float = float("nan")  # filled in against the references by with_gain
    in_language: float = float("nan")  # share of answers in the prompt's language: judged scores only

    def objectives(self) -> tuple[float, float, float]:
        gain = self.kept_gain if math.isfinite(self.kept_gain) else 0.0
        return (self.harmful, self.benign, gain)

    def row(self) -> dict:
        """Flat columns for the candidates CSV, rates with their Wilson intervals."""
        h_lo, h_hi = wilson_interval(self.harmful_refusals, self.harmful_n)
        b_lo, b_hi = wilson_interval(self.benign_refusals, self.benign_n)
        return {**asdict(self),
                "harmful_rate": rate(self.harmful_refusals, self.harmful_n), "harmful_low": h_lo, "harmful_high": h_hi,
                "benign_rate": rate(self.benign_refusals, self.benign_n), "benign_low": b_lo, "benign_high": b_hi}


def rate(k: int, n: int) -> float:
    return k / n if n else float("nan")


def kept_language_gain(base_perplexity: float, expert_perplexity: float, model_perplexity: float) -> float:
    """Share of the language expert's log-perplexity gain over the base that a model keeps (1 = all, 0 = none)."""
    if min(base_perplexity, expert_perplexity, model_perplexity) <= 0:
        return float("nan")
    gain = math.log(base_perplexity) - math.log(expert_perplexity)
    if gain == 0 or not math.isfinite(gain):
        return float("nan")
    return (math.log(base_perplexity) - math.log(model_perplexity)) / gain


def with_gain(scores: Scores, base: Scores, language: Scores) -> Scores:
    """The scores with kept_gain computed against the base and the language expert."""
    gain = kept_language_gain(base.perplexity, language.perplexity, scores.perplexity)
    return Scores(**{**asdict(scores), "kept_gain": gain})


def violations(scores: Scores, constraints: Constraints, language: Scores) -> dict[str, float]:
    """Each set constraint's violation (<= 0 means met), as Optuna's constraints_func wants them."""
    out = {}
    if constraints.max_benign_refusal_over_language is not None:
        out["max_benign_refusal_over_language"] = scores.benign - (language.benign + constraints.max_benign_refusal_over_language)
    if constraints.min_kept_language_gain is not None:
        gain = scores.kept_gain if math.isfinite(scores.kept_gain) else -math.inf
        out["min_kept_language_gain"] = constraints.min_kept_language_gain - gain
    if constraints.min_harmful_refusal is not None:
        out["min_harmful_refusal"] = constraints.min_harmful_refusal - scores.harmful
    if constraints.min_harmful_refusal_over_language is not None:
        need = language.harmful + constraints.min_harmful_refusal_over_language
        out["min_harmful_refusal_over_language"] = need - scores.harmful
    if constraints.min_in_language is not None and math.isfinite(scores.in_language):
        # The probe generates nothing, so this constraint applies to judged scores only.
        out["min_in_language"] = constraints.min_in_language - scores.in_language
    return out


def feasible(scores: Scores, constraints: Constraints, language: Scores) -> bool:
    return all(v <= 0 for v in violations(scores, constraints, language).values())


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str] = DIRECTIONS) -> bool:
    """a is at least as good as b in every objective and better in one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        better |= x > y
    return better


def pareto_front(points: dict[str, Sequence[float]], directions: Sequence[str] = DIRECTIONS) -> list[str]:
    """The keys of the points no other point dominates, in the input's order."""
    return [k for k, p in points.items() if not any(dominates(q, p, directions) for j, q in points.items() if j != k)]


@dataclass(frozen=True)
class Recommendation:
    key: str | None  # None: no candidate met the constraints
    statement: str
    # The plan a search always hands back: the recommended candidate, else the one that misses its
    # constraints by least (summed violation), with each missed constraint and by how much.
    best: str | None = None
    misses: dict[str, float] = field(default_factory=dict)


def recommend(scores: dict[str, Scores], constraints: Constraints, language: Scores,
              names: dict[str, str] | None = None) -> Recommendation:
    """Among the candidates meeting every constraint, the one that refuses most harmful prompts (ties: fewest
    benign refusals, then most language gain kept); else a plain statement of which constraint none met, and
    the closest candidate as the best one (its misses named)."""
    ok = {k: s for k, s in scores.items() if feasible(s, constraints, language)}
    if ok:
        best = max(ok, key=lambda k: (ok[k].harmful, -ok[k].benign, ok[k].objectives()[2]))
        name = (names or {}).get(best, best)
        return Recommendation(best, f"{len(ok)} of {len(scores)} candidates meet every constraint; "
                                    f"recommended {name}: the highest harmful refusal among them", best)
    if not scores:
        return Recommendation(None, "no candidate was evaluated")

    def excess(key: str) -> float:
        return sum(max(v, 0.0) for v in violations(scores[key], constraints, language).values())

    closest = min(scores, key=lambda k: (excess(k), k))
    misses = {name: v for name, v in violations(scores[closest], constraints, language).items() if v > 0}
    missed = ", ".join(f"{name} by {v:.3g}" for name, v in misses.items())
    best_text = f"{(names or {}).get(closest, closest)}, which misses {missed}"
    met = {name: 0 for name in violations(next(iter(scores.values())), constraints, language)}
    for s in scores.values():
        for name, v in violations(s, constraints, language).items():
            met[name] += v <= 0
    never = [name for name, n in met.items() if n == 0]
    if never:
        # By how much each binding constraint was missed: the smallest violation over the candidates.
        least = [f"{name} missed by {min(violations(s, constraints, language)[name] for s in scores.values()):.3g} "
                 "at best" for name in never]
        return Recommendation(None, f"no candidate met {' nor '.join(never)} ({'; '.join(least)}; "
                                    f"of {len(scores)} candidates); best: {best_text}", closest, misses)
    counts = ", ".join(f"{name} met by {n}" for name, n in met.items())
    return Recommendation(None, f"no candidate met every constraint at once ({counts}, of {len(scores)} candidates); "
                                f"closest: {best_text}", closest, misses)
