"""General ability in each language (Belebele, MMMLU, MGSM) through lm-evaluation-harness.

The benchmarks themselves are lm-eval's (0.4.13 task names); this module only
decides which task measures which language, runs them with
`lm_eval.simple_evaluate`, and writes one result file per benchmark in the
shared schema (`safeswap.evaluation.results`), with lm-eval's own output
beside it. A benchmark that has no task for a language is written as "n/a",
never left out, so the report shows the gap.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from safeswap.version import __version__
from safeswap.errors import SafeswapError
from safeswap.read.fingerprint import fingerprint_model, model_label
from safeswap.evaluation.results import NOT_AVAILABLE, write_result

BENCHMARKS = ("belebele", "mmmlu", "mgsm")

# MultiJail's ten languages, then Telugu (a low-resource target with MGSM and Belebele).
LANGUAGES = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv", "te")

# Belebele is keyed by FLORES-200 code and covers every language above.
BELEBELE_TASKS = {
    lang: f"belebele_{flores}"
    for lang, flores in {
        "en": "eng_Latn", "zh": "zho_Hans", "it": "ita_Latn", "vi": "vie_Latn", "ar": "arb_Arab",
        "ko": "kor_Hang", "th": "tha_Thai", "bn": "ben_Beng", "sw": "swh_Latn", "jv": "jav_Latn",
        "te": "tel_Telu",
    }.items()
}

# OpenAI's MMMLU is a human translation of MMLU into 14 locales; English is MMLU itself.
# No locale for Vietnamese, Thai, Javanese or Telugu.
MMMLU_TASKS = {
    "en": "mmlu",
    "zh": "mmmlu_zh_cn", "it": "mmmlu_it_it", "ar": "mmmlu_ar_xy",
    "ko": "mmmlu_ko_kr", "bn": "mmmlu_bn_bd", "sw": "mmmlu_sw_ke",
}

# Global-MMLU (machine-translated with post-edits) fills two of MMMLU's gaps when asked;
# it has no Thai or Javanese either.
MMMLU_STAND_INS = {"vi": "global_mmlu_full_vi", "te": "global_mmlu_full_te"}

# MGSM's languages among ours. Korean, Italian, Vietnamese, Arabic and Javanese have none.
# Tasks are named one by one: the tag `mgsm_cot_native` would also pull English-CoT variants.
MGSM_LANGUAGES = ("en", "zh", "th", "bn", "sw", "te")
MGSM_VARIANTS = {"native-cot": "mgsm_native_cot_{}", "direct": "mgsm_direct_{}"}

# The headline metric of each benchmark and the lm-eval filter it is read from.
HEADLINE = {
    "belebele": ("acc", "none"),
    "mmmlu": ("acc", "none"),
    "mgsm": ("exact_match", "flexible-extract"),
}


@dataclass(frozen=True)
class TaskChoice:
    """The lm-eval task that measures one benchmark in one language."""

    task: str
    stand_in: bool = False


def task_for(benchmark: str, language: str, mgsm_variant: str = "native-cot", stand_ins: bool = False) -> TaskChoice | None:
    """The task for a (benchmark, language) pair, or None where the benchmark has no such language."""
    if benchmark == "belebele":
        name = BELEBELE_TASKS.get(language)
        return TaskChoice(name) if name else None
    if benchmark == "mmmlu":
        if language in MMMLU_TASKS:
            return TaskChoice(MMMLU_TASKS[language])
        if stand_ins and language in MMMLU_STAND_INS:
            return TaskChoice(MMMLU_STAND_INS[language], stand_in=True)
        return None
    if benchmark == "mgsm":
        if mgsm_variant not in MGSM_VARIANTS:
            raise SafeswapError(f"unknown MGSM variant {mgsm_variant!r}; choose one of {', '.join(MGSM_VARIANTS)}")
        return TaskChoice(MGSM_VARIANTS[mgsm_variant].format(language)) if language in MGSM_LANGUAGES else None
    raise SafeswapError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")


def task_plan(
    languages: Iterable[str],
    benchmarks: Iterable[str] = BENCHMARKS,
    mgsm_variant: str = "native-cot",
    stand_ins: bool = False,
) -> dict[str, dict[str, TaskChoice | None]]:
    """{benchmark: {language: TaskChoice or None}} for the requested languages, in the given order."""
    languages = list(languages)
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise SafeswapError(f"unsupported language(s) {', '.join(unknown)}; supported: {', '.join(LANGUAGES)}")
    if not languages:
        raise SafeswapError("no languages given")
    return {b: {lang: task_for(b, lang, mgsm_variant, stand_ins) for lang in languages} for b in benchmarks}


def _metric(entry: dict[str, Any], name: str, filt: str) -> float | None:
    value = entry.get(f"{name},{filt}")
    return float(value) if isinstance(value, (int, float)) else None


def _stderr(entry: dict[str, Any], name: str, filt: str) -> float | None:
    # lm-eval writes "N/A" for a stderr it could not compute (e.g. one sample).
    return _metric(entry, f"{name}_stderr", filt)


def language_scores(benchmark: str, choice: TaskChoice, lm_results: dict[str, Any]) -> dict[str, Any]:
    """One language's entry in the result file, read from lm-eval's `results` for its task."""
    entry = lm_results["results"].get(choice.task) or lm_results.get("groups", {}).get(choice.task)
    if entry is None:
        raise SafeswapError(f"lm-eval returned no score for task {choice.task}")
    metric, filt = HEADLINE[benchmark]
    value = _metric(entry, metric, filt)
    if value is None:
        raise SafeswapError(f"lm-eval task {choice.task} reported no {metric} under filter {filt!r}")
    scores: dict[str, Any] = {"task": choice.task, metric: value, f"{metric}_stderr": _stderr(entry, metric, filt)}
    if metric == "acc":
        scores["acc_norm"] = _metric(entry, "acc_norm", "none")
        scores["acc_norm_stderr"] = _stderr(entry, "acc_norm", "none")
    else:
        scores["filter"] = filt
        strict = _metric(entry, "exact_match", "strict-match")
        if strict is not None:
            scores["exact_match_strict"] = strict
    scores["n"] = int(entry.get("sample_len") or _leaf_count(choice.task, lm_results))
    scores["stand_in"] = choice.stand_in
    return scores


def _leaf_count(task: str, lm_results: dict[str, Any]) -> int:
    """Documents scored for a task or, for a group, summed over its subtasks."""
    counts = lm_results.get("n-samples", {})
    if task in counts:
        return int(counts[task]["effective"])
    return sum(_leaf_count(sub, lm_results) for sub in lm_results.get("group_subtasks", {}).get(task, []))


def _samples_sha256(samples: dict[str, list[dict[str, Any]]]) -> str:
    """Identity of the evaluated documents: lm-eval's per-document hashes, in task and doc order."""
    digest = hashlib.sha256()
    for task in sorted(samples):
        for sample in sorted(samples[task], key=lambda s: s["doc_id"]):
            digest.update(f"{task}:{sample['doc_id']}:{sample.get('doc_hash', '')}\n".encode())
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_lm_eval_output(folder: Path, stem: str, lm_results: dict[str, Any], samples: dict | None) -> dict[str, str]:
    """lm-eval's aggregated output (and, if kept, its per-sample log) beside the result file."""
    from lm_eval.utils import handle_non_serializable

    folder.mkdir(parents=True, exist_ok=True)
    files = {"results": f"lm_eval/{stem}.results.json"}
    _write_atomically(
        folder / f"{stem}.results.json",
        lambda f: json.dump(lm_results, f, indent=2, ensure_ascii=False, default=handle_non_serializable),
    )
    if samples is not None:
        files["samples"] = f"lm_eval/{stem}.samples.jsonl.gz"

        def write_samples(raw):
            # mtime=0 keeps the gzip bytes identical across identical runs.
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                for task in sorted(samples):
                    for sample in samples[task]:
                        line = json.dumps({"task": task, **sample}, ensure_ascii=False, default=handle_non_serializable)
                        gz.write((line + "\n").encode("utf-8"))

        _write_atomically(folder / f"{stem}.samples.jsonl.gz", write_samples, binary=True)
    return files


