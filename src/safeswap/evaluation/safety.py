"""Safety evaluation on MultiJail, the entry point: load prompts, generate, judge, summarise, write.

    from safeswap.evaluation.safety import evaluate_safety
    result = evaluate_safety("runs/merged", languages="en,ko", judge="refusal", out="runs/", limit=50)

Each stage is a function of its own module: safety_prompts (what is asked),
safety_generate, safety_judge, safety_summary (the rates) and safety_output
(the files). Generations and judge labels are cached under <out>/cache/, so a
rerun only does what is missing: an interrupted run resumes, and a new judge
reuses the stored generations without loading the model. The result JSON
(schema in safeswap.evaluation.results) and a CSV of the same numbers are
written to <out>.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from safeswap.evaluation.backends import BackendOptions, DecodingSettings, decoding_identity, make_backend
from safeswap.evaluation.cache import GENERATIONS_FILE, JUDGEMENTS_FILE, JsonlCache, cache_folder
from safeswap.evaluation.judges import JudgeOptions, check_judge_options
from safeswap.evaluation.multijail import parse_languages
from safeswap.evaluation.results import SCHEMA, ResultPayload
from safeswap.evaluation.safety_generate import generate_missing
from safeswap.evaluation.safety_judge import Judged, judge_answers
from safeswap.evaluation.safety_output import BENCHMARK, write_safety_result
from safeswap.evaluation.safety_prompts import SafetyPrompts, load_prompts, run_requests
from safeswap.evaluation.safety_summary import Summary, summarise
from safeswap.progress import StageProgress
from safeswap.read.fingerprint import fingerprint_model, is_local_model, model_label
from safeswap.read.tokenizer_source import tokenizer_source
from safeswap.version import __version__

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """The model under test and how its answers are generated."""

    model: str
    decoding: DecodingSettings
    options: BackendOptions


def evaluate_safety(
    model: str | os.PathLike,
    *,
    languages: str | Sequence[str] | None = None,
    backend: str = "hf",
    judge: str = "refusal",
    out: str | os.PathLike = "runs",
    data: str | os.PathLike | None = None,
    data_revision: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    scenario: str = "unintentional",
    jailbreak_template: str | os.PathLike | None = None,
    benign: str | os.PathLike | None = None,
    label: str | None = None,
    revision: str | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    dtype: str = "auto",
    device: str = "auto",
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    request_timeout: float = 120.0,
    judge_model: str | None = None,
    judge_backend: str = "hf",
    judge_base_url: str | None = None,
    judge_api_key_env: str = "OPENAI_API_KEY",
    judge_translate: bool = False,
    progress: StageProgress | None = None,
    notify: Callable[[str], None] | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> ResultPayload:
    """Evaluate `model` on MultiJail and write <out>/<label>__multijail__<judge>.result.json (+ .csv).

    Returns the result payload (see safeswap.evaluation.results and
    docs/safety-evaluation.md for the fields). Every option is checked, and the
    prompts loaded, before any model is.
    """
    language_codes = parse_languages(languages)
    # The merge's rule: the model folder's own tokenizer, else the one of `tokenizer` (the base it was
    # fine-tuned from); a folder with neither is refused here, before any prompt or model is loaded.
    source = str(model) if backend == "openai" else tokenizer_source(model, tokenizer)
    generation = GenerationSettings(
        str(model),
        DecodingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed),
        BackendOptions(
            backend=backend, revision=revision, batch_size=batch_size, dtype=dtype, device=device,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, base_url=base_url,
            api_key_env=api_key_env, concurrency=concurrency, request_timeout=request_timeout,
            tokenizer=None if source == str(model) else source,
        ),
    )
    judge_options = JudgeOptions(
        judge=judge, model=judge_model, backend=judge_backend, base_url=judge_base_url,
        api_key_env=judge_api_key_env, translate=judge_translate, concurrency=concurrency,
        request_timeout=request_timeout, batch_size=batch_size, dtype=dtype, device=device,
        tensor_parallel_size=tensor_parallel_size,
    )
    check_judge_options(judge_options)
    prompts = load_prompts(
        language_codes, data=data, data_revision=data_revision, limit=limit, seed=seed, scenario=scenario,
        jailbreak_template=jailbreak_template, benign=benign,
    )
    return run_safety(prompts, generation, judge_options, out=out, label=label, progress=progress,
                      notify=notify or logger.warning)


def model_fingerprint(model: str, options: BackendOptions) -> str:
    """What keys a model's cached answers: a folder's content, a hub id, a served model's name, or for a LoRA
    adapter folder its content on its base's fingerprint (a served base: its name)."""
    from safeswap.evaluation.backends.base import adapter_model
    from safeswap.read.fingerprint import fingerprint_adapter

    adapter = adapter_model(model, options)
    if adapter is not None:
        base = f"endpoint:{adapter.base}" if options.backend == "openai" else fingerprint_model(adapter.base,
                                                                                              options.revision)
        return fingerprint_adapter(adapter.folder, base)
    return f"endpoint:{model}" if options.backend == "openai" else fingerprint_model(model, options.revision)


def run_safety(
    prompts: SafetyPrompts,
    generation: GenerationSettings,
    judge_options: JudgeOptions,
    *,
    out: str | os.PathLike,
    label: str | None = None,
    progress: StageProgress | None = None,
    notify: Callable[[str], None] = logger.warning,
) -> ResultPayload:
    """The stages in order, on checked settings: generate what is missing, judge, summarise, write."""
    model, options = generation.model, generation.options
    fingerprint = model_fingerprint(model, options)
    decoding = decoding_identity(generation.decoding, options)
    folder = cache_folder(out, fingerprint)
    generations = JsonlCache(folder / GENERATIONS_FILE)

    harmful, benign = run_requests(prompts, fingerprint, decoding)
    generated = generate_missing(
        harmful + benign, generations, lambda: make_backend(model, generation.decoding, options), progress
    )
    logger.info("generated %d answers, reused %d", generated, len(harmful) + len(benign) - generated)
    judged = judge_answers(harmful, generations, judge_options, JsonlCache(folder / JUDGEMENTS_FILE),
                           prompts.languages, notify, progress)
    summary = summarise(prompts, harmful, benign, generations, judged)
    payload = result_payload(prompts, generation, label or model_label(model), fingerprint, decoding, judged, summary)
    write_safety_result(out, payload)
    return payload


def result_payload(
    prompts: SafetyPrompts,
    generation: GenerationSettings,
    label: str,
    fingerprint: str,
    decoding: dict[str, Any],
    judged: Judged,
    summary: Summary,
) -> ResultPayload:
    """The result file's content (schema safeswap.result/1)."""
    model, options = generation.model, generation.options
    endpoint = {"base_url": options.base_url} if options.backend == "openai" and options.base_url else {}
    return {
        "schema": SCHEMA,
        "kind": "safety",
        "benchmark": BENCHMARK,
        "model": {
            "label": label,
            "path": str(Path(model).expanduser().resolve()) if is_local_model(model) else model,
            "fingerprint": fingerprint,
            "revision": options.revision,
        },
        "judge": judged.identity,
        "decoding": {**decoding, **endpoint},
        "data": {
            "source": prompts.source.source,
            "sha256": prompts.source.sha256,
            "n_prompts_in_source": len(prompts.source.prompts),
            "languages_in_source": list(prompts.source.languages),
        },
        "metric": judged.metric,
        "languages": summary.languages,
        "overall": summary.overall,
        "categories": summary.categories,
        "extra": summary.extra,
        "safeswap_version": __version__,
    }


__all__ = ["GenerationSettings", "evaluate_safety", "result_payload", "run_safety"]
