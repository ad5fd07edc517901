"""`safeswap` command line: a thin wrapper over the Python API (safeswap.api)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from safeswap.errors import SafeswapError

app = typer.Typer(
    name="safeswap",
    help=(
        "Make a multilingual LLM safe in its language without training: compare an English safety expert and a "
        "language expert fine-tuned from one base, take each layer/module from the expert that specialised more, "
        "blend the rest, and evaluate the result."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BASE = typer.Option(None, "--base", help="Base model both experts were fine-tuned from (folder or hub id).")
SAFETY = typer.Option(None, "--safety", help="English safety expert (folder or hub id).")
LANGUAGE = typer.Option(None, "--language", help="Target-language expert (folder or hub id); the output keeps its config.")
REVISION = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) for hub ids.")
GRANULARITY = typer.Option(None, "--granularity", help="Unit of decision: layer | module | projection. [default: module]")
TAU = typer.Option(None, "--tau", help="Blend band: |d| <= tau blends the experts. [default: 0.001]")
ALPHA = typer.Option(None, "--alpha", help="Safety expert's weight in blends: alpha*S + (1-alpha)*L. [default: 0.5]")
OUTSIDE = typer.Option("blend", "--outside-layers", help="Embeddings, final norm, LM head: blend | language | safety.")
TOKENIZER = typer.Option("language", "--tokenizer-from", help="Tokenizer and chat template from: base | safety | language.")


def _require(**models) -> None:
    missing = [f"--{k}" for k, v in models.items() if v is None]
    if missing:
        raise SafeswapError(f"missing {', '.join(missing)} (or give --plan to replay a plan)")


@app.command()
def analyze(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[str] = LANGUAGE,
    out: Path = typer.Option(..., "--out", help="Folder for statistics.json, the CSVs and specialization.png."),
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    revision: Optional[str] = REVISION,
):
    """Measure how much each expert changed each layer and module of the base.

    Writes per-tensor r = ||W_expert - W_base|| / ||W_base|| and per-unit scores, p and d
    (statistics.json, tensor_stats.csv, unit_scores.csv) and specialization.png.
    """
    from safeswap import api

    _require(base=base, safety=safety, language=language)
    api.analyze(base, safety, language, out, granularity=granularity or "module", tau=0.001 if tau is None else tau,
                revision=revision, show_progress=True)
    typer.echo(f"statistics written to {out}")


@app.command()
def plan(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[str] = LANGUAGE,
    statistics: Optional[Path] = typer.Option(None, "--statistics", help="Plan from a statistics folder/file written by `analyze` instead of reading the models again."),
    out: Path = typer.Option(Path("safeswap-plan.yaml"), "--out", help="Plan file (YAML) to write."),
    method: str = typer.Option("adaptive", "--method", help="Merge method."),
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    alpha: Optional[float] = ALPHA,
    outside_layers: str = OUTSIDE,
    tokenizer_from: str = TOKENIZER,
    revision: Optional[str] = REVISION,
):
    """Decide, for every unit, which expert it comes from; write a reviewable plan file.

    Edit any decision by hand (safety | language | blend) and replay it with `safeswap merge --plan`.
    """
    from safeswap import api

    if statistics is None:
        _require(base=base, safety=safety, language=language)
    result = api.plan(base, safety, language, statistics=statistics, method=method, out=out, granularity=granularity,
                      tau=tau, alpha=alpha, outside_layers=outside_layers, tokenizer_from=tokenizer_from,
                      revision=revision, show_progress=True)
    counts = {k: sum(1 for u in result.units if u["decision"] == k) for k in ("safety", "language", "blend")}
    typer.echo(f"plan written to {out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command()
def merge(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[str] = LANGUAGE,
    out: Path = typer.Option(..., "--out", help="Output folder for the merged model (must not exist or be empty)."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Replay this plan file instead of deciding anew."),
    method: str = typer.Option("adaptive", "--method", help="Merge method."),
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    alpha: Optional[float] = ALPHA,
    outside_layers: str = OUTSIDE,
    tokenizer_from: str = TOKENIZER,
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype: bfloat16 | float16 | float32. [default: the inputs' dtype]"),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest shard, e.g. 5GB, 500MB, 2GiB."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output folder."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the inputs and print the decisions; write nothing."),
    revision: Optional[str] = REVISION,
):
    """Analyse, plan and merge in one step, or replay a plan with --plan.

    Writes sharded safetensors, config, tokenizer, the plan and the figures into --out, atomically.
    """
    from safeswap import api

    if plan_file is None:
        _require(base=base, safety=safety, language=language)
    result = api.merge(base, safety, language, out=out, plan=plan_file, method=method, granularity=granularity,
                       tau=tau, alpha=alpha, outside_layers=outside_layers, tokenizer_from=tokenizer_from, dtype=dtype,
                       shard_size=shard_size, force=force, dry_run=dry_run, revision=revision, show_progress=True)
    if dry_run:
        counts = {k: sum(1 for u in result.units if u["decision"] == k) for k in ("safety", "language", "blend")}
        typer.echo("dry run: inputs are compatible; " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2.

    Usage errors (unknown flag, bad value) are reported by Typer itself, also in one line and exit code 2.
    """
    try:
        app()
    except SafeswapError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
