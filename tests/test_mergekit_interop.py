"""mergekit 0.1.5 interop: exported plans and the shared methods give mergekit's weights.

mergekit runs from its own virtualenv (see tests/mergekit_helpers.py); all runs start
together in one module fixture.
"""


import pytest
import torch
import yaml

import safeswap
import tiny
from mergekit_helpers import needs_mergekit, run_mergekit, tensors, within_one_ulp
from safeswap.read.architecture import classify, family_for
from safeswap.decide.methods import load_plan
from safeswap.decide.plan_file import MergePlan
from safeswap.decide.mergekit_export import mergekit_config, mergekit_yaml
from safeswap.decide.methods import get_method
from safeswap.decide.operations import Take

# name -> (family, layers, safeswap merge keyword arguments)
CASES = {
    "adaptive-module": ("qwen3", 4, dict(alpha=0.3)),  # q_norm/k_norm travel with attention
    "adaptive-projection": ("qwen2", 4, dict(granularity="projection", outside_layers="safety")),  # biases
    "layer-swap": ("llama", 6, dict(method="layer-swap", parameters={"bottom": "1/1", "transition_bottom": 2,
                                                                      "transition_top": 1, "alpha": 0.7})),
    "linear": ("llama", 6, dict(method="linear", parameters={"weights": "0.7,0.2"})),
    "task-arithmetic": ("llama", 6, dict(method="task-arithmetic", parameters={"weights": "0.7,0.4", "lambda": 0.8})),
    "ties": ("llama", 6, dict(method="ties", parameters={"weights": "1.0,0.5", "density": 0.3, "lambda": 0.9})),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{case: (safeswap folder, mergekit folder, (base, safety, language))}; mergekit runs all at once."""
    root = tmp_path_factory.mktemp("interop")
    triples = {}
    for family, layers, _ in CASES.values():
        if (family, layers) not in triples:
            triples[family, layers] = tiny.make_triple(root / f"{family}{layers}", family, layers=layers)
    merges = {case: (safeswap.merge(*triples[family, layers], out=root / case / "safeswap", **kwargs), triples[family, layers])
              for case, (family, layers, kwargs) in CASES.items()}
    return run_mergekit(merges, root)


@needs_mergekit
@pytest.mark.parametrize("case", ["adaptive-module", "adaptive-projection", "layer-swap"])
def test_exported_unit_plan_gives_the_same_weights(results, case):
    """Taken tensors are bit-identical; blends agree to one bf16 ulp, and nearly always exactly."""
    ours, theirs, folders = results[case]
    a, b = tensors(ours), tensors(theirs)
    inputs = [tensors(f) for f in folders[1:]]
    plan = load_plan(ours / "safeswap-plan.yaml")
    method, family = get_method(plan.method), family_for(plan.architecture)
    assert set(a) == set(b)
    blended = exact = 0
    for name in a:
        op = method.operation(plan, name, classify(family, name))
        if isinstance(op, Take):
            assert torch.equal(a[name], b[name]), name
        else:
            assert bool(within_one_ulp(a[name], b[name], [x[name] for x in inputs]).all()), name
            blended += a[name].numel()
            exact += int((a[name] == b[name]).sum())
    assert blended > 0 and exact / blended > 0.99
    assert any(not torch.equal(a[n], inputs[1][n]) for n in a)  # the merge did something


@needs_mergekit
@pytest.mark.parametrize("case", ["linear", "task-arithmetic", "ties"])
def test_shared_methods_match_mergekit_within_one_bf16_ulp(results, case):
    ours, theirs, folders = results[case]
    a, b = tensors(ours), tensors(theirs)
    inputs = [tensors(f) for f in folders]
    assert set(a) == set(b)
    for name in a:
        assert bool(within_one_ulp(a[name], b[name], [x[name] for x in inputs]).all()), name
    assert all(not torch.equal(a[n], inputs[2][n]) for n in a if "layers.1.mlp" in n)


# ----- the exported conditions, resolved the way mergekit resolves them (no mergekit needed) -----

def first_match(conditions, tensor_name):
    """mergekit's rule for a list of {filter, value}: the first whose filter is a substring of the name."""
    for condition in conditions:
        if condition.get("filter") in (None, "*") or condition["filter"] in tensor_name:
            return condition["value"]
    raise AssertionError(f"no condition matches {tensor_name}")


def projection_plan():
    """One Qwen2 layer at projection granularity with weight and bias of one projection decided apart."""
    prefix = "model.layers.0."
    scored = [f"{prefix}self_attn.{p}.{k}" for p in ("q_proj", "k_proj", "v_proj") for k in ("weight", "bias")]
    scored += [f"{prefix}self_attn.o_proj.weight"] + [f"{prefix}mlp.{p}.weight" for p in ("gate_proj", "up_proj",
                                                                                          "down_proj")]
    decisions = {f"{prefix}self_attn.q_proj.weight": ("safety", None), f"{prefix}self_attn.k_proj.bias": ("blend", 0.25),
                 f"{prefix}mlp.up_proj.weight": ("blend", None)}
    units = []
    for name in scored:
        decision, alpha = decisions.get(name, ("language", None))
        unit = {"unit": name, "layer": 0, "decision": decision}
        if alpha is not None:
            unit["alpha"] = alpha
        units.append(unit)
    names = scored + [f"{prefix}input_layernorm.weight", f"{prefix}post_attention_layernorm.weight",
                      "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    models = {r: {"path": f"org/{r}", "fingerprint": "sha256:0"} for r in ("base", "safety", "language")}
    plan = MergePlan("adaptive", {"granularity": "projection", "tau": 0.001, "alpha": 0.6}, models,
                     "Qwen2ForCausalLM", 1, "language", "language", units)
    return plan, names


def test_exported_conditions_give_every_tensor_its_planned_weights():
    plan, names = projection_plan()
    config = mergekit_config(plan, "bfloat16")
    method, family = get_method(plan.method), family_for(plan.architecture)
    (layer,) = config["slices"]
    for name in names:
        op = method.operation(plan, name, classify(family, name))
        expected = {"safety": 1.0, "language": 0.0} if op == Take("safety") else (
            {"safety": 0.0, "language": 1.0} if op == Take("language") else dict(op.weights))
        for source, expert in zip(layer["sources"], ("safety", "language")):
            assert first_match(source["parameters"]["weight"], name) == pytest.approx(expected[expert]), (name, expert)
    # the q_proj bias stays with the language expert although its weight comes from the safety expert
    safety_conditions = layer["sources"][0]["parameters"]["weight"]
    assert first_match(safety_conditions, "model.layers.0.self_attn.q_proj.bias") == 0.0
    assert first_match(safety_conditions, "model.layers.0.self_attn.k_proj.bias") == 0.25


def test_dare_export_says_it_cannot_match():
    plan = MergePlan("dare-ties", {"weights": {"safety": 1.0, "language": 0.5}, "density": 0.3, "lambda": 1.0,
                                   "normalize": False, "seed": 1},
                     {r: {"path": f"org/{r}", "fingerprint": "sha256:0"} for r in ("base", "safety", "language")},
                     "LlamaForCausalLM", 2)
    text = mergekit_yaml(plan, "bfloat16")
    assert "merge_method: dare_ties" in text and "NOTE: mergekit draws its own random DARE masks" in text
    config = yaml.safe_load(text)
    assert config["base_model"] == "org/base"
    assert config["models"][1] == {"model": "org/language", "parameters": {"weight": 0.5, "density": 0.3}}
