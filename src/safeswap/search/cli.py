"""`safeswap search --base B --safety S --language L --config search.yaml --out DIR`: a thin command over run.search."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def search_command(
    base: str = typer.Option(..., "--base", help="Base model (folder or hub id)."),
    safety: str = typer.Option(..., "--safety", help="English safety expert (folder or hub id)."),
    language: str = typer.Option(..., "--language", help="Language expert (folder or hub id)."),
    config: Path = typer.Option(..., "--config", help="Search space YAML (methods, ranges, constraints, budget)."),
    out: Path = typer.Option(..., "--out", help="Search folder; an existing one is resumed."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Total searched trials (default: the config's)."),
    workers: int = typer.Option(1, "--workers", help="Candidates evaluated at once in a local process pool."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Run candidates as Ray tasks on this cluster ('local': ray.init here)."),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout",
                                      help="Seconds the --ray-address cluster has to answer before the search gives up."),
    gpus_per_candidate: float = typer.Option(0.0, "--gpus-per-candidate", help="GPUs each Ray task requests."),
    cpus_per_candidate: float = typer.Option(1.0, "--cpus-per-candidate", help="CPUs each Ray task requests."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: DIR/search.db, SQLite)."),
    multijail: Optional[Path] = typer.Option(None, "--multijail", help="MultiJail CSV/JSONL (default: the shipped copy)."),
    benign: Optional[Path] = typer.Option(None, "--benign", help="Benign prompts CSV/JSONL (default: the shipped set)."),
    device: Optional[str] = typer.Option(None, "--device", help="Torch device for the probe and generation (default: cpu for the probe, auto for generation)."),
    backend: str = typer.Option("hf", "--backend", help="Generation backend of the generation stage and the final evaluation: hf or vllm."),
    judge: str = typer.Option("refusal", "--judge", help="Judge of the generated answers (as `safeswap eval safety --judge`)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Guard or LLM judge model."),
    judge_backend: str = typer.Option("hf", "--judge-backend", help="How a guard model runs: hf, vllm or openai."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint of the judge."),
) -> None:
    """Search merge methods and parameters for a merge safe in the target language that does not refuse everything."""
    from rich.console import Console

    from safeswap.errors import SafeswapError
    from safeswap.progress import RichProgress
    from safeswap.quiet import quiet_transformers
    from safeswap.search.judged import JudgeSettings, check_judge_settings
    from safeswap.search.run import search
    from safeswap.search.space import load_space
    from safeswap.search.study import require_optuna

    if trials is not None and trials < 1:
        raise SafeswapError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise SafeswapError(f"--workers must be at least 1, got {workers}")
    if ray_timeout <= 0:
        raise SafeswapError(f"--ray-timeout must be above 0 seconds, got {ray_timeout:g}")
    space = load_space(config)
    settings = JudgeSettings(backend=backend, judge=judge, judge_model=judge_model, judge_backend=judge_backend,
                             judge_base_url=judge_base_url, device=device or "auto")
    check_judge_settings(settings)
    require_optuna()
    console = Console(stderr=True)
    with RichProgress() as progress, quiet_transformers():
        summary = search(base, safety, language, space, out, trials=trials, ray_address=ray_address, ray_timeout=ray_timeout,
                         gpus_per_candidate=gpus_per_candidate, cpus_per_candidate=cpus_per_candidate,
                         workers=workers, storage=storage, multijail=multijail, benign=benign, device=device,
                         on_batch=lambda done: progress("trials", done, trials or space.trials, "Trials"),
                         judge=settings,
                         progress=progress, notify=console.print)
    console.print(summary["statement"])
    if summary["probe_judge_rank_correlation"]:
        c = summary["probe_judge_rank_correlation"]

        def rho(v):
            return "n/a (under 3 candidates or no spread)" if v is None else f"{v:.2f}"

        console.print(f"probe vs judge (Spearman, {c['n']} judged candidates): harmful {rho(c['harmful'])}, "
                      f"benign {rho(c['benign'])}")
    if summary["final"]:
        console.print(f"held-out evaluation: {out / summary['final']}")
    if summary["plan"]:
        console.print(f"recommended plan: {summary['plan']} (replay with `safeswap merge --plan`)")
    console.print(f"wrote {out / 'candidates.csv'}, {out / 'pareto.png'}, {out / 'search.json'}")
