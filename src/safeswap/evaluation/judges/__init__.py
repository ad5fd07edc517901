"""Judges: refusal (offline default), llm (OpenAI-compatible endpoint), llama-guard, qwen3guard."""

from __future__ import annotations

from dataclasses import dataclass

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends import BackendOptions
from safeswap.evaluation.judges.base import (
    INVALID,
    NO_REFUSAL,
    REFUSAL,
    SAFE,
    UNPARSED,
    UNSAFE,
    Judge,
    JudgeInfo,
    JudgeItem,
    Verdict,
)

JUDGES = ("refusal", "llm", "llama-guard", "qwen3guard")

__all__ = [
    "INVALID", "JUDGES", "NO_REFUSAL", "REFUSAL", "SAFE", "UNPARSED", "UNSAFE",
    "Judge", "JudgeInfo", "JudgeItem", "JudgeOptions", "Verdict", "check_judge_options", "make_judge",
]


@dataclass(frozen=True)
class JudgeOptions:
    """The --judge* options of `safeswap eval safety`."""

    judge: str = "refusal"
    model: str | None = None
    backend: str = "hf"  # how a guard model runs: hf, vllm, or openai (a served guard)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    translate: bool = False
    concurrency: int = 8
    request_timeout: float = 120.0
    batch_size: int = 16
    dtype: str = "auto"
    device: str = "auto"
    tensor_parallel_size: int = 1


def check_judge_options(options: JudgeOptions) -> None:
    """Fail on bad judge options before hours of generation, not after."""
    if options.judge not in JUDGES:
        raise SafeswapError(f"unknown judge {options.judge!r}; choose from {', '.join(JUDGES)}")
    if options.translate and options.judge != "llm":
        raise SafeswapError("--judge-translate works with --judge llm only")
    if options.judge == "llm" and not options.model:
        raise SafeswapError("--judge llm needs --judge-model, the model name the endpoint serves")
    if options.judge in ("llama-guard", "qwen3guard") and options.backend not in ("hf", "vllm", "openai"):
        raise SafeswapError(f"unknown --judge-backend {options.backend!r}; choose from hf, vllm, openai")


def make_judge(options: JudgeOptions) -> Judge:
    check_judge_options(options)
    if options.judge == "refusal":
        from safeswap.evaluation.judges.refusal import RefusalJudge

        return RefusalJudge()
    if options.judge == "llm":
        from safeswap.evaluation.backends.openai_compat import DEFAULT_BASE_URL, OpenAIChatClient
        from safeswap.evaluation.judges.llm import LLMJudge

        client = OpenAIChatClient(
            options.base_url or DEFAULT_BASE_URL,
            options.model,
            api_key_env=options.api_key_env,
            concurrency=options.concurrency,
            timeout=options.request_timeout,
        )
        return LLMJudge(client, translate=options.translate)
    backend_options = BackendOptions(
        backend=options.backend,
        batch_size=options.batch_size,
        dtype=options.dtype,
        device=options.device,
        tensor_parallel_size=options.tensor_parallel_size,
        base_url=options.base_url,
        api_key_env=options.api_key_env,
        concurrency=options.concurrency,
        request_timeout=options.request_timeout,
    )
    if options.judge == "llama-guard":
        from safeswap.evaluation.judges.llama_guard import make_llama_guard_judge

        return make_llama_guard_judge(options.model, backend_options)
    from safeswap.evaluation.judges.qwen3guard import make_qwen3guard_judge

    return make_qwen3guard_judge(options.model, backend_options)
