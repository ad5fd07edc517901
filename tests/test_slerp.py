"""SLERP: the formula in float64 by hand, the parallel fallback, the ends of t, refusals, mergekit 0.1.5, replay."""

import hashlib
import json
import math
import os
import subprocess

import pytest
import torch
import yaml

import safeswap
import tiny
from mergekit_helpers import MERGEKIT, bf16_ulp, needs_mergekit, run_mergekit, tensors, within_one_ulp
from cli_helpers import assert_refused, run_cli
from safeswap.decide.mergekit_export import mergekit_config, mergekit_yaml
from safeswap.decide.methods import get_method
from safeswap.decide.methods.slerp import DOT_THRESHOLD, Slerp, slerp
from safeswap.decide.operations import Take
from safeswap.decide.plan_file import MergePlan
from safeswap.errors import SafeswapError
from safeswap.read.checkpoint import Checkpoint

T = 0.3


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tiny.make_triple(tmp_path_factory.mktemp("slerp-triple"), "llama", layers=4)


@pytest.fixture(scope="module")
def merged(triple, tmp_path_factory):
    return safeswap.merge(*triple, out=tmp_path_factory.mktemp("slerp") / "m", method="slerp", parameters={"t": T})


def read_bytes(folder):
    with Checkpoint(folder) as ckpt:
        return {name: bytes(ckpt.read_raw(name).numpy()) for name in ckpt.ordered_names()}


def shards_digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def cosine64(v0, v1):
    a, b = v0.double().flatten(), v1.double().flatten()
    return float(torch.clamp((a / a.norm()) @ (b / b.norm()), -1, 1))


def slerp64(t, v0, v1):
    """The formula, in float64: from v0 (t = 0) to v1 (t = 1), linear where nearly (anti)parallel."""
    a, b = v0.double(), v1.double()
    dot = cosine64(v0, v1)
    if abs(dot) > DOT_THRESHOLD:
        return (1 - t) * a + t * b
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)


# ----- (1) the formula by hand ---------------------------------------------------------------------

def test_two_small_tensors_by_hand():
    """Unit vectors 90 degrees apart stay unit vectors, at the angle t * 90 degrees from the language expert."""
    language, safety = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    result = Slerp(T).compute({"language": language.clone(), "safety": safety.clone()}, "x")
    expected = torch.tensor([math.cos(T * math.pi / 2), math.sin(T * math.pi / 2)])
    assert torch.allclose(result, expected, rtol=0, atol=1e-7)
    # a 2x3 pair at 60 degrees with different norms: the shape is kept, the float64 formula is met
    language = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    safety = torch.tensor([[0.5, 0.0, 0.0], [0.5 * math.sqrt(3), 0.0, 0.0]])
    result = Slerp(0.7).compute({"language": language.clone(), "safety": safety.clone()}, "x")
    assert result.shape == (2, 3)
    assert torch.allclose(result.double(), slerp64(0.7, language, safety), rtol=1e-6, atol=1e-7)


def test_merge_is_the_float64_formula_within_one_bf16_ulp(merged, triple):
    _, safety, language = (tensors(f) for f in triple)
    result = tensors(merged)
    assert set(result) == set(language)
    branches = set()
    for name, got in result.items():
        dot = cosine64(language[name], safety[name])
        branches.add("linear" if abs(dot) > DOT_THRESHOLD else "spherical")
        expected = slerp64(T, language[name], safety[name])
        ulp = bf16_ulp(expected.float().abs()).double()
        assert bool(((got.double() - expected).abs() <= ulp).all()), name
    assert branches == {"linear", "spherical"}  # the tiny experts exercise both: little-changed and much-changed tensors


def test_t_is_the_safety_experts_share(merged, triple):
    """At t = 0.3 a tensor the safety expert changed a lot lies nearer the language expert."""
    name = "model.layers.1.mlp.up_proj.weight"
    _, safety, language = (tensors(f)[name] for f in triple)
    result = tensors(merged)[name]
    assert cosine64(language, safety) < DOT_THRESHOLD
    assert (result - language).norm() < (result - safety).norm()


# ----- (2) the parallel fallback ---------------------------------------------------------------------

def test_parallel_experts_fall_back_to_the_linear_blend():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(T, dtype=torch.float32)
    for y in (x.clone(), 2.5 * x, -x):  # identical, parallel, antiparallel
        result = Slerp(T).compute({"language": x.clone(), "safety": y.clone()}, "x")
        assert torch.equal(result, (1 - t) * x + t * y)
    # nearly parallel, just inside the threshold: linear; just outside: spherical
    x = torch.tensor([1.0, 0.0])
    for angle, linear in ((0.03, True), (0.04, False)):  # cos 0.03 = 0.99955, cos 0.04 = 0.9992
        y = torch.tensor([math.cos(angle), math.sin(angle)])
        result = Slerp(0.5).compute({"language": x.clone(), "safety": y.clone()}, "x")
        blend = (1 - torch.tensor(0.5)) * x + torch.tensor(0.5) * y
        assert torch.equal(result, blend) == linear, angle
        assert torch.allclose(result.double(), slerp64(0.5, x, y), rtol=1e-6, atol=0), angle


