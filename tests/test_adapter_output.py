"""`safeswap merge --output adapter`: a merge of LoRA experts written as one PEFT LoRA adapter.

The reference is the same merge written as full weights (`--output checkpoint`): the adapter, loaded
by PEFT on the base and merged (merge_and_unload), must equal it within one bf16 step, for every
exact method and granularity, with rank_pattern/alpha_pattern and rslora experts among the inputs.
"""

import json
import re
import shutil
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from cli_helpers import run_cli
from safeswap import cli
from safeswap.errors import SafeswapError
from test_adapters import make_adapter

# The experts overlap on q_proj, so a blend there is a rank r_S + r_L module; both carry per-module
# ranks and alphas, and the language expert uses rslora.
SAFETY = dict(targets=["gate_proj", "up_proj", "down_proj", "q_proj"], r=8, alpha=16,
              extra={"rank_pattern": {"down_proj": 4}, "alpha_pattern": {"up_proj": 4}})
LANGUAGE = dict(targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=4, alpha=8,
                extra={"use_rslora": True, "rank_pattern": {"layers.1.self_attn.v_proj": 6},
                       "alpha_pattern": {"o_proj": 2}})


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter-output")
    base = tiny.make_model(root / "base", "llama", layers=3)
    safety, _ = make_adapter(base, root / "safety", SAFETY["targets"], SAFETY["r"], SAFETY["alpha"], 1, **SAFETY["extra"])
    language, language_merged = make_adapter(base, root / "language", LANGUAGE["targets"], LANGUAGE["r"],
                                             LANGUAGE["alpha"], 2, **LANGUAGE["extra"])
    return base, safety, language, language_merged


