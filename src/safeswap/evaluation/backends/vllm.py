"""Generation with vLLM's offline engine (optional extra: pip install 'safeswap[vllm]').

vllm is imported only when this backend is built. The engine and sampling
arguments are built by pure functions so that they can be checked without vLLM.
SamplingParams are always explicit: vLLM's default max_tokens is 16, which
would silently cut every answer short.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import BackendOptions, Conversation, DecodingSettings, Generation

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
        self.llm = vllm.LLM(
            **engine_kwargs(
                model,
                revision=revision,
                tensor_parallel_size=tensor_parallel_size,
                dtype=dtype,
                seed=settings.seed,
                max_model_len=max_model_len,
                tokenizer=tokenizer,
            )
        )
        self.sampling_params = vllm.SamplingParams(**sampling_kwargs(settings))

    @classmethod
    def from_options(cls, model: str, settings: DecodingSettings, options: BackendOptions) -> "VLLMBackend":
        return cls(model, settings, revision=options.revision, tensor_parallel_size=options.tensor_parallel_size,
                   dtype=options.dtype, max_model_len=options.max_model_len, tokenizer=options.tokenizer)

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
            outputs = self.llm.chat(chunk, sampling_params=self.sampling_params, **chat_kwargs(add_generation_prompt))
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
