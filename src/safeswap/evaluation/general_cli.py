"""`safeswap eval general`: `safeswap.evaluation.general.evaluate_general` as a command, its scores printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from safeswap.errors import SafeswapError
from safeswap.evaluation.comma_lists import split_commas


def _parse_model_args(text: str | None) -> dict:
    if not text:
        return {}
    pairs = split_commas(text)
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise SafeswapError(f"--model-args wants key=value pairs separated by commas, got {', '.join(bad)}")
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def general_command(
    model: str = typer.Option(..., "--model", "-m", help="Model folder or Hugging Face id."),
    languages: str = typer.Option("ko,sw,te,bn", "--languages", "-l", help="Comma-separated ISO 639-1 codes."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder for the result files (<label>__<benchmark>.result.json, flat) and lm-eval's output (lm_eval/)."),
    benchmarks: str = typer.Option("belebele,mmmlu,mgsm", "--benchmarks", help="Comma-separated subset of belebele, mmmlu, mgsm."),
    label: Optional[str] = typer.Option(None, "--label", help="Short model name in reports (default: folder name)."),
    backend: str = typer.Option("hf", "--backend", help="lm-eval model backend: hf or vllm."),
    num_fewshot: int = typer.Option(0, "--num-fewshot", min=0, help="Few-shot examples per prompt (0: zero-shot)."),
    batch_size: str = typer.Option("auto", "--batch-size", help="Batch size, or 'auto' to find the largest that fits."),
    device: Optional[str] = typer.Option(None, "--device", help="Device for the hf backend (default: cuda if present, else cpu)."),
    dtype: str = typer.Option("auto", "--dtype", help="Weights dtype (auto: as saved)."),
    model_args: Optional[str] = typer.Option(
        None, "--model-args", help="Extra lm-eval model arguments, e.g. 'tensor_parallel_size=4,gpu_memory_utilization=0.85'."
    ),
    mgsm_variant: str = typer.Option("native-cot", "--mgsm-variant", help="MGSM prompts: native-cot or direct."),
    stand_ins: bool = typer.Option(
        False, "--stand-ins/--no-stand-ins", help="Fill MMMLU gaps (vi, te) with Global-MMLU; marked as stand-ins."
    ),
    apply_chat_template: bool = typer.Option(
        False, "--apply-chat-template/--no-chat-template", help="Wrap prompts in the model's chat template."
    ),
    max_gen_toks: Optional[int] = typer.Option(None, "--max-gen-toks", min=1, help="Generation budget for MGSM (lm-eval default 256)."),
    limit: Optional[float] = typer.Option(
        None, "--limit", help="Documents per task (a fraction if below 1). For smoke tests only: scores are not comparable."
    ),
    tasks_dir: Optional[Path] = typer.Option(
        None, "--tasks-dir", help="Folder of extra lm-eval task YAMLs; a task there replaces the built-in one of the same name."
    ),
    builtin_tasks: bool = typer.Option(
        True, "--builtin-tasks/--no-builtin-tasks", help="Also index lm-eval's own tasks (off: only --tasks-dir)."
    ),
    log_samples: bool = typer.Option(True, "--log-samples/--no-log-samples", help="Keep lm-eval's per-document log (gzip)."),
    seed: int = typer.Option(1234, "--seed", help="Seed for lm-eval's samplers and torch."),
) -> None:
    """Measure general ability (Belebele, MMMLU, MGSM) per language through lm-eval."""
    from rich.table import Table

    from safeswap.evaluation.general import GeneralConfig, evaluate_general
    from safeswap.progress import RichProgress, console

    if limit is not None and limit <= 0:
        raise SafeswapError("--limit must be positive")
    config = GeneralConfig(
        backend=backend,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        model_args=_parse_model_args(model_args),
        mgsm_variant=mgsm_variant,
        stand_ins=stand_ins,
        apply_chat_template=apply_chat_template,
        max_gen_toks=max_gen_toks,
        limit=int(limit) if limit is not None and limit >= 1 else limit,
        tasks_dir=str(tasks_dir) if tasks_dir else None,
        builtin_tasks=builtin_tasks,
        log_samples=log_samples,
        seed=seed,
    )
    with RichProgress() as progress:  # the bar appears once the inputs are checked and the model loaded
        def on_benchmark(name: str, index: int, total: int) -> None:
            progress("general", index, total, description=f"general ability: {name}")

        paths = evaluate_general(
            model, split_commas(languages), out, benchmarks=split_commas(benchmarks), label=label, config=config,
            on_benchmark=on_benchmark,
        )
        if progress.tasks:
            progress("general", len(paths), len(paths), description="general ability: done")
    _print_summary(console, paths, Table)


def _print_summary(console, paths: list[Path], table_class) -> None:
    import json

    table = table_class(title="General ability")
    table.add_column("benchmark")
    table.add_column("language")
    table.add_column("task")
    table.add_column("score", justify="right")
    table.add_column("n", justify="right")
    for path in paths:
        result = json.loads(path.read_text(encoding="utf-8"))
        metric = result["metric"]
        for lang, scores in result["languages"].items():
            if isinstance(scores, str):
                table.add_row(result["benchmark"], lang, scores, scores, "")
            else:
                table.add_row(result["benchmark"], lang, scores["task"], f"{100 * scores[metric]:.1f}", str(scores["n"]))
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}")
