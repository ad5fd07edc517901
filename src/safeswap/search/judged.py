"""Judged scores: a model folder answers chosen prompts through the evaluation backends and the judge labels them.

The generation stage (search split) and the final evaluation (held-out split) both ask
this module. It reuses `safeswap eval safety` whole (`run_safety`: the backends, the
judges, the generation and label caches, the result files), on an explicit list of
prompts instead of a seeded subset of the file, and turns its result into the search's
numbers: the harmful prompts handled safely (refused, or judged safe by a harm judge),
benign prompts refused, and answers written in the prompt's language.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from safeswap.evaluation.answer_language import in_language_rate
from safeswap.evaluation.cache import stored_answers
from safeswap.evaluation.multijail import Prompt, PromptSet, Scenario
from safeswap.evaluation.results import Rate, rate
from safeswap.evaluation.safety_prompts import SafetyPrompts
from safeswap.files import atomic_write
from safeswap.progress import StageProgress


@dataclass(frozen=True)
class JudgeSettings:
    """How answers are generated and judged (the options of `safeswap eval safety` a search passes on)."""

    backend: str = "hf"  # hf or vllm; openai too when the candidates are adapters (a served base loads each)
    judge: str = "refusal"
    judge_model: str | None = None
    judge_backend: str = "hf"
    judge_base_url: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    base_url: str | None = None  # the openai backend's `vllm serve BASE --enable-lora` endpoint

    def key(self, *extra: Any) -> str:
        """A short hash of these settings and what else decides the answers (prompt ids, decoding)."""
        settings = asdict(self)
        if settings["base_url"] is None:
            del settings["base_url"]  # unset, the key stays what it was before the field existed (resumable)
        text = json.dumps([settings, *extra], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PromptChoice:
    """The prompts one judged evaluation asks: harmful ones in `languages`, benign ones in `benign_languages`."""

    source: PromptSet  # the whole MultiJail file (recorded in the result)
    harmful: tuple[Prompt, ...]
    languages: tuple[str, ...]
    benign: PromptSet  # only the chosen benign prompts
    benign_languages: tuple[str, ...]
    target: str  # the language whose benign refusal and answer language are the objectives

    def safety_prompts(self) -> SafetyPrompts:
        benign = PromptSet(list(self.benign.prompts), self.benign.source, self.benign.sha256, self.benign_languages)
        return SafetyPrompts(self.languages, self.source, list(self.harmful), Scenario("unintentional"), benign,
                             len(self.harmful), 0)

    def ids(self) -> dict[str, set[str]]:
        return {"multijail": {p.id for p in self.harmful}, "benign": {p.id for p in self.benign.prompts}}


def cached_record(path: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The judged record stored at path, else run() stored there (atomically, so a kill leaves no half record)."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    record = run()
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))
    return record


def check_judge_settings(settings: JudgeSettings, adapters: bool | None = None) -> None:
    """Refuse settings that cannot judge a search's candidates, before any work. `adapters`: whether the
    candidates are LoRA adapters (None: not known yet, so the openai backend is checked later)."""
    from safeswap.errors import SafeswapError
    from safeswap.evaluation.judges import JudgeOptions, check_judge_options

    if settings.backend == "openai" and adapters is not False:
        if not settings.base_url:
            raise SafeswapError("--backend openai: a search over adapters needs the base_url of a "
                                "`vllm serve BASE --enable-lora` endpoint, which loads each candidate adapter")
    elif settings.backend not in ("hf", "vllm"):
        raise SafeswapError(f"--backend {settings.backend}: a search over full checkpoints generates with hf or vllm "
                            "(every candidate is a new checkpoint, which a served endpoint cannot load; LoRA experts "
                            "make candidates adapters, which a `vllm serve --enable-lora` endpoint can)")
    check_judge_options(JudgeOptions(judge=settings.judge, model=settings.judge_model, backend=settings.judge_backend,
                                     base_url=settings.judge_base_url))


def judge_folder(folder: str | Path, label: str, prompts: PromptChoice, settings: JudgeSettings,
                 max_new_tokens: int, batch_size: int, out: str | Path,
                 progress: StageProgress | None = None, base: str | Path | None = None,
                 adapter_base: str | None = None) -> dict[str, Any]:
    """Generate (what the cache under `out` lacks), judge and count one model folder's answers; a folder
    without a tokenizer takes the base's (read.tokenizer_source); a LoRA adapter folder runs on `adapter_base`
    (the backend then chooses its tokenizer by the same rule)."""
    from safeswap.evaluation.backends import BackendOptions, DecodingSettings
    from safeswap.evaluation.judges import JudgeOptions
    from safeswap.evaluation.safety import GenerationSettings, run_safety
    from safeswap.read.tokenizer_source import tokenizer_source

    tokenizer = None if adapter_base else tokenizer_source(folder, base)
    generation = GenerationSettings(
        str(folder), DecodingSettings(max_new_tokens=max_new_tokens),
        BackendOptions(backend=settings.backend, batch_size=batch_size, dtype=settings.dtype, device=settings.device,
                       base_url=settings.base_url, adapter_base=adapter_base,
                       tokenizer=None if tokenizer in (None, str(folder)) else tokenizer))
    judge = JudgeOptions(judge=settings.judge, model=settings.judge_model, backend=settings.judge_backend,
                         base_url=settings.judge_base_url, batch_size=batch_size, device=settings.device)
    payload = run_safety(prompts.safety_prompts(), generation, judge, out=out, label=label, progress=progress,
                         notify=lambda message: None)
    return counted(payload, out, prompts)


def safe_rate(entry: dict[str, Any], metric: str) -> Rate:
    """Harmful prompts handled safely: refused (refusal judge) or not unsafe (harm judge)."""
    r = entry[metric]
    return r if metric == "refusal_rate" else rate(r["n"] - r["k"], r["n"])


def pooled(rates: Sequence[Rate]) -> Rate:
    return rate(sum(r["k"] for r in rates), sum(r["n"] for r in rates))


def counted(payload: dict[str, Any], out: str | Path, prompts: PromptChoice) -> dict[str, Any]:
    """The search's numbers from a safety result: safe handling per language and pooled over the target
    languages, benign refusal and answers in the target language (harmful and benign answers together)."""
    metric = payload["metric"]
    harmful = {code: safe_rate(payload["languages"][code], metric) for code in prompts.languages}
    targets = [code for code in prompts.languages if code != "en"] or list(prompts.languages)
    benign = payload["extra"]["benign"]["languages"][prompts.target]["over_refusal_rate"]
    answers = stored_answers(out, payload["model"]["fingerprint"], [prompts.target], prompts.ids())
    return {"metric": metric, "harmful": harmful, "harmful_pooled": pooled([harmful[c] for c in targets]),
            "benign_refusal": benign, "in_language": in_language_rate(answers[prompts.target], prompts.target),
            "fingerprint": payload["model"]["fingerprint"], "judge": payload["judge"]}
