"""The vllm backend's requests, checked without vLLM installed."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends import BackendOptions, DecodingSettings, decoding_identity, make_backend
from safeswap.evaluation.backends.vllm import chat_kwargs, engine_kwargs, generation_from_output, sampling_kwargs


def test_sampling_params_are_explicit_and_greedy_by_default():
    kwargs = sampling_kwargs(DecodingSettings(max_new_tokens=512, seed=7))
    # vLLM's own default max_tokens is 16; ours must always be passed.
    assert kwargs == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 512, "seed": 7}
    sampled = sampling_kwargs(DecodingSettings(max_new_tokens=64, temperature=0.7, top_p=0.9))
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9 and sampled["max_tokens"] == 64


def test_engine_arguments():
    kwargs = engine_kwargs("org/model", revision="r1", tensor_parallel_size=4, dtype="bfloat16", seed=3,
                           max_model_len=4096)
    assert kwargs == {"model": "org/model", "revision": "r1", "tensor_parallel_size": 4, "dtype": "bfloat16",
                      "seed": 3, "max_model_len": 4096}
    assert "revision" not in engine_kwargs("m") and "max_model_len" not in engine_kwargs("m")
    with pytest.raises(SafeswapError, match="tensor-parallel-size"):
        engine_kwargs("m", tensor_parallel_size=0)
    assert chat_kwargs(False) == {"use_tqdm": False, "add_generation_prompt": False}


def test_request_output_becomes_a_generation():
    output = SimpleNamespace(outputs=[SimpleNamespace(text=" 죄송합니다. ", token_ids=[5, 6, 7], finish_reason="stop")])
    generation = generation_from_output(output)
    assert (generation.text, generation.n_tokens, generation.finish_reason) == ("죄송합니다.", 3, "stop")


def test_missing_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(SafeswapError, match=r"pip install 'safeswap\[vllm\]'"):
        make_backend("org/model", DecodingSettings(), BackendOptions(backend="vllm"))


def test_decoding_identity_for_each_backend():
    settings = DecodingSettings(max_new_tokens=32)
    assert decoding_identity(settings, BackendOptions(backend="vllm", dtype="bfloat16"))["dtype"] == "bfloat16"
    assert decoding_identity(settings, BackendOptions(backend="openai")) == {
        "backend": "openai", "max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    assert decoding_identity(settings, BackendOptions(backend="hf", device="cpu"))["dtype"] == "float32"
    with pytest.raises(SafeswapError, match="unknown backend"):
        decoding_identity(settings, BackendOptions(backend="tgi"))


def test_decoding_identities_never_import_vllm():
    import subprocess

    code = (
        "import sys\n"
        "from safeswap.evaluation.backends import BackendOptions, DecodingSettings, decoding_identity\n"
        "for name in ('vllm', 'openai'):\n"
        "    decoding_identity(DecodingSettings(), BackendOptions(backend=name))\n"
        "print('vllm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_lora_adapter_runs_on_its_base_with_a_lora_request(tmp_path):
    """vLLM gets the base with LoRA enabled at the smallest allowed max_lora_rank covering every module's rank, and
    each request a LoRARequest(name, id, path) for the adapter folder."""
    import json

    from safeswap.evaluation.backends.base import adapter_model
    from safeswap.evaluation.backends.vllm import lora_engine_kwargs, lora_request_kwargs

    folder = tmp_path / "judge-1234"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": {"model.layers.0.mlp.up_proj": 12},
              "base_model_name_or_path": "org/base"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    adapter = adapter_model(str(folder), BackendOptions(backend="vllm"))
    assert (adapter.base, adapter.max_rank) == ("org/base", 12)
    assert adapter_model(str(folder), BackendOptions(adapter_base="/models/base")).base == "/models/base"
    assert lora_engine_kwargs(adapter) == {"enable_lora": True, "max_loras": 1, "max_lora_rank": 16}
    assert lora_request_kwargs(adapter) == {"lora_name": "judge-1234", "lora_int_id": 1,
                                            "lora_path": str(folder.resolve())}
    config["rank_pattern"] = {"x": 600}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(SafeswapError, match="rank 600; vLLM serves LoRA ranks up to 512"):
        lora_engine_kwargs(adapter_model(str(folder), BackendOptions()))
    assert adapter_model(str(tmp_path), BackendOptions()) is None  # a model folder, not an adapter


def test_the_vllm_backend_builds_its_engine_and_requests_for_an_adapter(tmp_path, monkeypatch):
    """With a stand-in vllm module: LLM(base, enable_lora, ...) and chat(..., lora_request=LoRARequest(...))."""
    import json
    import types

    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def chat(self, messages, sampling_params, **kwargs):
            calls["chat"] = kwargs
            return [SimpleNamespace(outputs=[SimpleNamespace(text="ok", token_ids=[1], finish_reason="stop")])
                    for _ in messages]

    class LoRARequest:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kw: kw
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    folder = tmp_path / "cand"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 24, "lora_alpha": 24,
                                                              "base_model_name_or_path": "org/ignored"}))
    backend = make_backend(str(folder), DecodingSettings(max_new_tokens=4),
                           BackendOptions(backend="vllm", adapter_base="/models/base"))
    assert calls["engine"]["model"] == "/models/base" and calls["engine"]["max_lora_rank"] == 32
    assert dict(backend.generate([[{"role": "user", "content": "hi"}]]))[0].text == "ok"
    assert calls["chat"]["lora_request"].kwargs == {"lora_name": "cand", "lora_int_id": 1,
                                                    "lora_path": str(folder.resolve())}