def test_identical_experts_merge_to_the_expert_itself(triple, tmp_path):
    base, _, language = triple
    twin = tmp_path / "twin"
    twin.mkdir()
    for path in language.iterdir():
        (twin / path.name).write_bytes(path.read_bytes())
    out = safeswap.merge(base, twin, language, out=tmp_path / "m", method="slerp", parameters={"t": T})
    assert read_bytes(out) == read_bytes(language)


# ----- (3) the ends of t -------------------------------------------------------------------------------

@pytest.mark.parametrize("t, source", [(0.0, "language"), (1.0, "safety")])
def test_the_ends_of_t_take_an_expert_byte_for_byte(triple, tmp_path, t, source):
    method = get_method("slerp")
    plan = MergePlan("slerp", method.validate_parameters({"t": t}), {}, "LlamaForCausalLM", 4)
    assert method.operation(plan, "model.layers.0.mlp.up_proj.weight", None) == Take(source)
    out = safeswap.merge(*triple, out=tmp_path / "m", method="slerp", parameters={"t": t})
    experts = dict(zip(("base", "safety", "language"), triple))
    assert read_bytes(out) == read_bytes(experts[source])
    # and mergekit's formula gives the same values there: the take changes nothing but signed zeros
    _, safety, language = (tensors(f) for f in triple)
    name = "model.layers.1.mlp.up_proj.weight"
    formula = slerp(t, language[name].clone(), safety[name].clone())
    assert torch.equal(formula, {"safety": safety, "language": language}[source][name])


