"""`safeswap` command line: options, one-line errors and progress over the Python API (safeswap.api)."""

from __future__ import annotations

import gc
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from safeswap.decide.methods import METHODS
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
TAU = typer.Option(None, "--tau", help="Blend band: |d| <= tau (with --criterion direction: |cos - threshold| <= tau) blends the experts. [default: 0.001]")
CRITERION = typer.Option(None, "--criterion", help="adaptive: norm (each unit from the expert that changed it more) | direction (from the safety expert where the language expert's update points against the safety expert's). [default: norm]")
THRESHOLD = typer.Option(None, "--threshold", help="adaptive --criterion direction: cos(L-B, S-B) below threshold - tau takes the safety expert's unit, above threshold + tau keeps the language expert's. [default: 0]")
ALPHA = typer.Option(None, "--alpha", help="Safety expert's weight in blends: alpha*S + (1-alpha)*L. [default: 0.5]")
OUTSIDE = typer.Option("blend", "--outside-layers", help="Embeddings, final norm, LM head: blend | language | safety.")
METHOD = typer.Option("adaptive", "--method", help="Merge method: " + " | ".join(METHODS) + ".")
# Method parameters, shared by `plan` and `merge`.
BOTTOM = typer.Option(None, "--bottom", help="layer-swap: bottom layers taken from the language expert; 'B/T' (e.g. 10/6) also sets --top.")
TOP = typer.Option(None, "--top", help="layer-swap: top layers taken from the language expert.")
TRANSITION_BOTTOM = typer.Option(None, "--transition-bottom", help="layer-swap: blended layers between the bottom and the middle. [default: 0]")
TRANSITION_TOP = typer.Option(None, "--transition-top", help="layer-swap: blended layers between the middle and the top. [default: 0]")
WEIGHTS = typer.Option(None, "--weights", help="linear, task-arithmetic, ties, dare-*: expert weights 'safety,language', e.g. 0.7,0.3.")
NORMALIZE = typer.Option(None, "--normalize/--no-normalize", help="Divide by the sum of the weights. [default: on for linear and ties, off otherwise]")
LAMBDA = typer.Option(None, "--lambda", help="task-arithmetic, ties, dare-*: scale of the merged task vector. [default: 1]")
DENSITY = typer.Option(None, "--density", help="ties: fraction of each task vector kept [default: 0.2]; dare-*: keep probability [default: 0.5].")
SEED = typer.Option(None, "--seed", help="dare-*: seed of the drop masks; the same seed gives the same bytes. [default: 0]")
SLERP_T = typer.Option(None, "--t", help="slerp: the safety expert's share, from 0 (the language expert) to 1 (the safety expert). [default: 0.5]")
NONFINITE = typer.Option(False, "--allow-nonfinite", help="Merge even if an input tensor holds NaN or Inf (refused by default).")
TOKENIZER = typer.Option("language", "--tokenizer-from", help="Tokenizer and chat template from: base | safety | language.")


def parse_language_args(values: list[str]) -> dict[str, str]:
    """['ko=PATH', 'sw=PATH'] -> {'ko': 'PATH', 'sw': 'PATH'}; codes name the output subfolders."""
    languages: dict[str, str] = {}
    for value in values:
        code, sep, path = value.partition("=")
        if not sep or not code or not path:
            raise SafeswapError(f"--language {value!r}: with several languages write CODE=PATH, e.g. ko=./ko-expert")
        if code in languages:
            raise SafeswapError(f"--language {code} is given twice")
        languages[code] = path
    return languages


# The method flags that `plan` and `merge` share, by parameter name (Typer reads options from each signature).
METHOD_FLAGS = ("criterion", "threshold", "bottom", "top", "transition_bottom", "transition_top", "weights", "normalize",
                "lambda_", "density", "seed", "t")


def _method_parameters(flags: dict) -> dict:
    """The method parameters the command line set (unset flags are left to the method's defaults)."""
    from safeswap.decide.parameters import flag_parameters

    return flag_parameters(**{name: flags[name] for name in METHOD_FLAGS})


def _require(**models) -> None:
    missing = [f"--{k}" for k, v in models.items() if v is None]
    if missing:
        raise SafeswapError(f"missing {', '.join(missing)} (or give --plan to replay a plan)")


