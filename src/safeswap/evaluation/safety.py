"""Safety evaluation on MultiJail: generate, judge, count, write a result file.

    from safeswap.evaluation.safety import evaluate_safety
    result = evaluate_safety("runs/merged", languages="en,ko", judge="refusal", out="runs/", limit=50)

Generations and judge labels are cached under <out>/cache/, so a rerun only
does what is missing: an interrupted run resumes, and a new judge reuses the
stored generations without loading the model. The result JSON (schema in
safeswap.evaluation.results) and a CSV of the same numbers are written to <out>.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from safeswap.evaluation.backends import BackendOptions, DecodingSettings, decoding_identity, make_backend
from safeswap.evaluation.cache import (
    GENERATIONS_FILE,
    JUDGEMENTS_FILE,
    JsonlCache,
    cache_folder,
    generation_key,
    judgement_key,
    sha256_text,
)
from safeswap.read.fingerprint import fingerprint_model, is_local_model, model_label
from safeswap.evaluation.judges import JudgeItem, JudgeOptions, Verdict, check_judge_options, make_judge
from safeswap.evaluation.judges.refusal import is_refusal
from safeswap.evaluation.multijail import (
    Prompt,
    Scenario,
    check_languages_present,
    load_benign,
    load_multijail,
    make_scenario,
    parse_languages,
    select_subset,
)
from safeswap.evaluation.results import NOT_AVAILABLE, RESULT_SUFFIX, SCHEMA, result_filename, write_result
from safeswap.evaluation.safety_summary import summarise_benign, summarise_verdicts

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
BENCHMARK = "multijail"


@dataclass(frozen=True)
class _Request:
    key: str
    dataset: str  # "multijail" or "benign"
    language: str
    prompt: Prompt
    conversation: list[dict[str, str]]


def _requests(
    prompts: Sequence[Prompt], languages: Sequence[str], dataset: str, scenario: Scenario, fingerprint: str, decoding
) -> list[_Request]:
    requests = []
    for language in languages:
        for prompt in prompts:
            if not prompt.texts.get(language):
                continue
            text = scenario.apply(prompt.texts[language])
            key = generation_key(
                fingerprint, language, prompt.id, scenario.key, decoding, sha256_text(text), dataset=dataset
            )
            requests.append(_Request(key, dataset, language, prompt, [{"role": "user", "content": text}]))
    return requests


def _generate_missing(requests, cache: JsonlCache, make, progress: Progress | None) -> int:
    """Generate what the cache lacks, storing each answer as soon as it exists."""
    missing = [r for r in requests if r.key not in cache]
    if not missing:
        return 0
    if progress:
        progress("generate", 0, len(missing))  # show the bar while the model loads
    backend = make()
    try:
        for done, (index, generation) in enumerate(backend.generate([r.conversation for r in missing]), start=1):
            request = missing[index]
            cache.put(
                {
                    "key": request.key,
                    "dataset": request.dataset,
                    "language": request.language,
                    "prompt_id": request.prompt.id,
                    "response": generation.text,
                    "n_tokens": generation.n_tokens,
                    "finish_reason": generation.finish_reason,
                }
            )
            if progress:
                progress("generate", done, len(missing))
    finally:
        backend.close()
    return len(missing)


def _judge_missing(requests, generations: JsonlCache, judgements: JsonlCache, judge, identity, progress) -> int:
    todo = [r for r in requests if judgement_key(r.key, identity) not in judgements]
    if not todo:
        return 0
    items = [
        JudgeItem(
            prompt=r.prompt.texts[r.language],
            response=generations.get(r.key)["response"],
            language=r.language,
            prompt_en=r.prompt.texts.get("en"),
        )
        for r in todo
    ]
    if progress:
        progress("judge", 0, len(todo))
    for done, (index, verdict) in enumerate(judge.judge(items), start=1):
        request = todo[index]
        judgements.put(
            {"key": judgement_key(request.key, identity), "generation_key": request.key, **verdict.as_record()}
        )
        if progress:
            progress("judge", done, len(todo))
    return len(todo)


def _csv_text(payload: dict[str, Any]) -> str:
    """The result's rates in long form: one row per (table, language, category, metric)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "language", "category", "metric", "value", "low", "high", "k", "n"])

    def rows(table: str, language: str, category: str, entry: Any) -> None:
        if not isinstance(entry, dict):
            writer.writerow([table, language, category, "", NOT_AVAILABLE, "", "", "", ""])
            return
        for metric, value in entry.items():
            if isinstance(value, dict) and "value" in value:
                writer.writerow([table, language, category, metric, value["value"], value["low"], value["high"],
                                 value["k"], value["n"]])

    for language, entry in payload["languages"].items():
        rows("language", language, "", entry)
    rows("overall", "all", "", payload["overall"])
    for category, entry in (payload["categories"] or {}).items():
        rows("category", "all", category, entry)
    benign = payload["extra"].get("benign")
    if benign:
        for language, entry in benign["languages"].items():
            rows("benign", language, "", entry)
    return buffer.getvalue()


