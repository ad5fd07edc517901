"""Scores, constraints, the Pareto front and the recommendation, on hand-made numbers."""

import math

import pytest

from safeswap.search.objectives import (Scores, dominates, feasible, kept_language_gain, pareto_front, recommend,
                                        violations, with_gain)
from safeswap.search.space import Constraints


def s(harmful, benign, ppl, gain=float("nan"), k=(5, 10), b=(1, 10)):
    return Scores(harmful, benign, k[0], k[1], b[0], b[1], ppl, gain)


LANGUAGE = s(0.1, 0.10, 5.0)
BASE = s(0.2, 0.15, 10.0)


def test_kept_gain_is_the_share_of_log_perplexity_gain():
    assert kept_language_gain(10.0, 5.0, 5.0) == pytest.approx(1.0)
    assert kept_language_gain(10.0, 5.0, 10.0) == pytest.approx(0.0)
    assert kept_language_gain(10.0, 5.0, math.sqrt(50)) == pytest.approx(0.5)
    assert math.isnan(kept_language_gain(5.0, 5.0, 4.0))
    assert with_gain(s(0.5, 0.1, math.sqrt(50)), BASE, LANGUAGE).kept_gain == pytest.approx(0.5)


def test_rates_carry_wilson_intervals():
    row = s(0.5, 0.1, 5.0, k=(0, 20), b=(20, 20)).row()
    assert row["harmful_rate"] == 0 and row["harmful_low"] == 0 and 0.15 < row["harmful_high"] < 0.17
    assert row["benign_rate"] == 1 and row["benign_high"] == 1 and 0.83 < row["benign_low"] < 0.85


def test_constraints():
    c = Constraints(max_benign_refusal_over_language=0.05, min_kept_language_gain=0.7)
    ok = s(0.6, 0.14, 6.0, gain=0.8)
    assert violations(ok, c, LANGUAGE) == pytest.approx({"max_benign_refusal_over_language": -0.01,
                                                         "min_kept_language_gain": -0.1})
    assert feasible(ok, c, LANGUAGE)
    assert not feasible(s(0.6, 0.16, 6.0, gain=0.8), c, LANGUAGE)
    assert not feasible(s(0.6, 0.10, 6.0, gain=0.6), c, LANGUAGE)
    assert not feasible(s(0.6, 0.10, 6.0), c, LANGUAGE)  # an unknown gain does not meet a gain constraint
    assert feasible(s(0.6, 0.9, 6.0), Constraints(None, None), LANGUAGE)


def test_dominance_and_front():
    assert dominates((0.9, 0.1, 0.5), (0.8, 0.1, 0.5)) and not dominates((0.9, 0.1, 0.5), (0.9, 0.1, 0.5))
    assert not dominates((0.9, 0.3, 0.5), (0.8, 0.1, 0.5))
    points = {"a": (0.9, 0.3, 0.5), "b": (0.8, 0.1, 0.5), "c": (0.7, 0.2, 0.4), "d": (0.5, 0.1, 0.9)}
    assert pareto_front(points) == ["a", "b", "d"]


def test_recommendation_is_the_safest_feasible_candidate():
    c = Constraints(0.05, 0.7)
    scores = {"safe-but-refuses": s(0.95, 0.5, 6, 0.8), "good": s(0.8, 0.12, 6, 0.9), "ok": s(0.7, 0.1, 6, 0.9),
              "forgets": s(0.9, 0.1, 9, 0.2)}
    r = recommend(scores, c, LANGUAGE)
    assert r.key == "good" and "2 of 4 candidates meet every constraint" in r.statement
    assert r.best == "good" and r.misses == {}


def test_no_feasible_candidate_says_which_constraint():
    c = Constraints(0.05, 0.7)
    r = recommend({"a": s(0.9, 0.5, 6, 0.9), "b": s(0.9, 0.4, 6, 0.9)}, c, LANGUAGE)
    # b misses the benign limit (the language expert's benign + 0.05) by the least: 0.4 - (lang + 0.05)
    by = 0.4 - (LANGUAGE.benign + 0.05)
    assert r.key is None and r.statement == (f"no candidate met max_benign_refusal_over_language (max_benign_refusal_"
                                             f"over_language missed by {by:.3g} at best; of 2 candidates); best: b, "
                                             f"which misses max_benign_refusal_over_language by {by:.3g}")
    # The search still hands back a plan: the closest candidate's, with what it misses.
    assert r.best == "b" and r.misses == {"max_benign_refusal_over_language": pytest.approx(by)}
    r = recommend({"a": s(0.9, 0.5, 6, 0.9), "b": s(0.9, 0.1, 6, 0.1)}, c, LANGUAGE)
    assert r.key is None and "no candidate met every constraint at once" in r.statement
    assert "max_benign_refusal_over_language met by 1" in r.statement
    # a misses only the benign limit, by 0.5 - (0.1 + 0.05) = 0.35; b only the kept gain, by 0.7 - 0.1 = 0.6
    assert r.statement.endswith("closest: a, which misses max_benign_refusal_over_language by 0.35")
    assert r.best == "a" and r.misses == {"max_benign_refusal_over_language": pytest.approx(0.35)}


def test_harmful_refusal_over_the_language_expert_is_measured_against_it():
    c = Constraints(None, None, None, min_harmful_refusal_over_language=0.15)
    assert violations(s(0.2, 0.1, 6), c, LANGUAGE)["min_harmful_refusal_over_language"] == pytest.approx(0.05)
    assert violations(s(0.3, 0.1, 6), c, LANGUAGE)["min_harmful_refusal_over_language"] == pytest.approx(-0.05)
