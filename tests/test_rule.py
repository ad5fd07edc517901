"""The paper's decision rule on hand-computed numbers."""

import math

import pytest

from safeswap.errors import SafeswapError
from safeswap.decide.methods import get_method
from safeswap.decide.methods.adaptive import decide
from safeswap.decide.specialization import TensorStat, relative_change, unit_scores


def stat(name, layer, module, base_norm, ds, dl):
    return TensorStat(name, layer, module, name.split(".")[-2], 100, base_norm, ds, dl)


# Two layers; r values chosen so every step is easy to check by hand.
STATS = [
    stat("model.layers.0.self_attn.q_proj.weight", 0, "attention", 10.0, 1.0, 3.0),  # rS .1 rL .3
    stat("model.layers.0.self_attn.k_proj.weight", 0, "attention", 10.0, 2.0, 4.0),  # rS .2 rL .4
    stat("model.layers.0.mlp.up_proj.weight", 0, "mlp", 20.0, 6.0, 2.0),  # rS .3 rL .1
    stat("model.layers.1.self_attn.q_proj.weight", 1, "attention", 10.0, 1.0, 1.0),  # rS .1 rL .1
    stat("model.layers.1.mlp.up_proj.weight", 1, "mlp", 5.0, 2.0, 0.5),  # rS .4 rL .1
]


def test_relative_change_uses_plain_norm_when_base_is_zero():
    assert relative_change(3.0, 2.0) == 1.5
    assert relative_change(3.0, 1e-9) == 3.0
    assert relative_change(3.0, 1e-8) == 3.0  # <= 1e-8 counts as zero


def test_layer_scores_sum_r():
    units = {u.unit: u for u in unit_scores(STATS, "layer")}
    assert units["layer.0"].score_safety == pytest.approx(0.6)
    assert units["layer.0"].score_language == pytest.approx(0.8)
    assert units["layer.1"].score_safety == pytest.approx(0.5)
    assert units["layer.1"].score_language == pytest.approx(0.2)
    # p = score / (sum + 1e-8)
    assert units["layer.0"].p_safety == pytest.approx(0.6 / (1.1 + 1e-8), rel=1e-12)
    assert units["layer.0"].p_language == pytest.approx(0.8 / (1.0 + 1e-8), rel=1e-12)
    assert units["layer.0"].d == pytest.approx(0.6 / 1.1 - 0.8)
    assert units["layer.1"].d == pytest.approx(0.5 / 1.1 - 0.2)


def test_module_scores_are_root_sum_of_squares_pooled_over_attention_and_mlp():
    units = {u.unit: u for u in unit_scores(STATS, "module")}
    assert list(units) == ["layer.0.attention", "layer.0.mlp", "layer.1.attention", "layer.1.mlp"]
    s_attn0, l_attn0 = math.sqrt(0.01 + 0.04), math.sqrt(0.09 + 0.16)
    assert units["layer.0.attention"].score_safety == pytest.approx(s_attn0)
    assert units["layer.0.attention"].score_language == pytest.approx(l_attn0)
    total_s = s_attn0 + 0.3 + 0.1 + 0.4
    total_l = l_attn0 + 0.1 + 0.1 + 0.1
    assert units["layer.1.mlp"].p_safety == pytest.approx(0.4 / total_s)
    assert units["layer.1.mlp"].d == pytest.approx(0.4 / total_s - 0.1 / total_l)


def test_projection_scores_are_r():
    units = {u.unit: u for u in unit_scores(STATS, "projection")}
    assert len(units) == 5
    u = units["model.layers.0.mlp.up_proj.weight"]
    assert u.score_safety == pytest.approx(0.3) and u.score_language == pytest.approx(0.1)
    assert u.p_safety == pytest.approx(0.3 / 1.1)


def test_decide_thresholds():
    assert decide(0.0011, 0.001) == "safety"
    assert decide(-0.0011, 0.001) == "language"
    assert decide(0.001, 0.001) == "blend"  # the band is closed: |d| <= tau blends
    assert decide(-0.001, 0.001) == "blend"
    assert decide(0.0, 0.0) == "blend"
    assert decide(1e-12, 0.0) == "safety"


def test_build_units_decisions_from_hand_numbers():
    method = get_method("adaptive")
    params = method.validate_parameters({"granularity": "layer", "tau": 0.05})
    units = {u["unit"]: u for u in method.build_units(None, STATS, params)}
    # layer 0: d = 0.545 - 0.8 = -0.255 -> language; layer 1: d = 0.4545 - 0.2 = 0.2545 -> safety
    assert units["layer.0"]["decision"] == "language"
    assert units["layer.1"]["decision"] == "safety"
    params = method.validate_parameters({"granularity": "layer", "tau": 0.3})
    assert {u["decision"] for u in method.build_units(None, STATS, params)} == {"blend"}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"tau": -0.1}, "tau must be >= 0"),
        ({"alpha": 1.5}, "alpha must lie in [0, 1]"),
        ({"alpha": -0.01}, "alpha must lie in [0, 1]"),
        ({"granularity": "head"}, "unknown granularity"),
        ({"tau": "x"}, "tau must be a number"),
    ],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(SafeswapError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_method("adaptive").validate_parameters(params)