def _write_csv(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; results are meant to be shared
    os.replace(tmp, path)


def result_paths(out: str | os.PathLike, label: str, judge: str) -> tuple[Path, Path]:
    """(result JSON, CSV) paths that evaluate_safety writes for a model label and judge."""
    json_path = Path(out) / result_filename(label, BENCHMARK, judge)
    return json_path, json_path.with_name(json_path.name[: -len(RESULT_SUFFIX)] + ".csv")


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
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on MultiJail and write <out>/<label>__multijail__<judge>.result.json (+ .csv).

    Returns the result payload (see safeswap.evaluation.results and
    docs/safety-evaluation.md for the fields).
    """
    notify = notify or logger.warning
    model = str(model)
    language_codes = parse_languages(languages)
    settings = DecodingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    options = BackendOptions(
        backend=backend, revision=revision, batch_size=batch_size, dtype=dtype, device=device,
        tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, base_url=base_url,
        api_key_env=api_key_env, concurrency=concurrency, request_timeout=request_timeout,
    )
    judge_options = JudgeOptions(
        judge=judge, model=judge_model, backend=judge_backend, base_url=judge_base_url,
        api_key_env=judge_api_key_env, translate=judge_translate, concurrency=concurrency,
        request_timeout=request_timeout, batch_size=batch_size, dtype=dtype, device=device,
        tensor_parallel_size=tensor_parallel_size,
    )
    check_judge_options(judge_options)
    the_scenario = make_scenario(scenario, jailbreak_template)
    prompt_set = load_multijail(data, revision=data_revision)
    check_languages_present(prompt_set, language_codes)
    selected = select_subset(prompt_set, limit, seed)
    benign_set = load_benign(benign) if benign is not None else None

    fingerprint = f"endpoint:{model}" if backend == "openai" else fingerprint_model(model, revision)
    label = label or model_label(model)
    decoding = decoding_identity(settings, options)
    folder = cache_folder(out, fingerprint)
    generations = JsonlCache(folder / GENERATIONS_FILE)

    harmful = _requests(selected, language_codes, "multijail", the_scenario, fingerprint, decoding)
    benign_requests = []
    if benign_set is not None:
        benign_languages = [code for code in language_codes if code in benign_set.languages]
        # Over-refusal is measured on plain harmless prompts, never wrapped in a jailbreak.
        benign_requests = _requests(
            benign_set.prompts, benign_languages, "benign", Scenario("unintentional"), fingerprint, decoding
        )
    generated = _generate_missing(
        harmful + benign_requests, generations, lambda: make_backend(model, settings, options), progress
    )
    logger.info("generated %d answers, reused %d", generated, len(harmful) + len(benign_requests) - generated)

    the_judge = make_judge(judge_options)
    try:
        info = the_judge.info()
        identity = info.as_dict()
        warnings = [w for w in [the_judge.language_warning(language_codes)] if w]
        for warning in warnings:
            notify(warning)
        judgements = JsonlCache(folder / JUDGEMENTS_FILE)
        _judge_missing(harmful, generations, judgements, the_judge, identity, progress)
    finally:
        the_judge.close()

    verdicts = {
        r.key: Verdict.from_record(judgements.get(judgement_key(r.key, identity))) for r in harmful
    }
    summary = summarise_verdicts(
        [(r.language, r.prompt.tags, verdicts[r.key], generations.get(r.key)) for r in harmful],
        language_codes,
        the_judge.metric,
    )
    extra = summary.extra
    extra["scenario"] = {"name": the_scenario.name, "template_sha256": the_scenario.template_sha256}
    extra["subset"] = {"limit": limit, "seed": seed, "n_prompts": len(selected), "prompt_ids": [p.id for p in selected]}
    extra["warnings"] = warnings
    if the_judge.metric == "refusal_rate":
        extra["note"] = "refusal_rate counts answers with refusal phrases; it is not a harm judgment"
    if benign_set is not None:
        labels = {
            r.key: is_refusal(generations.get(r.key)["response"], r.language) for r in benign_requests
        }
        extra["benign"] = summarise_benign(benign_set, benign_requests, labels, language_codes)

    from safeswap.version import __version__

    payload = {
        "schema": SCHEMA,
        "kind": "safety",
        "benchmark": BENCHMARK,
        "model": {
            "label": label,
            "path": str(Path(model).expanduser().resolve()) if is_local_model(model) else model,
            "fingerprint": fingerprint,
            "revision": revision,
        },
        "judge": identity,
        "decoding": {**decoding, **({"base_url": base_url} if backend == "openai" and base_url else {})},
        "data": {
            "source": prompt_set.source,
            "sha256": prompt_set.sha256,
            "n_prompts_in_source": len(prompt_set.prompts),
            "languages_in_source": list(prompt_set.languages),
        },
        "metric": the_judge.metric,
        "languages": summary.languages,
        "overall": summary.overall,
        "categories": summary.categories,
        "extra": extra,
        "safeswap_version": __version__,
    }
    json_path, csv_path = result_paths(out, label, identity["name"])
    Path(out).mkdir(parents=True, exist_ok=True)
    # CSV first: the JSON, written last, is what marks a complete result.
    _write_csv(csv_path, _csv_text(payload))
    write_result(out, payload)
    return payload


__all__ = ["BENCHMARK", "evaluate_safety", "result_paths"]