@dataclass
class GeneralConfig:
    """How to run lm-eval; the defaults are the paper's protocol (zero-shot, greedy)."""

    backend: str = "hf"
    num_fewshot: int = 0
    batch_size: str | int = "auto"
    device: str | None = None
    dtype: str = "auto"
    model_args: dict[str, Any] | None = None
    mgsm_variant: str = "native-cot"
    stand_ins: bool = False
    apply_chat_template: bool = False
    max_gen_toks: int | None = None
    limit: int | float | None = None
    tasks_dir: str | None = None
    builtin_tasks: bool = True
    log_samples: bool = True
    seed: int = 1234


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError as e:
        raise SafeswapError(f"lm-eval is not installed ({e}); pip install 'safeswap[eval]'") from e
    return lm_eval


def _task_manager(config: GeneralConfig):
    from lm_eval.tasks import TaskManager

    if config.tasks_dir is not None and not Path(config.tasks_dir).is_dir():
        raise SafeswapError(f"tasks folder {config.tasks_dir} does not exist")
    if config.tasks_dir is None and not config.builtin_tasks:
        raise SafeswapError("--no-builtin-tasks needs --tasks-dir with task YAML files")
    return TaskManager(include_path=config.tasks_dir, include_defaults=config.builtin_tasks)


