"""Generation backends: hf (transformers), vllm (offline engine), openai (any compatible endpoint).

Heavy libraries are imported inside make_backend, only for the backend chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import Backend, Conversation, DecodingSettings, Generation

BACKENDS = ("hf", "vllm", "openai")

__all__ = ["BACKENDS", "Backend", "BackendOptions", "Conversation", "DecodingSettings", "Generation", "decoding_identity", "make_backend"]


@dataclass(frozen=True)
class BackendOptions:
    """How to run a model, whichever backend: the options of `safeswap eval safety`."""

    backend: str = "hf"
    revision: str | None = None
    batch_size: int = 16
    dtype: str = "auto"
    device: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    request_timeout: float = 120.0


def decoding_identity(settings: DecodingSettings, options: BackendOptions) -> dict:
    """What backend.decoding() will return, known before any model is loaded.

    The generation cache is checked with it first, so a fully cached run
    (e.g. swapping judges) never loads the model.
    """
    if options.backend == "hf":
        from safeswap.evaluation.backends.hf import choose_device, choose_dtype

        dtype = choose_dtype(options.dtype, choose_device(options.device))
        return {"backend": "hf", **settings.as_dict(), "dtype": str(dtype).replace("torch.", "")}
    if options.backend == "vllm":
        return {"backend": "vllm", **settings.as_dict(), "dtype": options.dtype}
    if options.backend == "openai":
        return {"backend": "openai", **settings.as_dict()}
    raise SafeswapError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")


def make_backend(model: str, settings: DecodingSettings, options: BackendOptions) -> Backend:
    """Load `model` with the chosen backend."""
    if options.backend == "hf":
        from safeswap.evaluation.backends.hf import HFBackend

        return HFBackend(
            model,
            settings,
            revision=options.revision,
            batch_size=options.batch_size,
            dtype=options.dtype,
            device=options.device,
        )
    if options.backend == "vllm":
        from safeswap.evaluation.backends.vllm import VLLMBackend

        return VLLMBackend(
            model,
            settings,
            revision=options.revision,
            tensor_parallel_size=options.tensor_parallel_size,
            dtype=options.dtype,
            max_model_len=options.max_model_len,
        )
    if options.backend == "openai":
        from safeswap.evaluation.backends.openai_compat import DEFAULT_BASE_URL, OpenAIBackend, OpenAIChatClient

        client = OpenAIChatClient(
            options.base_url or DEFAULT_BASE_URL,
            model,
            api_key_env=options.api_key_env,
            concurrency=options.concurrency,
            timeout=options.request_timeout,
        )
        return OpenAIBackend(client, settings)
    raise SafeswapError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")
