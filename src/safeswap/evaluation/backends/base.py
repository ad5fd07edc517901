"""What every generation backend shares: decoding settings, run options, one generation, the interface."""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from safeswap.errors import SafeswapError

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class DecodingSettings:
    """Decoding that changes what a model says; part of every cache key.

    temperature 0 means greedy decoding on every backend.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise SafeswapError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise SafeswapError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SafeswapError(f"--top-p must lie in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    # Where the tokenizer is loaded from when not the model's own folder (read.tokenizer_source: an expert
    # saved without tokenizer files takes its base's); None: the model's.
    tokenizer: str | None = None
    # The base a LoRA adapter folder given as the model runs on; None reads its adapter_config.json's
    # base_model_name_or_path. (A search passes its --base: experts' configs may name another copy.)
    adapter_base: str | None = None


@dataclass(frozen=True)
class Generation:
    """One model answer. finish_reason is "stop" (ended by itself) or "length" (hit max_new_tokens)."""

    text: str
    n_tokens: int | None = None
    finish_reason: str | None = None


class Backend(Protocol):
    """Generates answers for chat conversations.

    generate() yields (index into conversations, Generation) as answers become
    ready, in any order, so callers can store each one at once and resume.
    """

    name: str
    settings: DecodingSettings

    @classmethod
    def from_options(cls, model: str, settings: DecodingSettings, options: BackendOptions) -> "Backend":
        """Load `model` with this backend, as `options` say."""
        ...

    @classmethod
    def decoding_identity(cls, settings: DecodingSettings, options: BackendOptions) -> dict[str, Any]:
        """What decoding() will return, known before any model is loaded (so a cached run loads none)."""
        ...

    def decoding(self) -> dict[str, Any]:
        """Everything about decoding that belongs in cache keys and results."""
        ...

    def generate(
        self, conversations: Sequence[Conversation], *, add_generation_prompt: bool = True
    ) -> Iterator[tuple[int, Generation]]: ...

    def close(self) -> None:
        """Free the model (GPU memory) before another model, e.g. a judge, is loaded."""
        ...


@dataclass(frozen=True)
class AdapterModel:
    """A LoRA adapter folder run on its base: every backend loads (or is served) the base and attaches the adapter."""

    base: str
    folder: str
    max_rank: int  # the largest rank of any module (rank_pattern included): what vLLM's max_lora_rank must cover


def adapter_model(model: str, options: BackendOptions) -> AdapterModel | None:
    """The adapter and its base when `model` is a local PEFT LoRA folder, else None (a full model)."""
    from safeswap.read.adapter import ADAPTER_CONFIG, is_adapter_folder

    path = Path(model).expanduser()
    if not (path.is_dir() and is_adapter_folder(path)):
        return None
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        ranks = [int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SafeswapError(f"{path / ADAPTER_CONFIG} is unreadable ({exc.__class__.__name__})") from None
    base = options.adapter_base or config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise SafeswapError(f"{model} is a LoRA adapter whose adapter_config.json names no base_model_name_or_path; "
                            "the base it runs on is unknown")
    return AdapterModel(str(base), str(path.resolve()), max(ranks))