# ----- (4) refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "params, message",
    [
        ({"t": 1.5}, r"t must lie in \[0, 1\] \(the safety expert's share\), got 1.5"),
        ({"t": -0.1}, r"t must lie in \[0, 1\]"),
        ({"t": "x"}, "t must be a number"),
        ({"t": True}, "t must be a number"),
        ({"t": "nan"}, "t must be finite"),
        ({"alpha": 0.3}, "method slerp does not take alpha; its parameters are t"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(SafeswapError, match=message) as error:
        get_method("slerp").validate_parameters(params)
    assert "\n" not in str(error.value)


def test_defaults():
    assert get_method("slerp").validate_parameters({}) == {"t": 0.5}
    assert get_method("slerp").validate_parameters({"t": "0.25"}) == {"t": 0.25}


def test_bad_t_is_refused_before_anything_is_written(triple, tmp_path):
    with pytest.raises(SafeswapError, match=r"t must lie in \[0, 1\]"):
        safeswap.merge(*triple, out=tmp_path / "m", method="slerp", parameters={"t": 2})
    assert not (tmp_path / "m").exists()


def test_cli_refuses_a_plan_with_a_bad_t_in_one_line(monkeypatch, capsys, triple, tmp_path):
    plan_path = tmp_path / "plan.yaml"
    safeswap.plan(*triple, method="slerp", parameters={"t": T}, out=plan_path)
    text = plan_path.read_text()
    assert f"t: {T}" in text
    plan_path.write_text(text.replace(f"t: {T}", "t: 1.5"))
    assert_refused(monkeypatch, capsys, tmp_path / "out", "t must lie in [0, 1]", "merge", "--plan", plan_path)


def test_cli_t_flag(monkeypatch, capsys, triple, tmp_path):
    from safeswap import cli

    if "t" not in cli.METHOD_FLAGS:
        pytest.skip("safeswap's CLI has no --t flag yet")
    args = ["plan", "--base", triple[0], "--safety", triple[1], "--language", triple[2], "--method", "slerp"]
    code, err = run_cli(monkeypatch, capsys, *args, "--t", "0.25", "--out", tmp_path / "p.yaml")
    assert code in (0, None), err
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["parameters"] == {"t": 0.25}
    assert_refused(monkeypatch, capsys, tmp_path / "out", "t must lie in [0, 1]",
                   "merge", "--base", triple[0], "--safety", triple[1], "--language", triple[2], "--method", "slerp",
                   "--t", "1.5")


# ----- (5) mergekit 0.1.5 ------------------------------------------------------------------------------

def test_export_names_the_language_expert_as_mergekits_start():
    models = {r: {"path": f"org/{r}", "fingerprint": "sha256:0"} for r in ("base", "safety", "language")}
    plan = MergePlan("slerp", {"t": 0.3}, models, "LlamaForCausalLM", 2)
    config = mergekit_config(plan, "bfloat16")
    assert config == {"merge_method": "slerp", "base_model": "org/language",
                      "models": [{"model": "org/safety"}, {"model": "org/language"}],
                      "parameters": {"t": 0.3}, "dtype": "float32", "out_dtype": "bfloat16"}
    assert "Run: mergekit-yaml" in mergekit_yaml(plan, "bfloat16")


@pytest.fixture(scope="module")
def mergekit_runs(tmp_path_factory):
    """{case: (safeswap folder, mergekit folder, (base, safety, language))}; the mergekit runs go in parallel."""
    root = tmp_path_factory.mktemp("slerp-interop")
    cases = {"llama": ("llama", 4, False, 0.3), "qwen2-tied": ("qwen2", 3, True, 0.75)}
    merges = {}
    for case, (family, layers, tie, t) in cases.items():
        folders = tiny.make_triple(root / case / "models", family, layers=layers, tie=tie)
        merges[case] = (safeswap.merge(*folders, out=root / case / "safeswap", method="slerp", parameters={"t": t}), folders)
    return run_mergekit(merges, root)


@needs_mergekit
@pytest.mark.parametrize("case", ["llama", "qwen2-tied"])
def test_mergekit_gives_the_same_weights_within_one_bf16_ulp(mergekit_runs, case):
    ours, theirs, folders = mergekit_runs[case]
    a, b = tensors(ours), tensors(theirs)
    inputs = [tensors(f) for f in folders[1:]]
    assert set(a) == set(b)
    exact = total = 0
    for name in a:
        assert bool(within_one_ulp(a[name], b[name], [x[name] for x in inputs]).all()), name
        exact += int((a[name] == b[name]).sum())
        total += a[name].numel()
    assert exact / total > 0.99  # the same float32 steps: nearly always the same bits
    assert yaml.safe_load((ours / "safeswap-plan.yaml").read_text())["method"] == "slerp"
    assert any(not torch.equal(a[n], inputs[1][n]) for n in a)  # the merge did something


MERGEKIT_SLERP = """
import json, sys, torch
from mergekit.merge_methods.slerp import slerp
torch.set_num_threads(1)
pairs = torch.load(sys.argv[1])
out = {k: slerp(torch.tensor([t]), v0.unsqueeze(0), v1.unsqueeze(0))[0] for k, (t, v0, v1) in pairs.items()}
torch.save(out, sys.argv[2])
print(json.dumps(torch.__version__))
"""


@needs_mergekit
def test_the_arithmetic_is_mergekits_step_for_step(tmp_path):
    """mergekit's own slerp() on the same float32 pairs, single-threaded as safeswap's engine runs it:
    the same bits, chunked tensors (over 2^20 entries), zero tensors and the fallback included."""
    g = torch.Generator().manual_seed(3)
    big0 = torch.randn(1200, 1000, generator=g)
    near = torch.randn(300, generator=g)
    pairs = {
        "chunked": (0.3, big0, 0.8 * big0 + 0.6 * torch.randn(1200, 1000, generator=g)),
        "small": (0.7, torch.randn(64, generator=g), torch.randn(64, generator=g)),
        "parallel": (0.4, near, near * 1.5 + 1e-4 * torch.randn(300, generator=g)),
        "antiparallel": (0.6, near, -near),
        "zero": (0.5, torch.zeros(10, 4), torch.randn(10, 4, generator=g)),
        "scalar": (0.2, torch.tensor(1.5), torch.tensor(-0.5)),
    }
    torch.save(pairs, tmp_path / "pairs.pt")
    python = MERGEKIT.parent / "python"
    done = subprocess.run([str(python), "-c", MERGEKIT_SLERP, str(tmp_path / "pairs.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    same_torch = json.loads(done.stdout.strip().splitlines()[-1]).split("+")[0] == torch.__version__.split("+")[0]
    theirs = torch.load(tmp_path / "out.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for key, (t, v0, v1) in pairs.items():
            ours = slerp(t, v0.clone(), v1.clone())
            if same_torch:
                assert torch.equal(ours, theirs[key]), key
            else:
                assert torch.allclose(ours, theirs[key], rtol=1e-6, atol=1e-7), key
    finally:
        torch.set_num_threads(threads)


# ----- (6) replay ----------------------------------------------------------------------------------

def test_replay_from_the_plan_file_is_byte_identical(merged, tmp_path):
    again = safeswap.merge(out=tmp_path / "again", plan=merged / "safeswap-plan.yaml")
    assert shards_digest(again) == shards_digest(merged)
    assert yaml.safe_load((merged / "safeswap-plan.yaml").read_text())["parameters"] == {"t": T}
