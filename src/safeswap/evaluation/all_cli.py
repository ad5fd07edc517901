"""`safeswap eval all`: safety (MultiJail) and general ability (lm-eval) of one model in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from safeswap.errors import SafeswapError
from safeswap.evaluation.comma_lists import split_commas


def all_command(
    model: str = typer.Option(..., "--model", "-m", help="Model folder or Hugging Face id."),
    languages: str = typer.Option("en,ko", "--languages", "-l", help="Comma-separated languages; safety runs on those MultiJail covers."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder for the result files of both evaluations."),
    label: Optional[str] = typer.Option(None, "--label", help="Short model name in reports (default: folder name)."),
    backend: str = typer.Option("hf", "--backend", help="hf or vllm, for both generation and lm-eval."),
    judge: str = typer.Option("refusal", "--judge", help="Safety judge: refusal (offline), llm, llama-guard or qwen3guard."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model (llm: endpoint model name; guards: folder or hub id)."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint of the llm judge."),
    data: Optional[Path] = typer.Option(None, "--data", help="Local MultiJail CSV/JSONL (default: the hub)."),
    benign: Optional[Path] = typer.Option(None, "--benign", help="Harmless prompts (one column per language) for over-refusal."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Safety: a fixed seeded subset of N prompts."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Safety: longest answer, in tokens."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Safety: prompts per batch (hf)."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", min=1, help="GPUs per model (vllm)."),
    benchmarks: str = typer.Option("belebele,mmmlu,mgsm", "--benchmarks", help="General: subset of belebele, mmmlu, mgsm."),
    num_fewshot: int = typer.Option(0, "--num-fewshot", min=0, help="General: few-shot examples (0: zero-shot)."),
    tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="General: extra lm-eval task folder (e.g. local copies of the tasks)."),
    builtin_tasks: bool = typer.Option(True, "--builtin-tasks/--no-builtin-tasks", help="General: also load lm-eval's own task registry."),
    general_limit: Optional[int] = typer.Option(None, "--general-limit", min=1, help="General: score only the first N documents per task (smoke tests)."),
) -> None:
    """Run `eval safety` and `eval general` for one model, writing both results under --out."""
    from safeswap.evaluation.general import GeneralConfig, evaluate_general
    from safeswap.evaluation.multijail import LANGUAGES
    from safeswap.evaluation.safety import evaluate_safety

    wanted = split_commas(languages)
    if not wanted:
        raise SafeswapError("--languages is empty")
    safety_languages = [lang for lang in wanted if lang in LANGUAGES]
    if safety_languages:
        result = evaluate_safety(
            model, languages=safety_languages, backend=backend, judge=judge, out=out, data=data, benign=benign,
            limit=limit, label=label, max_new_tokens=max_new_tokens, batch_size=batch_size,
            tensor_parallel_size=tensor_parallel_size, judge_model=judge_model, judge_base_url=judge_base_url,
            notify=lambda message: typer.secho(f"warning: {message}", fg="yellow", err=True),
        )
        typer.echo(f"safety: {result['metric']} written for {', '.join(safety_languages)}")
    else:
        typer.echo("safety: none of the languages is in MultiJail; skipped")
    model_args = {"tensor_parallel_size": tensor_parallel_size} if backend == "vllm" else None
    config = GeneralConfig(backend=backend, num_fewshot=num_fewshot, model_args=model_args,
                           tasks_dir=str(tasks_dir) if tasks_dir else None, builtin_tasks=builtin_tasks,
                           limit=general_limit, max_gen_toks=max_new_tokens if max_new_tokens < 256 else None)
    paths = evaluate_general(model, wanted, out, benchmarks=split_commas(benchmarks), label=label, config=config)
    typer.echo(f"general: {len(paths)} result files written under {out}")
