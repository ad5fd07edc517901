"""LoRA adapters as experts: merges equal to merging the PEFT-merged experts, analysis without B A, refusals by name."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from cli_helpers import run_cli
from safeswap.errors import SafeswapError

TARGETS = {
    "safety": (["gate_proj", "up_proj", "down_proj"], 8, 16),  # (target modules, r, lora_alpha)
    "language": (["q_proj", "k_proj", "v_proj", "o_proj"], 4, 8),
}


def make_adapter(base, out, targets, r, alpha, seed, dtype=torch.bfloat16, **extra):
    """A PEFT LoRA adapter with random A and B (B is zero at init, which would make every delta 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                                                  **extra))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(str(out))
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(config))
    merged = peft_model.merge_and_unload().to(dtype)
    merged.save_pretrained(str(out.parent / f"{out.name}-merged"))
    shutil.copy(base / "tokenizer.json", out.parent / f"{out.name}-merged")
    return out, out.parent / f"{out.name}-merged"


def build(root, dtype):
    base = tiny.make_model(root / "base", "llama", layers=3, dtype=dtype)
    experts = {}
    for seed, (role, (targets, r, alpha)) in enumerate(TARGETS.items(), start=1):
        experts[role] = make_adapter(base, root / role, targets, r, alpha, seed, dtype=dtype)
    return base, experts


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    return build(tmp_path_factory.mktemp("bf16"), torch.bfloat16)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fp32"), torch.float32)


def bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in representable bf16 steps between two bf16 tensors of one sign pattern."""
    ia, ib = a.view(torch.int16).int(), b.view(torch.int16).int()
    ia = torch.where(ia < 0, -(ia & 0x7FFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFF), ib)
    return int((ia - ib).abs().max())


@pytest.mark.parametrize("method, parameters", [("adaptive", {}), ("linear", {}), ("ties", {"density": 0.5}),
                                                ("layer-swap", {"bottom": 1, "top": 1})])
def test_adapter_merge_equals_merging_the_peft_merged_experts(bf16, tmp_path, method, parameters):
    import safeswap

    base, experts = bf16
    ours = safeswap.merge(base, experts["safety"][0], experts["language"][0], out=tmp_path / "a", method=method,
                          parameters=parameters)
    full = safeswap.merge(base, experts["safety"][1], experts["language"][1], out=tmp_path / "f", method=method,
                          parameters=parameters)
    a, f = load_file(ours / "model.safetensors"), load_file(full / "model.safetensors")
    assert a.keys() == f.keys()
    worst = max(bf16_ulps(a[k], f[k]) for k in a)
    assert worst <= 1, worst  # PEFT rounds the delta to bf16 before adding it; safeswap rounds the sum once
    plan_a = (ours / "safeswap-plan.yaml").read_text()
    plan_f = (full / "safeswap-plan.yaml").read_text()
    decisions = lambda text: [line.split("decision: ")[1].split(",")[0] for line in text.splitlines() if "decision: " in line]
    assert decisions(plan_a) == decisions(plan_f)


def test_untouched_tensors_are_the_base_bytes(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    out = safeswap.merge(base, experts["safety"][0], experts["language"][0], out=tmp_path / "o",
                         method="layer-swap", parameters={"bottom": 0, "top": 0})
    merged, original = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    # layer-swap with no bottom/top takes every layer from the safety adapter: its attention is the base's
    assert torch.equal(merged["model.layers.1.self_attn.q_proj.weight"], original["model.layers.1.self_attn.q_proj.weight"])
    assert not torch.equal(merged["model.layers.1.mlp.up_proj.weight"], original["model.layers.1.mlp.up_proj.weight"])


@pytest.mark.parametrize("safety_kind, language_kind", [(0, 0), (0, 1), (1, 0)])  # 0: adapter, 1: merged expert
def test_adapter_analysis_equals_the_merged_experts_analysis(fp32, safety_kind, language_kind):
    import safeswap

    base, experts = fp32
    ours = safeswap.analyze(base, experts["safety"][safety_kind], experts["language"][language_kind])
    full = safeswap.analyze(base, experts["safety"][1], experts["language"][1])
    for a, f in zip(ours.tensors, full.tensors):
        assert a.name == f.name
        assert a.delta_safety == pytest.approx(f.delta_safety, rel=1e-5, abs=1e-6)
        assert a.delta_language == pytest.approx(f.delta_language, rel=1e-5, abs=1e-6)
        assert a.dot == pytest.approx(f.dot, rel=1e-4, abs=1e-7)  # the direction criterion's input


def test_overlapping_adapters_give_their_dot_from_the_factors(fp32, tmp_path):
    """Both adapters on the same modules: the dot is s s' sum((B^T B') * (A A'^T)), checked against the merged experts."""
    import safeswap

    base, experts = fp32
    targets, r, alpha = TARGETS["safety"]
    other = make_adapter(base, tmp_path / "other", targets, 4, 4, seed=9, dtype=torch.float32)
    ours = safeswap.analyze(base, experts["safety"][0], other[0])
    full = safeswap.analyze(base, experts["safety"][1], other[1])
    dots = [(a.dot, f.dot) for a, f in zip(ours.tensors, full.tensors) if "mlp" in a.name]
    assert dots and all(abs(f) > 0 for _, f in dots)
    for a, f in dots:
        assert a == pytest.approx(f, rel=1e-4)


def test_analysis_never_builds_b_times_a(fp32, monkeypatch):
    import safeswap
    from safeswap.read.adapter import LoraAdapter

    def forbidden(*args, **kwargs):
        raise AssertionError("the analysis computed B A")

    monkeypatch.setattr(LoraAdapter, "delta_rows", forbidden)
    base, experts = fp32
    stats = safeswap.analyze(base, experts["safety"][0], experts["language"][0])
    adapted = [t for t in stats.tensors if "mlp" in t.name]
    assert adapted and all(t.delta_safety > 0 for t in adapted)
    assert all(t.delta_safety == 0 for t in stats.tensors if "self_attn" in t.name)


def test_adapter_and_full_expert_mix(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    out = safeswap.merge(base, experts["safety"][0], experts["language"][1], out=tmp_path / "o")
    assert safeswap.verify(out, inputs=True)["tensors"] > 0


def test_replay_and_verify_of_an_adapter_merge(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    first = safeswap.merge(base, experts["safety"][0], experts["language"][0], out=tmp_path / "a")
    again = safeswap.merge(plan=first / "safeswap-plan.yaml", out=tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert safeswap.verify(first, inputs=True)["tensors"] > 0


def adapter_copy(src, dst, edit_config=None, edit_weights=None):
    shutil.copytree(src, dst)
    if edit_config:
        config = json.loads((dst / "adapter_config.json").read_text())
        edit_config(config)
        (dst / "adapter_config.json").write_text(json.dumps(config))
    if edit_weights:
        tensors = load_file(dst / "adapter_model.safetensors")
        edit_weights(tensors)
        save_file(tensors, dst / "adapter_model.safetensors")
    return dst


def _drop_b(t):
    t.pop(next(k for k in t if "lora_B" in k))


def _integer_a(t):
    key = next(k for k in t if "lora_A" in k)
    t[key] = t[key].to(torch.int32)


@pytest.mark.parametrize("config_edit, weights_edit, expected", [
    (lambda c: c.update(use_dora=True), None, "DoRA (use_dora) is not supported"),
    (lambda c: c.update(modules_to_save=["lm_head"]), None, "modules_to_save"),
    (lambda c: c.update(bias="all"), None, "bias='all'"),
    (lambda c: c.update(peft_type="IA3"), None, "peft_type 'IA3' is not supported"),
    (None, _drop_b, "lora_B missing"),
    (None, _integer_a, "is stored as torch.int32; LoRA factors must be float32, float16 or bfloat16"),
    (None, lambda t: t.__setitem__("base_model.model.model.embed_tokens.lora_embedding_A", torch.zeros(2, 2)),
     "is not a LoRA factor"),
])
def test_unsupported_adapters_are_refused_by_name(monkeypatch, capsys, bf16, tmp_path, config_edit, weights_edit, expected):
    base, experts = bf16
    bad = adapter_copy(experts["language"][0], tmp_path / "bad", config_edit, weights_edit)
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", experts["safety"][0],
                        "--language", bad, "--out", tmp_path / "o")
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o").exists()


def _widen_a(t):
    key = next(k for k in t if "q_proj.lora_A" in k)
    t[key] = torch.zeros(t[key].shape[0], 32)


# Every way adapter_config.json can lie about its factors (the language adapter: q/k/v/o_proj, r 4, alpha 8).
@pytest.mark.parametrize("config_edit, weights_edit, expected", [
    (lambda c: c.update(r=8), None, "model.layers.0.self_attn.k_proj has factors of rank 4, but its adapter_config.json r says 8"),
    (lambda c: c.update(rank_pattern={"q_proj": 2}), None,
     "model.layers.0.self_attn.q_proj has factors of rank 4, but its adapter_config.json rank_pattern['q_proj'] says 2"),
    (lambda c: c.update(r=8, rank_pattern={"layers.1.self_attn.v_proj": 4}), None, "k_proj has factors of rank 4"),
    (lambda c: c.update(r=0), None, "r is 0; it must be a positive integer"),
    (lambda c: c.update(r=4.0), None, "r is 4.0; it must be a positive integer"),
    (lambda c: c.update(lora_alpha="8"), None, "lora_alpha is '8'; it must be a number"),
    (lambda c: c.update(lora_alpha=True), None, "lora_alpha is True; it must be a number"),
    (lambda c: c.update(alpha_pattern={"q_proj": "16"}), None, "alpha_pattern['q_proj'] is '16'; it must be a number"),
    (lambda c: c.update(rank_pattern=[4]), None, "rank_pattern is [4]; it must map module patterns to values"),
    (lambda c: c.update(rank_pattern={"q_proj(": 4}), None, "rank_pattern 'q_proj(' is not a valid regular expression"),
    (lambda c: c.update(use_rslora="yes"), None, "use_rslora is 'yes'"),
    (lambda c: c.update(target_modules=["q_proj", "k_proj", "v_proj"]), None,
     "it holds factors for model.layers.0.self_attn.o_proj, which its target_modules ['q_proj', 'k_proj', 'v_proj'] does not target"),
    (lambda c: c.update(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]), None,
     "targets model.layers.0.mlp.up_proj, but the adapter holds no factors for any up_proj"),
    (lambda c: c.update(target_modules=r".*\.(q|k|v)_proj"), None, "it holds factors for model.layers.0.self_attn.o_proj"),
    (lambda c: c.update(target_modules="all-linear"), None, "'all-linear' targets model.layers.0.mlp.down_proj, but the adapter holds no factors for any down_proj"),
    (lambda c: c.update(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], layers_to_transform=[0, 1]), None,
     "it holds factors for model.layers.2.self_attn.k_proj, which its target_modules"),
    (lambda c: c.update(exclude_modules=["o_proj"]), None, "it holds factors for model.layers.0.self_attn.o_proj"),
    (lambda c: c.pop("target_modules"), None, "target_modules is not set"),
    (None, _widen_a, "model.layers.0.self_attn.q_proj.weight is [64, 64] in the base, but the adapter's B A is [64, 32]"),
])
def test_a_config_that_does_not_describe_its_factors_is_refused(monkeypatch, capsys, bf16, tmp_path, config_edit,
                                                                 weights_edit, expected):
    base, experts = bf16
    bad = adapter_copy(experts["language"][0], tmp_path / "bad", config_edit, weights_edit)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", experts["safety"][0],
                        "--language", bad, "--out", tmp_path / "o")
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o").exists()
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before


