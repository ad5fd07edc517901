"""The hf backend with a tiny random model: chat template, left-padded batches, greedy decoding."""

from __future__ import annotations

import pytest
from tiny import make_model

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends import BackendOptions, DecodingSettings, decoding_identity
from safeswap.evaluation.backends.hf import HFBackend

PROMPTS = ["How do I bake bread?", "안녕하세요", "x", "Siwezi kusaidia na ombi hilo. Habari yako?"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("hf") / "tiny-llama", family="llama", layers=2, seed=0)


def conversations(prompts=PROMPTS):
    return [[{"role": "user", "content": p}] for p in prompts]


def test_batched_generation_matches_one_by_one(tiny_model):
    settings = DecodingSettings(max_new_tokens=6)
    batched = dict(HFBackend(str(tiny_model), settings, batch_size=3, device="cpu").generate(conversations()))
    single = dict(HFBackend(str(tiny_model), settings, batch_size=1, device="cpu").generate(conversations()))
    assert sorted(batched) == [0, 1, 2, 3]
    # Left padding must not change what a prompt gets: greedy answers agree exactly.
    assert batched == single
    for generation in batched.values():
        assert generation.finish_reason in ("stop", "length")
        assert 0 <= generation.n_tokens <= 6
        assert generation.finish_reason == "stop" or generation.n_tokens == 6


def test_chat_template_and_left_padding(tiny_model):
    backend = HFBackend(str(tiny_model), DecodingSettings(max_new_tokens=2), device="cpu")
    assert backend.render(conversations(["hi"])) == ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]
    assert backend.tokenizer.padding_side == "left"
    assert backend.decoding() == decoding_identity(DecodingSettings(max_new_tokens=2), BackendOptions(device="cpu"))
    assert backend.decoding()["dtype"] == "float32"  # float32 on CPU, whatever the checkpoint holds
    assert backend.generation_config.do_sample is False


def test_model_without_chat_template_is_refused(tmp_path):
    folder = make_model(tmp_path / "no-template", family="llama", layers=1, seed=0)
    for name in ("chat_template.jinja",):
        (folder / name).unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"unused_template"'))
    with pytest.raises(SafeswapError, match="no chat template"):
        HFBackend(str(folder), DecodingSettings(max_new_tokens=2), device="cpu")


def test_bad_options_are_user_errors(tiny_model):
    with pytest.raises(SafeswapError, match="dtype"):
        HFBackend(str(tiny_model), DecodingSettings(), dtype="int3", device="cpu")
    with pytest.raises(SafeswapError, match="max-new-tokens"):
        DecodingSettings(max_new_tokens=0)


def test_a_lora_adapter_folder_answers_as_its_merged_model(tmp_path):
    """An adapter folder as the model: its base loaded with the adapter attached by PEFT answers exactly as the
    adapter merged into full weights; adapter_base overrides the base its config names."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from test_adapters import make_adapter

    base = make_model(tmp_path / "base", family="llama", layers=2, seed=0, dtype=torch.float32)
    adapter, merged = make_adapter(base, tmp_path / "adapter", ["q_proj", "v_proj", "up_proj"], 4, 8, 3,
                                   dtype=torch.float32)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (base / name).is_file():
            (merged / name).write_bytes((base / name).read_bytes())
    settings = DecodingSettings(max_new_tokens=6)
    attached = HFBackend(str(adapter), settings, batch_size=2, device="cpu")
    assert type(attached.model).__name__.startswith("Peft")
    full = dict(HFBackend(str(merged), settings, batch_size=2, device="cpu").generate(conversations()))
    plain = dict(HFBackend(str(base), settings, batch_size=2, device="cpu").generate(conversations()))
    assert dict(attached.generate(conversations())) == full != plain
    moved = tmp_path / "elsewhere"
    base.rename(moved)  # the config's base_model_name_or_path is gone: the search's --base is given instead
    with pytest.raises(SafeswapError, match="cannot load model"):
        HFBackend(str(adapter), settings, device="cpu")
    again = HFBackend.from_options(str(adapter), settings, BackendOptions(device="cpu", adapter_base=str(moved)))
    assert dict(again.generate(conversations())) == full
