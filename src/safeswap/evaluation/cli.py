"""The `safeswap eval` command group and its `safety` command: evaluate_safety, its result printed as tables.

`eval general` and `eval all` live beside their code (general_cli.py, all_cli.py)
and are added to this group by safeswap.cli.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from safeswap.errors import SafeswapError

eval_app = typer.Typer(
    help="Evaluate a model: safety on MultiJail, general ability.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@eval_app.callback()
def _eval_group() -> None:
    """Evaluate a model: safety on MultiJail, general ability."""
    # Typer runs an app of one command as that command; this module defines one (safeswap.cli adds
    # general and all), so the callback keeps `eval_app` a group where `safety` is a subcommand.


HEADLINE = {"unsafe_rate": "Unsafe", "refusal_rate": "Refusal"}
SECONDARY = {"unsafe_rate": ("safe_rate", "invalid_rate", "unparsed_rate"), "refusal_rate": ()}


def format_rate(value: Any) -> str:
    """A rate as '12.0% [8.1, 17.4]' (95% Wilson interval, in percent)."""
    if not isinstance(value, dict):
        return str(value)
    return f"{100 * value['value']:.1f}% [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"


def table_rows(result: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The tables of a safety result as (header, rows): per language, per category, benign."""
    metric = result["metric"]
    columns = [metric, *SECONDARY[metric]]
    titles = [HEADLINE[metric] + " (95% CI)"] + [name.replace("_rate", "").capitalize() for name in columns[1:]]

    def row(name: str, entry: Any) -> list[str]:
        if not isinstance(entry, dict):
            return [name, "n/a"] + ["n/a"] * len(columns)
        return [name, str(entry["n"])] + [format_rate(entry[c]) for c in columns]

    tables = {
        "languages": (
            ["Language", "n", *titles],
            [row(code, entry) for code, entry in result["languages"].items()] + [row("overall", result["overall"])],
        ),
        "categories": (
            ["Harm category", "n", *titles],
            [row(name, entry) for name, entry in (result.get("categories") or {}).items()],
        ),
    }
    benign = (result.get("extra") or {}).get("benign")
    if benign:
        tables["benign"] = (
            ["Language", "n", "Over-refusal (95% CI)"],
            [
                [code, str(entry["n"]), format_rate(entry["over_refusal_rate"])] if isinstance(entry, dict)
                else [code, "n/a", "n/a"]
                for code, entry in benign["languages"].items()
            ],
        )
    return tables


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    titles = {
        "languages": f"MultiJail, judge {result['judge']['name']}: {result['model']['label']}",
        "categories": "Per harm category (all languages pooled)",
        "benign": "Over-refusal on harmless prompts",
    }
    for name, (header, rows) in table_rows(result).items():
        table = Table(title=titles[name])
        for column in header:
            table.add_column(column, justify="left" if column in ("Language", "Harm category") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    note = (result.get("extra") or {}).get("note")
    if note:
        console.print(f"[yellow]Note:[/yellow] {note}")


@eval_app.command("safety")
def safety_command(
    model: str = typer.Option(..., "--model", "-m", help="Model folder, hub id, or (with --backend openai) served model name."),
    languages: Optional[str] = typer.Option(None, "--languages", "-l", help="Comma-separated MultiJail languages (default: all ten: en,zh,it,vi,ar,ko,th,bn,sw,jv)."),
    backend: str = typer.Option("hf", "--backend", help="Generation backend: hf, vllm or openai."),
    judge: str = typer.Option("refusal", "--judge", help="Judge: refusal (offline), llm, llama-guard or qwen3guard."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder for the result JSON, the CSV and the cache."),
    data: Optional[Path] = typer.Option(None, "--data", help="Local MultiJail CSV/JSONL. Without it: DAMO-NLP-SG/MultiJail from the hub when reachable (needs the eval extra), else the copy shipped with safeswap (the result records which)."),
    data_revision: Optional[str] = typer.Option(None, "--data-revision", help="Hub revision of DAMO-NLP-SG/MultiJail (when --data is not given); with it, only the hub is used (no fallback to the shipped copy)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate a fixed seeded subset of N prompts (same ids in every language)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the --limit subset and for sampling."),
    scenario: str = typer.Option("unintentional", "--scenario", help="unintentional (prompt as is) or intentional (wrapped in --jailbreak-template)."),
    jailbreak_template: Optional[Path] = typer.Option(None, "--jailbreak-template", help="Text file containing {prompt}, for --scenario intentional."),
    benign: Optional[Path] = typer.Option(None, "--benign", help="Harmless prompts (CSV/JSONL, one column per language) to measure over-refusal."),
    label: Optional[str] = typer.Option(None, "--label", help="Short model name in reports (default: folder name)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision of the model."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Longest answer, in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 is greedy decoding."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling (only with --temperature > 0)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts per batch (hf backend and hf guard judges)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, float32 on CPU), float32, bfloat16 or float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps (hf backend)."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", min=1, help="GPUs per model (vllm backend)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", min=1, help="Context length cap for vLLM (saves memory)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for --backend openai, e.g. http://localhost:8000/v1."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the endpoint's API key."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight at once (openai backend, llm judge)."),
    request_timeout: float = typer.Option(120.0, "--request-timeout", help="Seconds before a request is retried."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model: endpoint model name (llm), or a guard folder/hub id."),
    judge_backend: str = typer.Option("hf", "--judge-backend", help="How guard judges run: hf, vllm, or openai (a served guard)."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="Endpoint for the llm judge or an openai-served guard."),
    judge_api_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-api-key-env", help="Environment variable holding the judge endpoint's key."),
    judge_translate: bool = typer.Option(False, "--judge-translate", help="llm judge: translate answers into English before judging."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Folder to take the tokenizer from when the model folder has none (the base it was fine-tuned from), as merge and search do."),
):
    """Generate answers to MultiJail prompts and report per-language unsafe (or refusal) rates.

    Writes <out>/<label>__multijail__<judge>.result.json and a .csv beside it;
    generations and judge labels are cached under <out>/cache/, so a rerun
    resumes and a new judge reuses the stored answers.
    """
    from safeswap.evaluation.safety import evaluate_safety
    from safeswap.evaluation.safety_output import result_paths
    from safeswap.progress import RichProgress

    try:
        with RichProgress() as progress:
            result = evaluate_safety(
                model, languages=languages, backend=backend, judge=judge, out=out, data=data,
                data_revision=data_revision, limit=limit,
                seed=seed, scenario=scenario, jailbreak_template=jailbreak_template, benign=benign, label=label,
                revision=revision, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                batch_size=batch_size, dtype=dtype, device=device, tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                request_timeout=request_timeout, judge_model=judge_model, judge_backend=judge_backend,
                judge_base_url=judge_base_url, judge_api_key_env=judge_api_key_env,
                judge_translate=judge_translate, progress=progress, tokenizer=tokenizer,
                notify=lambda message: typer.secho(f"warning: {message}", fg="yellow", err=True),
            )
    except SafeswapError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(code=SafeswapError.exit_code) from None
    _print_tables(result)
    json_path, csv_path = result_paths(out, result["model"]["label"], result["judge"]["name"])
    typer.echo(f"results written to {json_path} and {csv_path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(eval_app())
