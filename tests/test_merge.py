"""End-to-end merges of tiny models of every supported family."""

import hashlib
import json

import pytest
import torch
import yaml

import safeswap
import tiny
from safeswap.read.architecture import classify, family_for
from safeswap.read.checkpoint import Checkpoint

FAMILIES = ["llama", "qwen2", "qwen3", "gemma2", "phi3", "mistral", "gemma3"]


@pytest.fixture(scope="module")
def triples(tmp_path_factory):
    cache = {}

    def get(family, layers=4, tie=False):
        key = (family, layers, tie)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"{family}{layers}{'tied' if tie else ''}")
            cache[key] = tiny.make_triple(root, family, layers=layers, tie=tie)
        return cache[key]

    return get


def raw(folder, name):
    with Checkpoint(folder) as ckpt:
        return bytes(ckpt.read_raw(name).numpy())


def tensor(folder, name):
    with Checkpoint(folder) as ckpt:
        return ckpt.read(name).clone()


def expected_source(decisions, family, name, granularity):
    """Which model a tensor should come from, derived independently from the plan's rules."""
    role = classify(family, name)
    if role.layer is None:
        return "blend"
    if granularity == "layer":
        return decisions[f"layer.{role.layer}"]
    if role.module in ("attention", "mlp"):
        if granularity == "module":
            return decisions[f"layer.{role.layer}.{role.module}"]
        if role.scored:
            return decisions[name]
    return "language"


def check_merged(out, base, safety, language, alpha=0.5):
    """Every tensor is either the source's bytes or the float32 blend rounded once."""
    plan = yaml.safe_load((out / "safeswap-plan.yaml").read_text())
    decisions = {u["unit"]: u["decision"] for u in plan["units"]}
    with Checkpoint(out) as merged, Checkpoint(language) as lang:
        family = family_for(lang.architecture)
        assert set(merged.tensors) == set(lang.tensors)
        for name in merged.tensors:
            source = expected_source(decisions, family, name, plan["parameters"]["granularity"])
            if source == "blend":
                s, l_ = tensor(safety, name).float(), tensor(language, name).float()
                expected = (alpha * s + (1 - alpha) * l_).to(torch.bfloat16)
                assert torch.equal(merged.read(name), expected), name
            else:
                folder = {"safety": safety, "language": language}[source]
                assert raw(out, name) == raw(folder, name), name
    return decisions


@pytest.mark.parametrize("family", FAMILIES)
def test_module_merge_every_family(triples, tmp_path, family):
    base, safety, language = triples(family)
    out = safeswap.merge(base, safety, language, out=tmp_path / "merged")
    decisions = check_merged(out, base, safety, language)
    # Language expert changed the outer layers' attention, the safety expert the middle layers' MLPs.
    assert decisions["layer.0.attention"] == "language"
    assert decisions["layer.3.attention"] == "language"
    assert decisions["layer.1.mlp"] == "safety"
    assert decisions["layer.2.mlp"] == "safety"
    assert decisions["layer.1.attention"] == decisions["layer.0.mlp"] == "blend"
    # The merged folder is an ordinary HF checkpoint that loads and generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 4
    assert json.loads((out / "config.json").read_text())["architectures"] == json.loads(
        (language / "config.json").read_text()
    )["architectures"]
    assert (out / "specialization.png").stat().st_size > 0 and (out / "decisions.png").stat().st_size > 0


