"""Generation with vLLM's offline engine (optional extra: pip install 'safeswap[vllm]').

vllm is imported only when this backend is built. The engine and sampling
arguments are built by pure functions so that they can be checked without vLLM.
SamplingParams are always explicit: vLLM's default max_tokens is 16, which
would silently cut every answer short. A LoRA adapter folder as the model runs on its base
with LoRA enabled, each request carrying a LoRARequest for the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import (AdapterModel, BackendOptions, Conversation, DecodingSettings,
                                               Generation, adapter_model)

# Prompts handed to LLM.chat at once; answers are stored after each chunk so a
# crash loses at most one chunk.
CHUNK_SIZE = 256


def sampling_kwargs(settings: DecodingSettings) -> dict[str, Any]:
    """Arguments for vllm.SamplingParams; temperature 0 is greedy in vLLM."""
    return {
        "n": 1,
        "temperature": float(settings.temperature),
        "top_p": float(settings.top_p) if not settings.greedy else 1.0,
        "max_tokens": int(settings.max_new_tokens),
        "seed": int(settings.seed),
    }


def engine_kwargs(
    model: str,
    *,
    revision: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    seed: int = 0,
    max_model_len: int | None = None,
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """Arguments for vllm.LLM."""
    if tensor_parallel_size < 1:
        raise SafeswapError(f"--tensor-parallel-size must be at least 1, got {tensor_parallel_size}")
    kwargs: dict[str, Any] = {
        "model": str(model),
        "tensor_parallel_size": int(tensor_parallel_size),
        "dtype": dtype,
        "seed": int(seed),
    }
    if revision:
        kwargs["revision"] = revision
    if tokenizer:  # another folder's tokenizer (read.tokenizer_source)
        kwargs["tokenizer"] = str(tokenizer)
    if max_model_len:
        kwargs["max_model_len"] = int(max_model_len)
    return kwargs


# The ranks vLLM's --max-lora-rank accepts; the engine is sized to the smallest that covers the adapter.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_engine_kwargs(adapter: AdapterModel) -> dict[str, Any]:
    """Arguments for vllm.LLM that let it run the adapter: LoRA on, one adapter at a time, a rank that covers it."""
    rank = next((r for r in VLLM_LORA_RANKS if r >= adapter.max_rank), None)
    if rank is None:
        raise SafeswapError(f"{adapter.folder} has rank {adapter.max_rank}; vLLM serves LoRA ranks up to "
                            f"{VLLM_LORA_RANKS[-1]}")
    return {"enable_lora": True, "max_loras": 1, "max_lora_rank": rank}


def lora_request_kwargs(adapter: AdapterModel) -> dict[str, Any]:
    """Arguments for vllm.lora.request.LoRARequest: the adapter's folder under a name and id of its own."""
    return {"lora_name": Path(adapter.folder).name, "lora_int_id": 1, "lora_path": adapter.folder}


def chat_kwargs(add_generation_prompt: bool) -> dict[str, Any]:
    """Keyword arguments for LLM.chat besides the messages and sampling params."""
    return {"use_tqdm": False, "add_generation_prompt": add_generation_prompt}


def generation_from_output(output: Any) -> Generation:
    """A vLLM RequestOutput -> Generation (first completion)."""
    completion = output.outputs[0]
    return Generation(
        text=completion.text.strip(),
        n_tokens=len(completion.token_ids),
        finish_reason=completion.finish_reason,
    )


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        settings: DecodingSettings = DecodingSettings(),
        *,
        revision: str | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int | None = None,
        tokenizer: str | None = None,
        adapter_base: str | None = None,
    ):
        try:
            import vllm
        except ImportError:
            raise SafeswapError("the vllm backend needs vLLM: pip install 'safeswap[vllm]'") from None
        self.settings = settings
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.tokenizer_from = tokenizer
        self._vllm = vllm
        # A LoRA adapter folder: the engine runs its base with LoRA on, and every request names the adapter.
        adapter = adapter_model(str(model), BackendOptions(adapter_base=adapter_base))
        self.llm = vllm.LLM(
            **engine_kwargs(
                adapter.base if adapter else model,
                revision=revision,
                tensor_parallel_size=tensor_parallel_size,
                dtype=dtype,
                seed=settings.seed,
                max_model_len=max_model_len,
                tokenizer=tokenizer,
            ),
            **(lora_engine_kwargs(adapter) if adapter else {}),
        )
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(**lora_request_kwargs(adapter))
        self.sampling_params = vllm.SamplingParams(**sampling_kwargs(settings))

    @classmethod
    def from_options(cls, model: str, settings: DecodingSettings, options: BackendOptions) -> "VLLMBackend":
        return cls(model, settings, revision=options.revision, tensor_parallel_size=options.tensor_parallel_size,
                   dtype=options.dtype, max_model_len=options.max_model_len, tokenizer=options.tokenizer,
                   adapter_base=options.adapter_base)

    @classmethod
    def decoding_identity(cls, settings: DecodingSettings, options: BackendOptions) -> dict[str, Any]:
        return {"backend": cls.name, **settings.as_dict(), "dtype": options.dtype,
                **({"tokenizer": options.tokenizer} if options.tokenizer else {})}

    def decoding(self) -> dict[str, Any]:
        return {"backend": self.name, **self.settings.as_dict(), "dtype": self.dtype,
                **({"tokenizer": self.tokenizer_from} if self.tokenizer_from else {})}

    def generate(
        self, conversations: Sequence[Conversation], *, add_generation_prompt: bool = True
    ) -> Iterator[tuple[int, Generation]]:
        for start in range(0, len(conversations), CHUNK_SIZE):
            chunk = list(conversations[start : start + CHUNK_SIZE])
            lora = {"lora_request": self.lora} if self.lora is not None else {}
            outputs = self.llm.chat(chunk, sampling_params=self.sampling_params, **chat_kwargs(add_generation_prompt),
                                    **lora)
            for offset, output in enumerate(outputs):
                yield start + offset, generation_from_output(output)

    def close(self) -> None:
        self.llm = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
