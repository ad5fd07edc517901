"""The comparison methods against direct float32 implementations of their formulas, on tiny models."""

import hashlib

import pytest
import torch
import yaml
from typer.testing import CliRunner

import safeswap
import tiny
from safeswap.read.checkpoint import Checkpoint
from safeswap.errors import SafeswapError
from safeswap.decide.methods import get_method
from safeswap.decide.methods.layer_swap import layer_decisions
from safeswap.decide.methods.task_vectors import TaskVectorMerge, keep_largest, tensor_seed
from safeswap.decide.specialization import TensorStat

LAYERS = 8


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tiny.make_triple(tmp_path_factory.mktemp("triple"), "llama", layers=LAYERS)


@pytest.fixture(scope="module")
def merged(triple, tmp_path_factory):
    """One merge per (method, parameters), shared by the tests that read it."""
    cache = {}

    def get(method, **parameters):
        key = (method, tuple(sorted((k, str(v)) for k, v in parameters.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(method) / "m"
            cache[key] = safeswap.merge(*triple, out=out, method=method, parameters=parameters)
        return cache[key]

    return get


def read_all(folder):
    with Checkpoint(folder) as ckpt:
        return {name: ckpt.read(name).float() for name in ckpt.ordered_names()}


def shards_digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def assert_every_tensor(out, triple, expected_fn):
    base, safety, language = (read_all(f) for f in triple)
    result = read_all(out)
    assert set(result) == set(language)
    for name in result:
        expected = expected_fn(base[name], safety[name], language[name], name).to(torch.bfloat16).float()
        assert torch.equal(result[name], expected), name


def test_linear_normalised_weights(merged, triple):
    out = merged("linear", weights="0.7,0.2")
    ws, wl = 0.7 / 0.9, 0.2 / 0.9
    assert_every_tensor(out, triple, lambda b, s, l, n: ws * s + wl * l)


def test_linear_without_normalisation(merged, triple):
    out = merged("linear", weights="safety=0.6,language=0.6", normalize=False)
    assert_every_tensor(out, triple, lambda b, s, l, n: 0.6 * s + 0.6 * l)


def test_task_arithmetic(merged, triple):
    out = merged("task-arithmetic", weights=[0.7, 0.4], **{"lambda": 0.8})
    assert_every_tensor(out, triple, lambda b, s, l, n: b + 0.8 * (0.7 * (s - b) + 0.4 * (l - b)))
    # The formula moves the base by both task vectors: the result is neither expert.
    name = "model.layers.0.self_attn.q_proj.weight"
    result, (_, s, l) = read_all(out)[name], (read_all(f)[name] for f in triple)
    assert not torch.equal(result, s) and not torch.equal(result, l)


def test_task_arithmetic_normalised(merged, triple):
    out = merged("task-arithmetic", weights=[0.5, 1.5], normalize=True)
    divisor = float(torch.tensor([0.5, 1.5]).sum())
    assert_every_tensor(out, triple, lambda b, s, l, n: b + (0.5 * (s - b) + 1.5 * (l - b)) / divisor)


def direct_trim(delta, density):
    """Top-k by magnitude, k = max(1, int(density * n)); ties at the cut in argsort's order."""
    flat = delta.flatten()
    k = max(1, int(density * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat.abs(), descending=True)[:k]] = True
    return torch.where(keep, flat, 0.0).view(delta.shape)


def direct_consensus(terms, weights, scale, normalize):
    total = sum(terms)
    sign = torch.where(total >= 0, 1.0, -1.0)
    agree = [torch.sign(t) == sign for t in terms]
    merged = sum(t * a for t, a in zip(terms, agree))
    divisor = sum(a * w for a, w in zip(agree, weights))
    divisor[divisor == 0] = 1.0
    if normalize:
        merged = merged / divisor
    return scale * merged


def test_ties(merged, triple):
    out = merged("ties", density=0.3, weights="1.0,0.5", **{"lambda": 0.9})

    def expected(b, s, l, n):
        terms = [direct_trim(s - b, 0.3) * 1.0, direct_trim(l - b, 0.3) * 0.5]
        return b + direct_consensus(terms, [1.0, 0.5], 0.9, normalize=True)

    assert_every_tensor(out, triple, expected)


def test_ties_by_hand():
    base = torch.zeros(5)
    safety = torch.tensor([1.0, -2.0, 3.0, 0.5, 0.25])
    language = torch.tensor([-3.0, -1.0, 1.0, 0.0, -0.25])
    op = TaskVectorMerge((("safety", 1.0), ("language", 1.0)), normalize=True, consensus=True)
    result = op.compute({"base": base.clone(), "safety": safety.clone(), "language": language.clone()}, "t")
    # sums -2, -3, 4, 0.5, 0 -> signs -, -, +, +, + (a zero sum elects +); zeros agree with nothing
    assert result.tolist() == [-3.0, -1.5, 2.0, 0.5, 0.25]
    op = TaskVectorMerge((("safety", 1.0), ("language", 1.0)), normalize=False, consensus=True)
    result = op.compute({"base": base.clone(), "safety": safety.clone(), "language": language.clone()}, "t")
    assert result.tolist() == [-3.0, -3.0, 4.0, 0.5, 0.25]


def test_trim_keeps_exactly_k_largest():
    delta = torch.tensor([1.0, -4.0, 2.0, 3.0, -0.5])
    assert keep_largest(delta.clone(), 0.4).tolist() == [0.0, -4.0, 0.0, 3.0, 0.0]
    assert keep_largest(delta.clone(), 0.01).tolist() == [0.0, -4.0, 0.0, 0.0, 0.0]  # at least one survives
    assert keep_largest(delta.clone(), 1.0).tolist() == delta.tolist()


def dare_terms(b, s, l, name, density, seed, weights):
    terms = []
    for role, w, x in (("safety", weights[0], s), ("language", weights[1], l)):
        g = torch.Generator().manual_seed(tensor_seed(seed, name, role))
        keep = torch.rand(x.shape, generator=g) < density
        terms.append((x - b) * keep / density * w)
    return terms


def test_dare_linear(merged, triple):
    out = merged("dare-linear", density=0.4, seed=7, weights="0.8,0.6", **{"lambda": 1.2})

    def expected(b, s, l, n):
        terms = dare_terms(b, s, l, n, 0.4, 7, (0.8, 0.6))
        return b + 1.2 * (terms[0] + terms[1])

    assert_every_tensor(out, triple, expected)


def test_dare_ties(merged, triple):
    out = merged("dare-ties", density=0.6, seed=3)

    def expected(b, s, l, n):
        return b + direct_consensus(dare_terms(b, s, l, n, 0.6, 3, (1.0, 1.0)), [1.0, 1.0], 1.0, normalize=False)

    assert_every_tensor(out, triple, expected)


def test_dare_drops_the_asked_fraction(merged, triple):
    """Entries of the safety task vector that survive, over all tensors: close to the density."""
    base, safety = read_all(triple[0]), read_all(triple[1])
    kept = total = 0
    for name, b in base.items():
        g = torch.Generator().manual_seed(tensor_seed(11, name, "safety"))
        kept += int((torch.rand(b.shape, generator=g) < 0.3).sum())
        total += b.numel()
    assert abs(kept / total - 0.3) < 0.01
    # and every tensor gets its own mask: two names, same seed, different draws
    a, b_ = (torch.Generator().manual_seed(tensor_seed(11, n, "safety")) for n in ("x.weight", "y.weight"))
    assert not torch.equal(torch.rand(100, generator=a), torch.rand(100, generator=b_))


def test_dare_is_deterministic_across_runs_and_thread_counts(merged, triple, tmp_path):
    first = merged("dare-ties", density=0.5, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = safeswap.merge(*triple, out=tmp_path / "one", method="dare-ties", parameters={"density": 0.5, "seed": 5})
        torch.set_num_threads(2)
        two = safeswap.merge(*triple, out=tmp_path / "two", method="dare-ties", parameters={"density": 0.5, "seed": 5})
    finally:
        torch.set_num_threads(threads)
    assert shards_digest(first) == shards_digest(one) == shards_digest(two)
    other = safeswap.merge(*triple, out=tmp_path / "other", method="dare-ties", parameters={"density": 0.5, "seed": 6})
    assert shards_digest(other) != shards_digest(first)


def test_dare_mask_does_not_depend_on_tensor_order(triple):
    """A tensor computed alone gives the same bytes as the same tensor inside a whole merge."""
    name = "model.layers.3.mlp.up_proj.weight"
    op = TaskVectorMerge((("safety", 1.0), ("language", 1.0)), sparsify="random", density=0.5, seed=9, consensus=True)
    inputs = {role: read_all(folder)[name] for role, folder in zip(("base", "safety", "language"), triple)}
    alone = op.compute({k: v.clone() for k, v in inputs.items()}, name)
    op.compute({k: v.clone() for k, v in inputs.items()}, "model.layers.0.mlp.up_proj.weight")  # another tensor first
    again = op.compute({k: v.clone() for k, v in inputs.items()}, name)
    assert torch.equal(alone, again)


# ----- layer-swap ---------------------------------------------------------------------------------

def test_layer_swap_decisions_with_transitions():
    params = get_method("layer-swap").validate_parameters({"bottom": 2, "top": 1, "transition_bottom": 2,
                                                           "transition_top": 1})
    assert layer_decisions(LAYERS, params) == [
        ("language", None), ("language", None),
        ("blend", 1 / 3), ("blend", 2 / 3),  # stepping from the language expert to the safety expert
        ("safety", None), ("safety", None),
        ("blend", 1 / 2),
        ("language", None),
    ]
    params = get_method("layer-swap").validate_parameters({"bottom": 1, "top": 2, "transition_top": 3})
    assert [round(a, 4) if a else a for _, a in layer_decisions(LAYERS, params)] == [
        None, None, None, 0.75, 0.5, 0.25, None, None
    ]


def test_layer_swap_shorthand():
    method = get_method("layer-swap")
    assert method.validate_parameters({"bottom": "10/6"}) == method.validate_parameters({"bottom": 10, "top": 6})
    assert method.validate_parameters({"bottom": "10/6", "top": 6})["top"] == 6
    with pytest.raises(SafeswapError, match="already sets top to 6"):
        method.validate_parameters({"bottom": "10/6", "top": 5})
    with pytest.raises(SafeswapError, match="needs --bottom B and --top T"):
        method.validate_parameters({"bottom": 3})
    with pytest.raises(SafeswapError, match="top must be a whole number"):
        method.validate_parameters({"bottom": "3/x"})


def test_layer_swap_merge(merged, triple):
    out = merged("layer-swap", bottom="2/1", transition_bottom=2, transition_top=1, alpha=0.25)
    plan = yaml.safe_load((out / "safeswap-plan.yaml").read_text())
    assert [u["decision"] for u in plan["units"]] == ["language", "language", "blend", "blend", "safety", "safety",
                                                      "blend", "language"]
    assert plan["parameters"] == {"bottom": 2, "top": 1, "transition_bottom": 2, "transition_top": 1, "alpha": 0.25}
    alphas = {2: 1 / 3, 3: 2 / 3, 6: 1 / 2}
    source = {0: "language", 1: "language", 4: "safety", 5: "safety", 7: "language"}

    def expected(b, s, l, name):
        if not name.startswith("model.layers."):
            return 0.25 * s + 0.75 * l  # outside tensors: the plan's alpha, as in the core rule
        layer = int(name.split(".")[2])
        if layer in alphas:
            return alphas[layer] * s + (1 - alphas[layer]) * l
        return {"safety": s, "language": l}[source[layer]]  # norms included: the whole layer moves

    assert_every_tensor(out, triple, expected)


def test_layer_swap_from_statistics_knows_the_layer_count():
    stats = [TensorStat(f"model.layers.{i}.mlp.up_proj.weight", i, "mlp", "up_proj", 4, 1.0, 0.1 * i, 0.1) for i in range(6)]
    method = get_method("layer-swap")
    units = method.build_units(None, stats, method.validate_parameters({"bottom": "1/1"}))
    assert [u["decision"] for u in units] == ["language"] + ["safety"] * 4 + ["language"]
    assert all("d" in u for u in units)  # the statistics ride along for reading, not for deciding


def test_layer_swap_refuses_too_many_layers(triple):
    with pytest.raises(SafeswapError, match="<= 8 layers"):
        safeswap.plan(*triple, method="layer-swap", parameters={"bottom": "4/4", "transition_top": 1})


# ----- parameters and flags -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "method, params, message",
    [
        ("ties", {"tau": 0.1}, "does not take tau"),
        ("ties", {"density": 0}, r"density must lie in \(0, 1\]"),
        ("dare-ties", {"density": 1.5}, r"density must lie in \(0, 1\]"),
        ("dare-linear", {"seed": -1}, "seed must be >= 0"),
        ("dare-linear", {"seed": 1.5}, "seed must be a whole number"),
        ("linear", {"weights": "1"}, r"takes 2 values \(safety, language\)"),
        ("linear", {"weights": "safety=1,base=2"}, "must name exactly the experts"),
        ("linear", {"weights": "1,-1"}, "sum to 0"),
        ("task-arithmetic", {"lambda": "x"}, "lambda must be a number"),
        ("task-arithmetic", {"normalize": "maybe"}, "normalize must be true or false"),
        ("layer-swap", {"bottom": 1, "top": 1, "granularity": "module"}, "decides whole layers"),
    ],
)
def test_bad_parameters_are_one_line_errors(method, params, message):
    with pytest.raises(SafeswapError, match=message):
        get_method(method).validate_parameters(params)


def test_cli_flags_reach_the_plan(triple, tmp_path):
    from safeswap.cli import app

    base, safety, language = (str(p) for p in triple)
    runner = CliRunner()
    plan_path = tmp_path / "p.yaml"
    result = runner.invoke(app, ["plan", "--base", base, "--safety", safety, "--language", language, "--out",
                                 str(plan_path), "--method", "layer-swap", "--bottom", "2/1", "--transition-bottom", "2",
                                 "--transition-top", "1"])
    assert result.exit_code == 0, result.output
    params = yaml.safe_load(plan_path.read_text())["parameters"]
    assert params == {"bottom": 2, "top": 1, "transition_bottom": 2, "transition_top": 1, "alpha": 0.5}
    result = runner.invoke(app, ["plan", "--base", base, "--safety", safety, "--language", language, "--out",
                                 str(plan_path), "--method", "dare-ties", "--weights", "0.6,0.4", "--density", "0.3",
                                 "--lambda", "0.8", "--seed", "4", "--no-normalize"])
    assert result.exit_code == 0, result.output
    params = yaml.safe_load(plan_path.read_text())["parameters"]
    assert params == {"weights": {"safety": 0.6, "language": 0.4}, "density": 0.3, "lambda": 0.8,
                      "normalize": False, "seed": 4}
    result = runner.invoke(app, ["plan", "--base", base, "--safety", safety, "--language", language, "--out",
                                 str(plan_path), "--method", "ties", "--tau", "0.1"])
    assert isinstance(result.exception, SafeswapError) and "does not take tau" in str(result.exception)