def test_layer_granularity_carries_norms(triples, tmp_path):
    base, safety, language = triples("gemma2")
    out = safeswap.merge(base, safety, language, out=tmp_path / "m", granularity="layer")
    decisions = check_merged(out, base, safety, language)
    assert decisions == {"layer.0": "language", "layer.1": "safety", "layer.2": "safety", "layer.3": "language"}
    # A safety layer brings its norms, the extra Gemma 2 feed-forward norms included.
    for norm in ("input_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
        name = f"model.layers.1.{norm}.weight"
        assert raw(out, name) == raw(safety, name)


def test_projection_granularity(triples, tmp_path):
    base, safety, language = triples("qwen2")
    out = safeswap.merge(base, safety, language, out=tmp_path / "m", granularity="projection")
    decisions = check_merged(out, base, safety, language)
    assert decisions["model.layers.0.self_attn.q_proj.weight"] == "language"
    # Biases are zero in the base and unchanged by both experts: d = 0, a blend (of equal values).
    assert decisions["model.layers.0.self_attn.q_proj.bias"] == "blend"
    assert decisions["model.layers.2.mlp.down_proj.weight"] == "safety"
    assert decisions["model.layers.1.self_attn.v_proj.weight"] == "blend"
    # norms stay with the language expert in projection mode
    assert raw(out, "model.layers.2.post_attention_layernorm.weight") == raw(language, "model.layers.2.post_attention_layernorm.weight")


def test_qwen3_qk_norms_travel_with_attention(triples, tmp_path):
    base, safety, language = triples("qwen3")
    out = safeswap.merge(base, safety, language, out=tmp_path / "m", alpha=0.25)
    check_merged(out, base, safety, language, alpha=0.25)
    assert raw(out, "model.layers.0.self_attn.q_norm.weight") == raw(language, "model.layers.0.self_attn.q_norm.weight")


def test_replaying_a_plan_gives_byte_identical_shards(triples, tmp_path):
    base, safety, language = triples("llama")
    plan_path = tmp_path / "plan.yaml"
    safeswap.plan(base, safety, language, out=plan_path)
    a = safeswap.merge(plan=plan_path, out=tmp_path / "a")
    b = safeswap.merge(base, safety, language, out=tmp_path / "b", shard_size="5GB")
    digest = lambda p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(a) == digest(b)


def test_hand_edited_plan_is_honoured(triples, tmp_path):
    base, safety, language = triples("llama")
    plan_path = tmp_path / "plan.yaml"
    safeswap.plan(base, safety, language, out=plan_path)
    data = yaml.safe_load(plan_path.read_text())
    for u in data["units"]:
        if u["unit"] == "layer.0.attention":
            assert u["decision"] == "language"
            u["decision"] = "safety"
        if u["unit"] == "layer.1.attention":
            u["alpha"] = 0.9
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = safeswap.merge(plan=plan_path, out=tmp_path / "m")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert raw(out, name) == raw(safety, name)
    name = "model.layers.1.self_attn.k_proj.weight"
    expected = (0.9 * tensor(safety, name).float() + (1 - 0.9) * tensor(language, name).float()).to(torch.bfloat16)
    assert torch.equal(tensor(out, name), expected)


def test_tied_embeddings_stay_tied(triples, tmp_path):
    base, safety, language = triples("llama", tie=True)
    out = safeswap.merge(base, safety, language, out=tmp_path / "m")
    with Checkpoint(out) as ckpt:
        assert "lm_head.weight" not in ckpt.tensors
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    embed = "model.embed_tokens.weight"
    expected = (0.5 * tensor(safety, embed).float() + 0.5 * tensor(language, embed).float()).to(torch.bfloat16)
    assert torch.equal(model.model.embed_tokens.weight.detach(), expected)


@pytest.mark.parametrize("choice", ["language", "safety"])
def test_outside_layers_choice(triples, tmp_path, choice):
    base, safety, language = triples("llama")
    out = safeswap.merge(base, safety, language, out=tmp_path / "m", outside_layers=choice)
    source = {"language": language, "safety": safety}[choice]
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert raw(out, name) == raw(source, name)


def test_sharded_output_loads_and_matches_single_shard(triples, tmp_path):
    base, safety, language = triples("llama")
    one = safeswap.merge(base, safety, language, out=tmp_path / "one")
    many = safeswap.merge(base, safety, language, out=tmp_path / "many", shard_size="60KB")
    index = json.loads((many / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3
    for shard in shards:  # no shard over the limit unless it holds a single larger tensor
        with Checkpoint(many) as ckpt:
            in_shard = [t for t in ckpt.tensors.values() if t.file.name == shard]
            assert sum(t.nbytes for t in in_shard) <= 60_000 or len(in_shard) == 1
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    whole = load_file(one / "model.safetensors")
    with Checkpoint(many) as ckpt:
        for name, value in whole.items():
            assert torch.equal(ckpt.read(name), value)
    AutoModelForCausalLM.from_pretrained(many)


def test_dtype_override_rounds_blends_once(triples, tmp_path):
    base, safety, language = triples("llama")
    out = safeswap.merge(base, safety, language, out=tmp_path / "m", dtype="float32")
    name = "model.layers.1.mlp.up_proj.weight"  # a safety take, converted
    assert torch.equal(tensor(out, name), tensor(safety, name).float())
    name = "model.layers.1.self_attn.q_proj.weight"  # a blend, kept in float32
    expected = 0.5 * tensor(safety, name).float() + 0.5 * tensor(language, name).float()
    assert torch.equal(tensor(out, name), expected)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