def _local_or_hub(model: str) -> str:
    """An existing folder as an absolute path (so the report finds its merge plan), a hub id unchanged."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model


def _load_lm(model: str, config: GeneralConfig):
    import lm_eval.api.registry

    if config.backend not in ("hf", "vllm"):
        raise SafeswapError(f"unknown backend {config.backend!r}; choose hf or vllm")
    args = {"pretrained": model, "dtype": config.dtype}
    args.update(config.model_args or {})
    try:
        lm_class = lm_eval.api.registry.get_model(config.backend)
    except (ImportError, ModuleNotFoundError) as e:
        raise SafeswapError(f"backend {config.backend} is not installed ({e}); pip install 'safeswap[vllm]'") from e
    device = config.device
    if device is None and config.backend == "hf":
        import torch

        # lm-eval's hf default is "cuda" even on a machine without one.
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return lm_class.create_from_arg_obj(args, {"batch_size": config.batch_size, "device": device})
    except OSError as e:
        raise SafeswapError(f"cannot load model {model}: {e}") from e


def _run_lm_eval(lm_eval, benchmark: str, **arguments) -> dict[str, Any]:
    """lm_eval.simple_evaluate, with a data set that cannot be fetched or found reported in one line."""
    try:
        return lm_eval.simple_evaluate(**arguments)
    except (ConnectionError, FileNotFoundError) as e:
        # Hub unreachable, gated data set without a token, or a local task's data_files path
        # (relative paths are read from the working directory).
        raise SafeswapError(f"lm-eval could not load the {benchmark} data: {e}") from e


def _decoding(benchmark: str, config: GeneralConfig) -> dict[str, Any]:
    decoding: dict[str, Any] = {
        "backend": config.backend,
        "num_fewshot": config.num_fewshot,
        "apply_chat_template": config.apply_chat_template,
    }
    if benchmark == "mgsm":
        # lm-eval's MGSM tasks decode greedily; 256 is its default generation budget.
        decoding.update(max_new_tokens=config.max_gen_toks or 256, temperature=0.0, variant=config.mgsm_variant)
    else:
        decoding.update(max_new_tokens=None, temperature=None, scoring="loglikelihood of the answer letter")
    return decoding


def evaluate_general(
    model: str,
    languages: Iterable[str],
    out: str | os.PathLike,
    *,
    benchmarks: Iterable[str] = BENCHMARKS,
    label: str | None = None,
    config: GeneralConfig | None = None,
    on_benchmark: Callable[[str, int, int], None] | None = None,
) -> list[Path]:
    """Run each benchmark's tasks for the languages and write one result file per benchmark.

    Results go to `out/<label>__<benchmark>.result.json` (beside the safety
    results), lm-eval's own output to `out/lm_eval/`. `on_benchmark(name, index, total)` is
    called before each benchmark starts (for progress display).
    """
    lm_eval = _require_lm_eval()
    config = config or GeneralConfig()
    benchmarks = list(dict.fromkeys(benchmarks))
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise SafeswapError(f"unknown benchmark(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHMARKS)}")
    plan = task_plan(languages, benchmarks, config.mgsm_variant, config.stand_ins)
    label = label or model_label(model)
    fingerprint = fingerprint_model(model)  # fails fast on a missing folder, before lm-eval indexes its tasks
    model_path = _local_or_hub(model)

    task_manager = _task_manager(config)
    wanted = sorted({c.task for per_lang in plan.values() for c in per_lang.values() if c})
    missing = [t for t in wanted if t not in task_manager.all_tasks]
    if missing:
        where = config.tasks_dir if not config.builtin_tasks else "lm-eval" + (f" or {config.tasks_dir}" if config.tasks_dir else "")
        raise SafeswapError(f"no task named {', '.join(missing)} in {where}")

    lm = _load_lm(model_path, config) if wanted else None
    model_info = {"label": label, "path": model_path, "fingerprint": fingerprint}
    folder = Path(out)
    written = []
    for index, benchmark in enumerate(benchmarks):
        if on_benchmark:
            on_benchmark(benchmark, index, len(benchmarks))
        per_lang = plan[benchmark]
        tasks = [c.task for c in per_lang.values() if c]
        lm_results, samples = None, None
        if tasks:
            lm_results = _run_lm_eval(
                lm_eval,
                benchmark,
                model=lm,
                tasks=tasks,
                num_fewshot=config.num_fewshot,
                limit=config.limit,
                task_manager=task_manager,
                log_samples=True,
                apply_chat_template=config.apply_chat_template,
                gen_kwargs={"max_gen_toks": config.max_gen_toks} if config.max_gen_toks else None,
                random_seed=config.seed,
                numpy_random_seed=config.seed,
                torch_random_seed=config.seed,
                fewshot_random_seed=config.seed,
            )
            samples = lm_results.pop("samples")
        languages_out = {
            lang: language_scores(benchmark, choice, lm_results) if choice else NOT_AVAILABLE
            for lang, choice in per_lang.items()
        }
        files = {}
        if lm_results is not None:
            files = _save_lm_eval_output(
                folder / "lm_eval", f"{label}__{benchmark}", lm_results, samples if config.log_samples else None
            )
        payload = {
            "kind": "general",
            "benchmark": benchmark,
            "model": model_info,
            "judge": None,
            "decoding": _decoding(benchmark, config),
            "data": {
                "source": "lm-eval tasks" + (f" from {config.tasks_dir}" if config.tasks_dir else ""),
                "sha256": _samples_sha256(samples) if samples else None,
                "limit": config.limit,
            },
            "metric": HEADLINE[benchmark][0],
            "languages": languages_out,
            "overall": None,
            "categories": None,
            "extra": {
                "tasks": {lang: (c.task if c else NOT_AVAILABLE) for lang, c in per_lang.items()},
                "stand_ins": sorted(lang for lang, c in per_lang.items() if c and c.stand_in),
                "lm_eval_version": getattr(lm_eval, "__version__", None),
                "lm_eval_output": files,
                "model_args": config.model_args or {},
                "seed": config.seed,
            },
            "safeswap_version": __version__,
        }
        written.append(write_result(folder, payload))
    return written