@app.command()
def analyze(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[str] = LANGUAGE,
    out: Path = typer.Option(..., "--out", help="Folder for statistics.json, the CSVs, specialization.png, direction.png and decisions.png."),
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    criterion: Optional[str] = CRITERION,
    threshold: Optional[float] = THRESHOLD,
    revision: Optional[str] = REVISION,
    allow_nonfinite: bool = NONFINITE,
):
    """Measure how much each expert changed each layer and module of the base.

    Writes per-tensor r = ||W_expert - W_base|| / ||W_base|| and <S - B, L - B>, per-unit scores, p, d and
    cos(L - B, S - B) (statistics.json, tensor_stats.csv, unit_scores.csv), specialization.png, direction.png
    and decisions.png.
    """
    import safeswap.api as api

    _require(base=base, safety=safety, language=language)
    api.analyze(base, safety, language, out, granularity=granularity or "module", tau=0.001 if tau is None else tau,
                criterion=criterion, threshold=threshold, revision=revision, show_progress=True,
                allow_nonfinite=allow_nonfinite)
    typer.echo(f"statistics written to {out}")


@app.command()
def plan(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[str] = LANGUAGE,
    statistics: Optional[Path] = typer.Option(None, "--statistics", help="Plan from a statistics folder/file written by `analyze` instead of measuring again (the models are still opened, to check that they are the bytes it was measured on)."),
    out: Path = typer.Option(Path("safeswap-plan.yaml"), "--out", help="Plan file (YAML) to write."),
    method: str = METHOD,
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    alpha: Optional[float] = ALPHA,
    criterion: Optional[str] = CRITERION,
    threshold: Optional[float] = THRESHOLD,
    bottom: Optional[str] = BOTTOM,
    top: Optional[int] = TOP,
    transition_bottom: Optional[int] = TRANSITION_BOTTOM,
    transition_top: Optional[int] = TRANSITION_TOP,
    weights: Optional[str] = WEIGHTS,
    normalize: Optional[bool] = NORMALIZE,
    lambda_: Optional[float] = LAMBDA,
    density: Optional[float] = DENSITY,
    seed: Optional[int] = SEED,
    t: Optional[float] = SLERP_T,
    outside_layers: str = OUTSIDE,
    tokenizer_from: str = TOKENIZER,
    revision: Optional[str] = REVISION,
    allow_nonfinite: bool = NONFINITE,
):
    """Decide, for every unit, which expert it comes from; write a reviewable plan file.

    Edit any decision by hand (safety | language | blend) and replay it with `safeswap merge --plan`.
    """
    flags = locals()
    import safeswap.api as api

    parameters = _method_parameters(flags)
    if statistics is None:
        _require(base=base, safety=safety, language=language)
    result = api.plan(base, safety, language, statistics=statistics, method=method, out=out, granularity=granularity,
                      tau=tau, alpha=alpha, parameters=parameters, outside_layers=outside_layers,
                      tokenizer_from=tokenizer_from, revision=revision, show_progress=True,
                      allow_nonfinite=allow_nonfinite)
    from safeswap.decide.plan_inspect import summary_line, tensor_sizes

    typer.echo(f"plan written to {out}: " + summary_line(result, tensor_sizes(result)))


