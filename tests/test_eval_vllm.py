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
