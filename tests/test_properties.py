"""Property tests of the decision rule and of blending."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safeswap.decide.methods import get_method
from safeswap.decide.methods.adaptive import decide
from safeswap.decide.operations import Linear, Take, blend
from safeswap.decide.specialization import TensorStat

finite = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
ds = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
taus = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def tensor_stats(draw):
    n_layers = draw(st.integers(1, 6))
    stats = []
    for layer in range(n_layers):
        for module, proj in (("attention", "q_proj"), ("attention", "o_proj"), ("mlp", "up_proj")):
            base = draw(st.floats(min_value=0.0, max_value=5.0))
            stats.append(TensorStat(f"model.layers.{layer}.{module}.{proj}.weight", layer, module, proj, 16, base,
                                    draw(finite), draw(finite)))
    return stats


@settings(max_examples=60, deadline=None)
@given(tensor_stats(), taus, st.sampled_from(["layer", "module", "projection"]))
def test_units_are_partitioned_into_exactly_one_decision(stats, tau, granularity):
    method = get_method("adaptive")
    params = method.validate_parameters({"granularity": granularity, "tau": tau})
    units = method.build_units(None, stats, params)
    assert len({u["unit"] for u in units}) == len(units)
    for u in units:
        assert u["decision"] in ("safety", "language", "blend")
        assert (u["d"] > tau) == (u["decision"] == "safety")
        assert (u["d"] < -tau) == (u["decision"] == "language")
    expected = {"layer": len({s.layer for s in stats}), "module": len({(s.layer, s.module) for s in stats}),
                "projection": len(stats)}[granularity]
    assert len(units) == expected


@given(ds)
def test_tau_zero_blends_only_where_d_is_exactly_zero(d):
    assert (decide(d, 0.0) == "blend") == (d == 0.0)


@given(ds, taus, taus)
def test_a_larger_tau_never_turns_a_blend_into_a_take(d, tau_a, tau_b):
    small, large = sorted((tau_a, tau_b))
    if decide(d, small) == "blend":
        assert decide(d, large) == "blend"


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.integers(0, 2**31 - 1), st.floats(min_value=0.0, max_value=1.0))
def test_alpha_zero_and_one_reproduce_the_experts_and_others_lie_between(n, seed, alpha):
    gen = torch.Generator().manual_seed(seed)
    s, l_ = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    assert blend(1.0) == Take("safety") and blend(0.0) == Take("language")
    op = blend(alpha)
    if isinstance(op, Linear):
        out = op.compute({"safety": s.clone(), "language": l_.clone()}, "t")
        assert torch.equal(out, alpha * s + (1 - alpha) * l_)
        lo, hi = torch.minimum(s, l_), torch.maximum(s, l_)
        assert bool(((out >= lo - 1e-6) & (out <= hi + 1e-6)).all())
