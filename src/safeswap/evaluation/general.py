"""General ability in each language (Belebele, MMMLU, MGSM): run lm-evaluation-harness, write result files.

The benchmarks themselves are lm-eval's; general_tasks.py decides which task
measures which language and lm_eval_scores.py reads the scores back. This
module runs the tasks with `lm_eval.simple_evaluate` and writes one result
file per benchmark in the shared schema (`safeswap.evaluation.results`), with
lm-eval's own output beside it. A benchmark that has no task for a language is
written as "n/a", never left out, so the report shows the gap.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from safeswap.errors import SafeswapError
from safeswap.evaluation.general_tasks import BENCHMARKS, task_plan
from safeswap.evaluation.lm_eval_scores import HEADLINE, language_scores, samples_sha256
from safeswap.evaluation.results import NOT_AVAILABLE, ResultPayload, write_result
from safeswap.files import atomic_write
from safeswap.read.fingerprint import fingerprint_model, model_label
from safeswap.version import __version__


def _save_lm_eval_output(folder: Path, stem: str, lm_results: dict[str, Any], samples: dict | None) -> dict[str, str]:
    """lm-eval's aggregated output (and, if kept, its per-sample log) beside the result file."""
    from lm_eval.utils import handle_non_serializable

    files = {"results": f"lm_eval/{stem}.results.json"}
    text = json.dumps(lm_results, indent=2, ensure_ascii=False, default=handle_non_serializable)
    atomic_write(folder / f"{stem}.results.json", text)
    if samples is not None:
        files["samples"] = f"lm_eval/{stem}.samples.jsonl.gz"
        raw = io.BytesIO()
        # mtime=0 keeps the gzip bytes identical across identical runs.
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            for task in sorted(samples):
                for sample in samples[task]:
                    line = json.dumps({"task": task, **sample}, ensure_ascii=False, default=handle_non_serializable)
                    gz.write((line + "\n").encode("utf-8"))
        atomic_write(folder / f"{stem}.samples.jsonl.gz", raw.getvalue())
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
        payload: ResultPayload = {
            "kind": "general",
            "benchmark": benchmark,
            "model": model_info,
            "judge": None,
            "decoding": _decoding(benchmark, config),
            "data": {
                "source": "lm-eval tasks" + (f" from {config.tasks_dir}" if config.tasks_dir else ""),
                "sha256": samples_sha256(samples) if samples else None,
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