@pytest.mark.parametrize("extra", [
    {"rank_pattern": {"q_proj": 2, "model.layers.1.self_attn.v_proj": 6}, "alpha_pattern": {"k_proj": 3, "o_proj": 32}},
    {"rank_pattern": {"layers.2.self_attn.q_proj": 2}, "alpha_pattern": {"self_attn.v_proj": 5}, "use_rslora": True},
    {"use_rslora": True},
])
def test_rank_and_alpha_patterns_merge_exactly(bf16, tmp_path, extra):
    """Per-module ranks and alphas (as mergekit-extract-lora writes them) and rslora: the merge equals
    merging PEFT's own merge_and_unload of the adapter."""
    import safeswap

    base, experts = bf16
    targets, r, alpha = TARGETS["language"]
    adapter, merged = make_adapter(base, tmp_path / "patterned", targets, r, alpha, seed=7, **extra)
    for method in ("adaptive", "linear"):
        ours = safeswap.merge(base, experts["safety"][0], adapter, out=tmp_path / f"a-{method}", method=method)
        full = safeswap.merge(base, experts["safety"][1], merged, out=tmp_path / f"f-{method}", method=method)
        a, f = load_file(ours / "model.safetensors"), load_file(full / "model.safetensors")
        assert max(bf16_ulps(a[k], f[k]) for k in a) <= 1


