"""Generation backends by name: hf (transformers), vllm (offline engine), openai (any compatible endpoint).

BACKENDS maps each name to "module:Class", imported only when that backend is
chosen (as lm-eval's model registry does): vLLM, for one, is never imported
unless --backend vllm asks for it. Each class builds itself from the options
(`from_options`) and says what its decoding will be before loading anything
(`decoding_identity`).
"""

from __future__ import annotations

import importlib

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import Backend, BackendOptions, Conversation, DecodingSettings, Generation

BACKENDS = {
    "hf": "safeswap.evaluation.backends.hf:HFBackend",
    "vllm": "safeswap.evaluation.backends.vllm:VLLMBackend",
    "openai": "safeswap.evaluation.backends.openai_compat:OpenAIBackend",
}

__all__ = ["BACKENDS", "Backend", "BackendOptions", "Conversation", "DecodingSettings", "Generation",
           "backend_class", "decoding_identity", "make_backend"]


def backend_class(name: str) -> type[Backend]:
    """The class registered under `name`, imported now."""
    target = BACKENDS.get(name)
    if target is None:
        raise SafeswapError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def decoding_identity(settings: DecodingSettings, options: BackendOptions) -> dict:
    """What backend.decoding() will return, known before any model is loaded.

    The generation cache is checked with it first, so a fully cached run
    (e.g. swapping judges) never loads the model.
    """
    return backend_class(options.backend).decoding_identity(settings, options)


def make_backend(model: str, settings: DecodingSettings, options: BackendOptions) -> Backend:
    """Load `model` with the chosen backend."""
    return backend_class(options.backend).from_options(model, settings, options)