@app.command()
def merge(
    base: Optional[str] = BASE,
    safety: Optional[str] = SAFETY,
    language: Optional[List[str]] = typer.Option(None, "--language", help="Target-language expert (folder or hub id); the output keeps its config. Repeat as CODE=PATH (e.g. --language ko=./ko --language sw=./sw) to merge several languages into OUT/<code>/, reading the base and safety expert once."),
    out: Path = typer.Option(..., "--out", help="Output folder for the merged model (must not exist or be empty)."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Replay this plan file instead of deciding anew."),
    method: str = METHOD,
    granularity: Optional[str] = GRANULARITY,
    tau: Optional[float] = TAU,
    alpha: Optional[float] = ALPHA,
    criterion: Optional[str] = CRITERION,
    threshold: Optional[float] = THRESHOLD,
    bottom: Optional[str] = BOTTOM,
    top: Optional[int] = TOP,
    transition_bottom: Optional[int] = TRANSITION_BOTTOM,
    transition_top: Optional[int] = TRANSITION_TOP,
    weights: Optional[str] = WEIGHTS,
    normalize: Optional[bool] = NORMALIZE,
    lambda_: Optional[float] = LAMBDA,
    density: Optional[float] = DENSITY,
    seed: Optional[int] = SEED,
    t: Optional[float] = SLERP_T,
    outside_layers: str = OUTSIDE,
    tokenizer_from: str = TOKENIZER,
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype: bfloat16 | float16 | float32 (with --output adapter: the factors'). [default: the inputs' dtype]"),
    output: str = typer.Option("checkpoint", "--output", help="checkpoint (full weights) | adapter (one PEFT LoRA adapter over --base, exact; every expert a LoRA adapter; methods adaptive, layer-swap, linear, task-arithmetic)."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest shard, e.g. 5GB, 500MB, 2GiB."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output folder."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the inputs and print the decisions; write nothing."),
    revision: Optional[str] = REVISION,
    allow_nonfinite: bool = NONFINITE,
):
    """Analyse, plan and merge in one step, or replay a plan with --plan.

    Writes sharded safetensors, config, tokenizer, the plan and the figures into --out, atomically
    (with --output adapter, where both experts are LoRA adapters: one PEFT LoRA adapter in place of the weights).
    """
    from safeswap.stage_times import mark

    mark("startup")
    flags = locals()
    if plan_file is None and not dry_run and language and len(language) == 1:
        from safeswap.write.hasher import start_hashing_early

        # The manifest's input hashes start on the second core while torch is imported below.
        start_hashing_early({"base": base, "safety": safety, "language": language[0]})
    import safeswap.api as api

    # A short-lived process: the objects of the imports (torch's included) need no more
    # cyclic-GC scans; freezing them took 0.5 s of CPU off a 1B-parameter merge.
    gc.freeze()
    mark("imports")

    parameters = _method_parameters(flags)
    if plan_file is None:
        _require(base=base, safety=safety, language=language)
    command = "safeswap " + shlex.join(sys.argv[1:])
    if language and (len(language) > 1 or "=" in language[0] and not Path(language[0]).exists()):
        language = parse_language_args(language)
    else:
        language = language[0] if language else None
    result = api.merge(base, safety, language, out=out, plan=plan_file, method=method, granularity=granularity,
                       tau=tau, alpha=alpha, parameters=parameters, outside_layers=outside_layers, tokenizer_from=tokenizer_from, dtype=dtype,
                       shard_size=shard_size, force=force, dry_run=dry_run, revision=revision, show_progress=True,
                       allow_nonfinite=allow_nonfinite, command=command, output=output)
    if dry_run:
        from safeswap.decide.plan_inspect import decision_table, summary_line, tensor_sizes
        from safeswap.progress import console

        if result.units:
            console.print(decision_table(result))
        typer.echo("dry run: inputs are compatible; nothing written. " + summary_line(result, tensor_sizes(result)))


@app.command("show-plan")
def show_plan(
    plan_file: Path = typer.Argument(..., help="Plan file (or a merged folder holding one)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A folder with the model's weights, for parameter shares. [default: the plan's language expert]"),
):
    """Print a plan's decisions as a table (unit, decision, d, p_S, p_L) and a one-line summary."""
    from rich.console import Console

    from safeswap.decide.methods import load_plan
    from safeswap.decide.plan_inspect import decision_table, format_parameters, summary_line, tensor_sizes

    loaded = load_plan(plan_file)
    console = Console()
    console.print(f"[bold]{loaded.method}[/bold] plan, {loaded.architecture}, {loaded.num_layers} layers; "
                  f"{format_parameters(loaded)}", highlight=False)
    if loaded.units:
        console.print(decision_table(loaded))
    # A merged folder holds the weights the shares are measured on.
    weights_folder = model if model is not None else (plan_file if plan_file.is_dir() else None)
    console.print(summary_line(loaded, tensor_sizes(loaded, weights_folder)), highlight=False)


@app.command("diff-plans")
def diff_plans(
    plan_a: Path = typer.Argument(..., help="First plan file."),
    plan_b: Path = typer.Argument(..., help="Second plan file."),
    model: Optional[Path] = typer.Option(None, "--model", help="A folder with the model's weights, to compare tensor by tensor. [default: the plans' language expert]"),
):
    """Show where two plans disagree: settings, unit decisions, and tensors whose operation differs."""
    from rich.console import Console

    from safeswap.decide.methods import load_plan
    from safeswap.decide.plan_inspect import diff_plans as compare, diff_table, tensor_sizes

    a, b = load_plan(plan_a), load_plan(plan_b)
    sizes = tensor_sizes(a, model) if model is not None else None
    console = Console()
    for item in diff_table(compare(a, b, sizes), label_a=plan_a.name, label_b=plan_b.name):
        console.print(item, highlight=False)


@app.command("export-mergekit")
def export_mergekit(
    plan_file: Path = typer.Argument(..., help="Plan file (or a merged folder holding one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the YAML here instead of printing it."),
    out_dtype: Optional[str] = typer.Option(None, "--out-dtype", help="mergekit out_dtype: bfloat16 | float16 | float32. [default: the language expert's dtype]"),
):
    """Write the mergekit (0.1.5) configuration that merges to the same weights as the plan."""
    from safeswap.decide.mergekit_export import export_mergekit as export

    text = export(plan_file, out, out_dtype)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"mergekit configuration written to {out}; run: mergekit-yaml {out} OUT_DIR")


@app.command()
def verify(
    folder: Path = typer.Argument(..., help="A merged folder written by `safeswap merge`."),
    inputs: bool = typer.Option(False, "--inputs", help="Also re-read every tensor taken whole from an expert and check it is byte-identical to its source."),
):
    """Check a merged folder: shard sha256s against safeswap-manifest.json, and optionally every taken tensor.

    Exits non-zero naming the first shard or tensor that differs.
    """
    import safeswap.api as api

    counts = api.verify(folder, inputs=inputs, show_progress=True)
    extra = f", {counts['tensors']} taken tensors byte-identical to their sources" if inputs else ""
    files = "shards"
    if "modules" in counts:  # an adapter output: its config and weights are what the manifest lists
        files, extra = "adapter files", f", the factors of its {counts['modules']} modules equal those its inputs give"
    typer.echo(f"ok: {counts['shards']} {files} match the manifest{extra}")


@app.command()
def demo(
    language: str = typer.Option("ko", "--language", help="Demo language: a MultiJail language other than English."),
    out: Path = typer.Option(Path("safeswap-demo"), "--out", help="Folder for the models, evaluations and report."),
    quick: bool = typer.Option(False, "--quick", help="A few training steps and prompts: every stage in a few minutes."),
    multijail: Optional[Path] = typer.Option(None, "--multijail", help="Local MultiJail CSV/JSONL. Without it: DAMO-NLP-SG/MultiJail from the hub when reachable (needs the eval extra), else the copy shipped with safeswap (the result records which)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache for the base model, data and experts. [default: $SAFESWAP_CACHE or ~/.cache/safeswap]"),
    judge: str = typer.Option("refusal", "--judge", help="Safety judge: refusal (offline) or llm (needs --judge-base-url)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model name of the llm judge."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint of the llm judge."),
):
    """The whole pipeline on a real small model, offline, on CPU: train a safety and a language expert from
    SmolLM2-135M-Instruct, merge them three ways, evaluate every model, and write a report.

    Everything comes from PyPI (model, training data). The first run trains two experts and evaluates eight
    models (16 min for six models on two idle cores; 43 min for eight with other jobs sharing the cores);
    later runs reuse the cached experts and answers.
    """
    from safeswap.demo.run import run_demo

    run_demo(language=language, out=out, quick=quick, multijail=multijail, cache=cache, judge=judge,
             judge_model=judge_model, judge_base_url=judge_base_url)


def _mount_subcommands() -> None:
    """Evaluation and report commands live beside their code; mounted here so `safeswap --help` lists them."""
    from safeswap.evaluation.all_cli import all_command
    from safeswap.evaluation.cli import eval_app
    from safeswap.evaluation.general_cli import general_command
    from safeswap.report.cli import report_command
    from safeswap.search.cli import search_command

    eval_app.command("general")(general_command)
    eval_app.command("all")(all_command)
    app.add_typer(eval_app, name="eval")
    app.command("report")(report_command)
    app.command("search")(search_command)


_mount_subcommands()


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
