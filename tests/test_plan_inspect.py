"""show-plan and diff-plans: tables, summaries and disagreements, on hand-made plans with known sizes."""

import pytest
from rich.console import Console
from typer.testing import CliRunner

import safeswap
import tiny
from safeswap.cli import app
from safeswap.decide.plan_file import MergePlan
from safeswap.decide.plan_inspect import (
    TensorSize, decision_table, diff_plans, diff_table, parameter_shares, summary_line, tensor_sizes,
)

PREFIX = "model.layers."
# Two layers of a Llama: attention 4 x 100, MLP 3 x 200, norms 2 x 10; outside 500 + 10 + 500.
SIZES = {"model.embed_tokens.weight": TensorSize(500, "BF16")}
for _i in range(2):
    for _p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
        SIZES[f"{PREFIX}{_i}.{_p}.weight"] = TensorSize(100, "BF16")
    for _p in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        SIZES[f"{PREFIX}{_i}.{_p}.weight"] = TensorSize(200, "BF16")
    for _p in ("input_layernorm", "post_attention_layernorm"):
        SIZES[f"{PREFIX}{_i}.{_p}.weight"] = TensorSize(10, "BF16")
SIZES["model.norm.weight"] = TensorSize(10, "BF16")
SIZES["lm_head.weight"] = TensorSize(500, "BF16")
TOTAL = sum(s.numel for s in SIZES.values())  # 500 + 2 * 1020 + 510 = 3050


def module_plan(decisions, alpha=0.5, outside="blend"):
    units = []
    for (layer, module), decision in decisions.items():
        units.append({"unit": f"layer.{layer}.{module}", "layer": layer, "module": module, "decision": decision,
                      "d": 0.1 if decision == "safety" else -0.1, "p_safety": 0.3, "p_language": 0.2})
    return MergePlan("adaptive", {"granularity": "module", "tau": 0.001, "alpha": alpha},
                     {"language": {"path": "/nonexistent/language", "fingerprint": "sha256:1"}},
                     "LlamaForCausalLM", 2, outside, "language", units)


PLAN = module_plan({(0, "attention"): "language", (0, "mlp"): "blend", (1, "attention"): "blend", (1, "mlp"): "safety"})


def test_parameter_shares_by_hand():
    assert TOTAL == 3050
    shares = parameter_shares(PLAN, SIZES)
    # safety: layer 1 MLP 600; language: layer 0 attention 400 + four norms 40;
    # blended: layer 0 MLP 600 + layer 1 attention 400 + outside 1010
    assert shares == pytest.approx({"safety": 600 / TOTAL, "language": 440 / TOTAL, "blend": 2010 / TOTAL})
    assert summary_line(PLAN, SIZES) == (
        "4 units: 1 from safety, 1 from language, 2 blended; parameters: 19.7% safety, 14.4% language, 65.9% blended"
    )
    assert summary_line(PLAN) == "4 units: 1 from safety, 1 from language, 2 blended; parameter shares need the model's folder"


def test_outside_choice_moves_the_outside_share():
    plan = module_plan({(0, "attention"): "language", (0, "mlp"): "blend", (1, "attention"): "blend",
                        (1, "mlp"): "safety"}, outside="safety")
    assert parameter_shares(plan, SIZES)["safety"] == pytest.approx(1610 / TOTAL)


def test_formula_methods_are_one_combined_share():
    plan = MergePlan("ties", {"weights": {"safety": 1.0, "language": 1.0}, "density": 0.2, "lambda": 1.0,
                              "normalize": True}, {}, "LlamaForCausalLM", 2)
    assert parameter_shares(plan, SIZES) == {"combined": pytest.approx(1.0)}
    assert summary_line(plan, SIZES).endswith("parameters: 100.0% combined by ties")


def test_decision_table_rows():
    console = Console(record=True, width=200)
    console.print(decision_table(PLAN))
    text = console.export_text()
    for row in ("layer.0.attention │ language", "layer.0.mlp       │ blend a=0.5", "layer.1.mlp       │ safety"):
        assert row in text
    assert "+0.1000" in text and "-0.1000" in text and "p_S" in text
    assert "cos" not in text  # norm plans carry no cosine


def test_decision_table_shows_the_direction_criterions_cosine():
    plan = module_plan({(0, "attention"): "safety", (0, "mlp"): "language", (1, "attention"): "blend",
                        (1, "mlp"): "safety"})
    for unit, cos in zip(plan.units, (-0.25, 0.5, 0.0, -0.75)):
        unit["cos"] = cos
    console = Console(record=True, width=200)
    console.print(decision_table(plan))
    text = console.export_text()
    assert "cos" in text and "-0.2500" in text and "+0.5000" in text and "-0.7500" in text


def test_diff_of_same_units_lists_changed_decisions():
    other = module_plan({(0, "attention"): "language", (0, "mlp"): "safety", (1, "attention"): "blend",
                         (1, "mlp"): "safety"})
    other.units[2]["alpha"] = 0.9
    diff = diff_plans(PLAN, other, SIZES)
    assert diff.units == [("layer.0.mlp", "blend a=0.5", "safety"), ("layer.1.attention", "blend a=0.5", "blend a=0.9")]
    assert diff.settings == [] and diff.tensors == []
    assert diff_plans(PLAN, PLAN, SIZES).identical


def test_diff_across_granularities_compares_tensors():
    layer_plan = MergePlan("layer-swap", {"bottom": 1, "top": 0, "transition_bottom": 0, "transition_top": 0,
                                          "alpha": 0.5},
                           {"language": {"path": "/nonexistent/language", "fingerprint": "sha256:1"}},
                           "LlamaForCausalLM", 2, units=[
                               {"unit": "layer.0", "layer": 0, "decision": "language"},
                               {"unit": "layer.1", "layer": 1, "decision": "safety"}])
    diff = diff_plans(PLAN, layer_plan, SIZES)
    assert ("method", "adaptive", "layer-swap") in diff.settings
    changed = {name for name, _, _ in diff.tensors}
    # layer 0: the MLP blend becomes language; layer 1: attention blend and norms become safety
    expected = {f"{PREFIX}0.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
    expected |= {f"{PREFIX}1.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    expected |= {f"{PREFIX}1.{n}.weight" for n in ("input_layernorm", "post_attention_layernorm")}
    assert changed == expected
    assert diff.differing_parameters == pytest.approx((600 + 400 + 20) / TOTAL)
    lines = [str(x) for x in diff_table(diff) if isinstance(x, str)]
    assert "33.4% of parameters are computed differently" in lines


def test_cli_show_and_diff(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    base, safety, language = tiny.make_triple(root, "llama", layers=4)
    module = safeswap.plan(base, safety, language, out=root / "module.yaml")
    safeswap.plan(base, safety, language, out=root / "swap.yaml", method="layer-swap", parameters={"bottom": "1/1"})
    sizes = tensor_sizes(module)
    assert sizes is not None and sum(s.numel for s in sizes.values()) > 0
    runner = CliRunner()
    result = runner.invoke(app, ["show-plan", str(root / "module.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "layer.0.attention" in result.output and summary_line(module, sizes) in result.output
    result = runner.invoke(app, ["diff-plans", str(root / "module.yaml"), str(root / "swap.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tensors whose operation differs" in result.output and "take safety" in result.output
    result = runner.invoke(app, ["diff-plans", str(root / "module.yaml"), str(root / "module.yaml")])
    assert "the plans agree on every decision" in result.output