def peft_merged(base, adapter) -> dict[str, torch.Tensor]:
    """The adapter on the base, as PEFT loads and merges it, in float32; fails on any PEFT warning."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(model, str(adapter))
    from_peft = [str(w.message) for w in caught if "/peft/" in w.filename.replace("\\", "/")]
    assert not from_peft, from_peft
    return {k: v.detach() for k, v in loaded.merge_and_unload().state_dict().items()}


def expert_weights(base, safety, language) -> dict[str, torch.Tensor]:
    """Per tensor, the largest magnitude of the base's and each expert's weights (as safeswap reads them), float32."""
    from safeswap.read.adapter import AdapterCheckpoint
    from safeswap.read.checkpoint import Checkpoint

    with Checkpoint(base) as b:
        models = [b, AdapterCheckpoint(safety, b, "safety"), AdapterCheckpoint(language, b, "language")]
        largest = {}
        for name in b.ordered_names():
            values = [m.read(name).float().abs() for m in models]
            largest[name] = torch.maximum(torch.maximum(values[0], values[1]), values[2])
        return largest


def within_one_bf16_step(ours: dict[str, torch.Tensor], full: dict[str, torch.Tensor], inputs: dict) -> None:
    """|a - b| <= one bf16 ulp of the largest magnitude at that entry, element by element, in float32.

    The checkpoint merge rounds each expert's W_B + s B A to bf16 before blending them and rounds the
    blend again: its error is half an ulp of each input plus half an ulp of the result, so where a blend
    cancels, the step that bounds it is the inputs' (`inputs`: expert_weights), not the small result's.
    PEFT's merge of the adapter, in float32, is exact to float32 rounding.
    """
    for name, reference in full.items():
        a, b = ours[name].float(), reference.float()
        larger = torch.maximum(torch.maximum(a.abs(), b.abs()), inputs[name])
        _, exponent = torch.frexp(larger)
        ulp = torch.ldexp(torch.ones_like(larger), exponent - 8)  # bf16: 8 significant bits
        worst = float(((a - b).abs() / ulp).max())
        assert worst <= 1.0, (name, worst)


CASES = [
    ("adaptive", {"granularity": "layer"}),
    ("adaptive", {"granularity": "module"}),
    ("adaptive", {"granularity": "projection", "tau": 0.05}),
    ("adaptive", {"granularity": "layer", "criterion": "direction", "tau": 0.5}),
    ("adaptive", {"granularity": "module", "criterion": "direction"}),
    ("adaptive", {"granularity": "projection", "criterion": "direction", "tau": 0.5, "alpha": 0.3}),
    ("layer-swap", {"bottom": 0, "top": 1, "transition_bottom": 1}),
    ("linear", {"weights": {"safety": 0.7, "language": 0.3}}),
    # coefficients summing to at most 1 (0.5, 0.3), so the checkpoint merge's rounding stays within one step
    ("task-arithmetic", {"weights": {"safety": 1.0, "language": 0.6}, "lambda": 0.5}),
    ("task-arithmetic", {"weights": {"safety": 0.3, "language": 0.9}, "normalize": True}),
]


@pytest.mark.parametrize("method, parameters", CASES, ids=[f"{m}-{'-'.join(map(str, p.values()))}" for m, p in CASES])
def test_adapter_output_equals_the_checkpoint_merge(experts, tmp_path, method, parameters):
    import safeswap
    from safeswap.read.adapter import AdapterCheckpoint
    from safeswap.read.checkpoint import Checkpoint

    base, safety, language, _ = experts
    adapter = safeswap.merge(base, safety, language, out=tmp_path / "adapter", method=method, parameters=parameters,
                             output="adapter")
    full = safeswap.merge(base, safety, language, out=tmp_path / "full", method=method, parameters=parameters)
    within_one_bf16_step(peft_merged(base, adapter), load_file(full / "model.safetensors"),
                         expert_weights(base, safety, language))
    assert not (adapter / "config.json").exists() and not (adapter / "model.safetensors").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["rank_pattern"] == config["alpha_pattern"] and config["r"] == config["lora_alpha"]
    with Checkpoint(base) as base_ckpt:  # safeswap's own reader: the config describes its factors, scale 1 each
        written = AdapterCheckpoint(adapter, base_ckpt, "language").adapter.factors
        assert written and all(scale == 1.0 for _, _, scale in written.values())
        assert sorted(config["target_modules"]) == sorted(n[: -len(".weight")] for n in written)


def test_blends_are_rank_sums_and_takes_keep_the_source_factors(experts, tmp_path):
    """A blend of q_proj (both experts) is the rank r_S + r_L concatenation; a taken module the source's factors."""
    import safeswap
    from safeswap.read.checkpoint import Checkpoint
    from safeswap.read.adapter import AdapterCheckpoint

    base, safety, language, _ = experts
    out = safeswap.merge(base, safety, language, out=tmp_path / "o", method="layer-swap",
                         parameters={"bottom": 0, "top": 1, "transition_bottom": 1}, output="adapter")
    stored = load_file(out / "adapter_model.safetensors")
    with Checkpoint(base) as b:
        s = AdapterCheckpoint(safety, b, "safety").adapter.factors
        lang = AdapterCheckpoint(language, b, "language").adapter.factors
    key = "base_model.model.model.layers.{}.{}.lora_{}.weight"
    # layer 0 blends 0.5 S + 0.5 L: q_proj has rank 8 + 4
    assert stored[key.format(0, "self_attn.q_proj", "A")].shape[0] == 12
    a_s, b_s, scale_s = s["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(stored[key.format(0, "self_attn.q_proj", "B")][:, :8], b_s * (0.5 * scale_s))
    # layer 1 is the safety expert's: its down_proj (rank_pattern 4), A as is and scale * B
    a_s, b_s, scale_s = s["model.layers.1.mlp.down_proj.weight"]
    assert scale_s == 16 / 4 and stored[key.format(1, "mlp.down_proj", "A")].shape[0] == 4
    assert torch.equal(stored[key.format(1, "mlp.down_proj", "A")], a_s)
    assert torch.equal(stored[key.format(1, "mlp.down_proj", "B")], b_s * scale_s)
    # layer 2 is the language expert's: o_proj's alpha_pattern 2 under rslora, and no MLP module at all
    a_l, b_l, scale_l = lang["model.layers.2.self_attn.o_proj.weight"]
    assert scale_l == pytest.approx(2 / 4 ** 0.5)
    assert torch.equal(stored[key.format(2, "self_attn.o_proj", "B")], b_l * scale_l)
    assert key.format(2, "mlp.up_proj", "A") not in stored


@pytest.mark.parametrize("method, flags", [("ties", []), ("dare-linear", []), ("dare-ties", []), ("slerp", [])])
def test_inexact_methods_are_refused_before_any_work(monkeypatch, capsys, experts, tmp_path, method, flags):
    import safeswap.write.pipeline as pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the inputs were opened")

    monkeypatch.setattr(pipeline, "open_inputs", no_work)
    base, safety, language, _ = experts
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", safety, "--language", language,
                        "--method", method, *flags, "--output", "adapter", "--out", tmp_path / "o")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--output adapter cannot write a {method} merge" in err and "use --output checkpoint" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method, parameters, expected", [
    ("linear", {"weights": {"safety": 0.7, "language": 0.7}, "normalize": False},
     "tensor lm_head.weight is merged as 0.7*safety + 0.7*language, which is not the base plus a weighted sum"),
    ("task-arithmetic", {"weights": {"safety": 0.0, "language": 0.0}}, "leaves every module at the base's weights"),
])
def test_plans_without_a_low_rank_form_are_refused(experts, tmp_path, method, parameters, expected):
    import safeswap

    base, safety, language, _ = experts
    with pytest.raises(SafeswapError, match=re.escape(expected)):
        safeswap.merge(base, safety, language, out=tmp_path / "o", method=method, parameters=parameters,
                       output="adapter")
    assert not (tmp_path / "o").exists()


