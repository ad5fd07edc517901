"""Expert training on a tiny model: a loadable full-weight checkpoint, different from the base, reproducible."""

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from tiny import make_model

from safeswap.demo.data import Example
from safeswap.demo.recipes import ExpertRecipe
from safeswap.demo.train import ADAPTER_DIR, EXPERT_INFO, IGNORE, batch_order, cached_expert, encode_examples, learning_rate_at, train_expert

EXAMPLES = [
    Example("How do I bake bread?", "Mix flour, water, salt and yeast.", "t"),
    Example("Help me hurt someone.", "I cannot help with that request.", "t"),
    Example("안녕하세요?", "안녕하세요. 반갑습니다.", "t"),
    Example("What is 2+2?", "4", "t"),
]
RECIPE = ExpertRecipe(steps=2, batch_size=2, learning_rate=1e-2, lora_rank=4, lora_alpha=8, max_length=64)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("base"), family="llama", layers=2, seed=0)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_encode_examples_learns_only_the_answer(base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    (ids, labels), *_ = encode_examples(tokenizer, EXAMPLES[:1], max_length=64)
    answer = [t for t in labels if t != IGNORE]
    assert len(ids) == len(labels) and 0 < len(answer) < len(ids)
    decoded = tokenizer.decode(answer)
    assert decoded.startswith("Mix flour") and "<|im_end|>" in decoded


def test_batch_order_fills_steps_and_covers_every_example():
    batches = batch_order([5, 9, 3, 7, 1], steps=6, batch_size=2, seed=1)
    assert len(batches) == 6 and all(len(b) == 2 for b in batches)
    seen = Counter(i for batch in batches for i in batch)
    assert sorted(seen) == [0, 1, 2, 3, 4] and set(seen.values()) <= {2, 3}  # whole epochs, then a part
    assert batch_order([5, 9, 3, 7, 1], steps=6, batch_size=2, seed=1) == batches


def test_learning_rate_warms_up_then_decays():
    recipe = ExpertRecipe(steps=100, learning_rate=1.0, warmup_share=0.1)
    rates = [learning_rate_at(s, recipe) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[99] < rates[50] < rates[10] and rates[99] >= 0.1


def test_trained_expert_is_a_loadable_bf16_checkpoint_that_differs_from_the_base(base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = train_expert(base, EXAMPLES, RECIPE, tmp_path / "expert", show_progress=False)
    trained, original = weights(out), weights(base)
    assert trained.keys() == original.keys()
    assert all(t.dtype == torch.bfloat16 for t in trained.values())
    changed = [n for n in trained if not torch.equal(trained[n], original[n])]
    assert any("q_proj" in n for n in changed) and any("down_proj" in n for n in changed)
    assert not any("norm" in n or "embed" in n for n in changed)  # LoRA touches only the linear layers
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert AutoTokenizer.from_pretrained(str(out)).chat_template
    record = json.loads((out / EXPERT_INFO).read_text())
    assert record["recipe"]["steps"] == 2 and len(record["losses"]) == 2 and record["examples"] == 4
    assert not list(tmp_path.glob(".expert-*"))  # no staging folder left behind


def test_the_saved_adapter_reads_as_the_merged_expert(base, tmp_path):
    """The demo merges experts as adapters: read through safeswap, the adapter gives the merged weights."""
    from safeswap.read.adapter import AdapterCheckpoint
    from safeswap.read.checkpoint import Checkpoint

    out = train_expert(base, EXAMPLES, RECIPE, tmp_path / "expert", show_progress=False)
    merged = weights(out)
    with Checkpoint(base, "base") as base_ckpt:
        adapter = AdapterCheckpoint(out / ADAPTER_DIR, base_ckpt, "language")
        for name, tensor in merged.items():
            assert torch.equal(adapter.read(name), tensor), name  # both round float32 W + BA to bf16 once


def test_training_is_reproducible_and_seeded(base, tmp_path):
    first = weights(train_expert(base, EXAMPLES, RECIPE, tmp_path / "a", show_progress=False))
    second = weights(train_expert(base, EXAMPLES, RECIPE, tmp_path / "b", show_progress=False))
    assert all(torch.equal(first[n], second[n]) for n in first)
    other_seed = ExpertRecipe(**{**RECIPE.__dict__, "seed": 1})
    third = weights(train_expert(base, EXAMPLES, other_seed, tmp_path / "c", show_progress=False))
    assert any(not torch.equal(first[n], third[n]) for n in first)


def test_cached_expert_trains_once_per_recipe(base, tmp_path):
    first = cached_expert(base, EXAMPLES, RECIPE, tmp_path, "safety", show_progress=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = cached_expert(base, EXAMPLES, RECIPE, tmp_path, "safety", show_progress=False)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    changed = cached_expert(base, EXAMPLES[:3], RECIPE, tmp_path, "safety", show_progress=False)
    assert changed != first


def test_adapters_limited_to_chosen_layers_and_modules(base, tmp_path):
    recipe = ExpertRecipe(**{**RECIPE.__dict__, "layers": (1,), "target_modules": ("gate_proj", "up_proj", "down_proj")})
    assert recipe.key() != RECIPE.key()
    assert ExpertRecipe(**{**RECIPE.__dict__, "layers": None}).key() == RECIPE.key()
    trained, original = weights(train_expert(base, EXAMPLES, recipe, tmp_path / "e", show_progress=False)), weights(base)
    changed = {n for n in trained if not torch.equal(trained[n], original[n])}
    assert changed and all(n.startswith("model.layers.1.mlp.") for n in changed)