def test_an_adapter_from_mergekit_extract_lora_reads_as_peft_merges_it(bf16, tmp_path):
    """mergekit-extract-lora writes rank_pattern/alpha_pattern keyed by full module names (k_proj and v_proj, 32 rows,
    get rank 32 under --max-rank 40): safeswap reads that adapter as PEFT's merge_and_unload merges it."""
    import os
    import subprocess

    from mergekit_helpers import MERGEKIT
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from safeswap.read.adapter import AdapterCheckpoint
    from safeswap.read.checkpoint import Checkpoint

    extract = MERGEKIT.parent / "mergekit-extract-lora"
    if not extract.exists():
        pytest.skip(f"mergekit-extract-lora not found at {extract}")
    base, experts = bf16
    out = tmp_path / "extracted"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([str(extract), "--model", str(experts["language"][1]), "--base-model", str(base), "--out-path",
                          str(out), "--max-rank", "40", "--exclude-regex", "embed_tokens|lm_head", "--skip-undecomposable"],
                         capture_output=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["rank_pattern"] == config["alpha_pattern"] == {f"model.layers.{i}.self_attn.{m}": 32
                                                                 for i in range(3) for m in ("k_proj", "v_proj")}
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(out)).merge_and_unload().to(torch.bfloat16).state_dict()
    with Checkpoint(base) as b:
        adapter = AdapterCheckpoint(out, b, "language")
        assert adapter.adapter.factors["model.layers.1.self_attn.k_proj.weight"][2] == 1.0  # alpha 32 over rank 32
        assert max(bf16_ulps(adapter.read(name), merged[name]) for name in b.ordered_names()) <= 1


def test_pattern_and_target_rules_are_peft_s(bf16):
    """read.adapter_config's copies of PEFT's matching rules answer as PEFT's own functions do."""
    from types import SimpleNamespace

    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.other import get_pattern_key

    from safeswap.read.adapter_config import is_targeted, pattern_key

    modules = [f"model.layers.{i}.{m}" for i in (0, 1, 2, 11, 12) for m in
               ("self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj", "mlp.down_proj")] + ["lm_head"]
    patterns = [{"q_proj": 2, "model.layers.1.self_attn.q_proj": 4}, {"model.layers.1.self_attn.q_proj": 4, "q_proj": 2},
                {"layers.1.mlp.*": 3}, {"self_attn.(q|k)_proj": 5}, {"proj": 1}, {}]
    for p in patterns:
        for m in modules:
            assert pattern_key(p, m) == (get_pattern_key(list(p), m) if get_pattern_key(list(p), m) in p else None), (p, m)
    configs = [dict(target_modules=["q_proj", "up_proj"]), dict(target_modules=["self_attn.q_proj", "lm_head"]),
               dict(target_modules=r".*\.layers\.1\d?\..*proj"), dict(target_modules=["q_proj"], layers_to_transform=[1, 12]),
               dict(target_modules=["q_proj"], layers_to_transform=2), dict(target_modules=["mlp.up_proj"], exclude_modules=["model.layers.0.mlp.up_proj"]),
               dict(target_modules=["proj", "q_proj"], exclude_modules=r".*\.1\..*"),
               dict(target_modules=["q_proj"], layers_to_transform=[1], layers_pattern="layers")]
    for c in configs:
        peft_config = SimpleNamespace(**{"target_parameters": None, "modules_to_save": None, "exclude_modules": None,
                                         "layers_to_transform": None, "layers_pattern": None, **c})
        for m in modules:
            assert is_targeted(c, m, set()) == bool(check_target_module_exists(peft_config, m)), (c, m)


def test_adapter_on_another_local_base_is_refused(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    other = tiny.make_model(tmp_path / "other", "llama", layers=3, seed=5)
    with pytest.raises(SafeswapError, match="whose weights differ from --base"):
        safeswap.merge(other, experts["safety"][0], experts["language"][0], out=tmp_path / "o")


def test_adapter_named_for_another_hub_base_is_refused(bf16, tmp_path):
    from safeswap.read.adapter import check_adapter_base

    base, experts = bf16
    bad = adapter_copy(experts["language"][0], tmp_path / "bad",
                       lambda c: c.update(base_model_name_or_path="org/another-model"))
    with pytest.raises(SafeswapError, match="trained on org/another-model, but --base is org/base"):
        check_adapter_base(bad, "org/base", base, "language")
    check_adapter_base(bad, "org/another-model", base, "language")  # the same id: accepted
    check_adapter_base(bad, str(base), base, "language")  # a local base cannot be checked against a hub id


def test_pickled_adapter_is_refused(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    bad = adapter_copy(experts["language"][0], tmp_path / "bad")
    (bad / "adapter_model.safetensors").rename(bad / "adapter_model.bin")
    with pytest.raises(SafeswapError, match="only adapter_model.bin, a pickle"):
        safeswap.merge(base, experts["safety"][0], bad, out=tmp_path / "o")


def test_an_adapter_cannot_be_the_base(bf16, tmp_path):
    import safeswap

    base, experts = bf16
    with pytest.raises(SafeswapError, match="the base must be a full checkpoint"):
        safeswap.merge(experts["safety"][0], experts["safety"][0], experts["language"][0], out=tmp_path / "o")