def test_nonfinite_factors_are_refused(experts, tmp_path):
    """A NaN in an expert's factor (a merge without statistics reads none before writing), or a scaled B past
    float16's range: refused, naming the module, unless --allow-nonfinite."""
    import safeswap
    from test_adapters import adapter_copy

    base, safety, language, _ = experts
    key = "base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight"
    nan = adapter_copy(language, tmp_path / "nan", edit_weights=lambda t: t[key].view(-1)[0:1].fill_(float("nan")))
    with pytest.raises(SafeswapError, match="the factors of model.layers.2.self_attn.q_proj hold NaN or Inf as float32"):
        safeswap.merge(base, safety, nan, out=tmp_path / "o", method="layer-swap", parameters={"bottom": 0, "top": 1},
                       output="adapter")
    huge = adapter_copy(language, tmp_path / "huge", edit_weights=lambda t: t[key].mul_(1e6))
    with pytest.raises(SafeswapError, match="hold NaN or Inf as float16"):
        safeswap.merge(base, safety, huge, out=tmp_path / "o", method="layer-swap", parameters={"bottom": 0, "top": 1},
                       dtype="float16", output="adapter")
    assert not (tmp_path / "o").exists()
    safeswap.merge(base, safety, nan, out=tmp_path / "o", method="layer-swap", parameters={"bottom": 0, "top": 1},
                   output="adapter", allow_nonfinite=True)
    assert (tmp_path / "o" / "adapter_model.safetensors").exists()


def test_a_full_expert_is_refused(monkeypatch, capsys, experts, tmp_path):
    base, safety, _, language_merged = experts
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", safety, "--language",
                        language_merged, "--output", "adapter", "--out", tmp_path / "o")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "needs every expert to be a LoRA adapter over --base, but the language expert" in err
    assert "is a full checkpoint" in err and not (tmp_path / "o").exists()


def test_an_unknown_output_kind_is_refused(monkeypatch, capsys, experts, tmp_path):
    base, safety, language, _ = experts
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", safety, "--language", language,
                        "--output", "lora", "--out", tmp_path / "o")
    assert code == 2 and "--output 'lora': choose checkpoint or adapter" in err


