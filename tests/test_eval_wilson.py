"""The 95% Wilson interval used for every rate, against published values."""

from __future__ import annotations

import pytest

from safeswap.evaluation.results import rate, wilson_interval

# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857-872, Table I, method 3 (score interval without
# continuity correction), to four decimals.
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize("k, n, low, high", NEWCOMBE)
def test_wilson_matches_newcombe(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_edges_stay_inside_unit_interval():
    # At k = 0 the upper bound is z^2 / (n + z^2).
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and high <= 1.0 and low == pytest.approx(10 / (10 + z2))
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(1 - high)  # symmetric at p = 1/2


def test_rate_shape():
    r = rate(3, 12)
    assert r["value"] == 0.25 and (r["k"], r["n"]) == (3, 12)
    assert r["low"] < 0.25 < r["high"]