def test_cli_prints_the_vllm_rank_and_the_card_serves_it(monkeypatch, capsys, experts, tmp_path):
    base, safety, language, _ = experts
    out = tmp_path / "ko-safe"
    monkeypatch.setattr(sys, "argv", ["safeswap", "merge", "--base", str(base), "--safety", str(safety), "--language",
                                      str(language), "--method", "adaptive", "--tau", "0.5", "--granularity",
                                      "projection", "--output", "adapter", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    assert exit_code.value.code == 0
    printed = capsys.readouterr().err  # the progress console: stderr
    assert f"adapter written to {out}: 21 modules, ranks 4-12 (r 4), float32 factors; vLLM needs --max-lora-rank 16" in printed
    ranks = {json.loads((out / "adapter_config.json").read_text())["r"]}
    ranks |= set(json.loads((out / "adapter_config.json").read_text())["rank_pattern"].values())
    assert max(ranks) == 12  # 8 + 4 where q_proj is blended
    card = (out / "README.md").read_text()
    assert f"vllm serve {base} --enable-lora --lora-modules ko-safe={out} --max-lora-rank 16" in card
    assert "library_name: peft" in card and "--output adapter" in card


@pytest.mark.parametrize("rank, allowed", [(1, 1), (2, 8), (8, 8), (9, 16), (257, 320), (321, 512), (512, 512), (513, None)])
def test_vllm_max_lora_rank(rank, allowed):
    from safeswap.write.adapter_output import vllm_max_lora_rank

    assert vllm_max_lora_rank(rank) == allowed


def test_replay_gives_byte_identical_adapter_files_and_verify_checks_them(monkeypatch, capsys, experts, tmp_path):
    import safeswap

    base, safety, language, _ = experts
    first = safeswap.merge(base, safety, language, out=tmp_path / "a", method="adaptive",
                           parameters={"granularity": "projection", "tau": 0.05}, output="adapter")
    code, _ = run_cli(monkeypatch, capsys, "merge", "--plan", first / "safeswap-plan.yaml", "--output", "adapter",
                      "--out", tmp_path / "b")
    assert code == 0
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (first / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    counts = safeswap.verify(first, inputs=True)
    assert counts["shards"] == 2 and counts["modules"] == len(json.loads((first / "adapter_config.json").read_text())["target_modules"])
    monkeypatch.setattr(sys, "argv", ["safeswap", "verify", str(first), "--inputs"])
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    assert exit_code.value.code == 0
    assert f"ok: 2 adapter files match the manifest, the factors of its {counts['modules']} modules" in capsys.readouterr().out

    flipped = tmp_path / "flipped"
    shutil.copytree(first, flipped)
    data = bytearray((flipped / "adapter_model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (flipped / "adapter_model.safetensors").write_bytes(bytes(data))
    code, err = run_cli(monkeypatch, capsys, "verify", flipped)
    assert code == 2 and "adapter_model.safetensors does not match its sha256 in the manifest" in err

    # A changed factor whose manifest was rewritten to match: only the check against the inputs sees it.
    tensors = load_file(first / "adapter_model.safetensors")
    key = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[key] = tensors[key] * 1.001
    save_file(tensors, flipped / "adapter_model.safetensors", metadata={"format": "pt"})
    from safeswap.files import sha256_file
    manifest = json.loads((flipped / "safeswap-manifest.json").read_text())
    manifest["outputs"]["adapter_model.safetensors"]["sha256"] = sha256_file(flipped / "adapter_model.safetensors")
    (flipped / "safeswap-manifest.json").write_text(json.dumps(manifest))
    assert safeswap.verify(flipped)["shards"] == 2
    with pytest.raises(SafeswapError, match=f"{key} differs from the factors the plan's inputs give"):
        safeswap.verify(flipped, inputs=True)


@pytest.mark.parametrize("dtype, stored", [(None, torch.float32), ("bfloat16", torch.bfloat16),
                                           ("float16", torch.float16), ("float32", torch.float32)])
def test_factor_dtype(experts, tmp_path, dtype, stored):
    """--dtype sets the factors' dtype (default: the experts', float32 here); PEFT loads each, close to float32's."""
    import safeswap

    base, safety, language, _ = experts
    out = safeswap.merge(base, safety, language, out=tmp_path / "o", method="linear", dtype=dtype, output="adapter")
    assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {stored}
    full = safeswap.merge(base, safety, language, out=tmp_path / "f", method="linear")
    reference = load_file(full / "model.safetensors")
    merged = peft_merged(base, out)
    for name, tensor in reference.items():
        assert torch.allclose(merged[name], tensor.float(), rtol=2 ** -6, atol=1e-3), name


def test_default_factor_dtype_is_the_experts(experts, tmp_path):
    """bf16 experts give bf16 factors; experts of two dtypes give float32."""
    import safeswap
    from test_adapters import adapter_copy

    base, safety, language, _ = experts
    to = lambda dtype: (lambda t: t.update({k: v.to(dtype) for k, v in t.items()}))
    safety_bf16 = adapter_copy(safety, tmp_path / "s-bf16", edit_weights=to(torch.bfloat16))
    language_bf16 = adapter_copy(language, tmp_path / "l-bf16", edit_weights=to(torch.bfloat16))
    language_f16 = adapter_copy(language, tmp_path / "l-f16", edit_weights=to(torch.float16))
    for lang, stored in ((language_bf16, torch.bfloat16), (language_f16, torch.float32)):
        out = safeswap.merge(base, safety_bf16, lang, out=tmp_path / f"o-{stored}", output="adapter")
        assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {stored}


def test_force_replaces_an_adapter_output_and_inputs_are_never_outputs(monkeypatch, capsys, experts, tmp_path):
    import safeswap

    base, safety, language, _ = experts
    out = safeswap.merge(base, safety, language, out=tmp_path / "o", output="adapter")
    first = (out / "adapter_model.safetensors").read_bytes()
    safeswap.merge(base, safety, language, out=out, method="linear", output="adapter", force=True)
    assert (out / "adapter_model.safetensors").read_bytes() != first
    before = {p.name: p.read_bytes() for p in safety.iterdir()}
    code, err = run_cli(monkeypatch, capsys, "merge", "--base", base, "--safety", safety, "--language", language,
                        "--output", "adapter", "--force", "--out", safety)
    assert code == 2 and "an output may never touch an input" in err
    assert {p.name: p.read_bytes() for p in safety.iterdir()} == before


def test_several_languages_give_one_adapter_each(experts, tmp_path):
    import safeswap

    base, safety, language, _ = experts
    out = safeswap.merge(base, safety, {"ko": language, "sw": language}, out=tmp_path / "multi", output="adapter")
    single = safeswap.merge(base, safety, language, out=tmp_path / "single", output="adapter")
    for code in ("ko", "sw"):
        assert (out / code / "adapter_model.safetensors").read_bytes() == (single / "adapter_model.safetensors").read_bytes()
        assert safeswap.verify(out / code, inputs=True)["modules"] > 0


def test_an_adapter_output_records_its_inputs_and_a_replay_refuses_a_changed_one(monkeypatch, capsys, experts,
                                                                                 tmp_path):
    """The plan written beside an adapter names every input file by its sha256, as a checkpoint's plan does; a
    replay over an input changed since then is refused before the output is committed."""
    import yaml

    import safeswap
    from safeswap.read.content_id import identity_files

    base, safety, language, _ = experts
    first = safeswap.merge(base, safety, language, out=tmp_path / "a", method="adaptive",
                           parameters={"granularity": "module"}, output="adapter")
    models = yaml.safe_load((first / "safeswap-plan.yaml").read_text())["models"]
    for role, folder in (("base", base), ("safety", safety), ("language", language)):
        assert set(models[role]["files"]) == {p.name for p in identity_files(folder)}, role
    changed = tmp_path / "language"
    shutil.copytree(language, changed)
    plan = yaml.safe_load((first / "safeswap-plan.yaml").read_text())
    plan["models"]["language"]["path"] = str(changed)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    tensors = load_file(changed / "adapter_model.safetensors")
    key = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[key] = tensors[key] * 1.5
    save_file(tensors, changed / "adapter_model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "b"
    code, err = run_cli(monkeypatch, capsys, "merge", "--plan", tmp_path / "plan.yaml", "--output", "adapter",
                        "--out", out)
    assert code == 2 and "adapter_model.safetensors" in err and "changed" in err, err
    assert not out.exists()
