"""`safeswap demo`: the whole pipeline (experts, merges, evaluations, summary) on SmolLM2-135M-Instruct, on CPU.

1. base model and the two experts (cached by recipe: see experts.py);
2. a small `safeswap search` over the adaptive rule's parameters, on the search half of
   the prompts, with the experts as LoRA adapters (search_stage.py);
3. merges of the experts, given as the LoRA adapters they were trained as: the adaptive
   rule by size (norm) and by direction, fixed layer swapping, a linear soup, SLERP; the
   adaptive merge also written as a LoRA adapter (checked against the full merge: the largest
   logit difference on the demo's prompts); and the plan the search handed back replayed
   (merge-searched: the recommended plan, else the best one, labelled with its misses);
4. evaluation of every model on the held-out half only: MultiJail harmful prompts and
   team-written benign prompts in English and the demo language (refusal judge by default), the share
   of answers written in the prompt's language, and held-out perplexity in the
   demo language;
5. a summary table that states what the numbers show, plus the full report.

Generations are cached per model fingerprint under OUT/runs-<recipe>/, and the
language measure beside them, so a rerun only redoes what changed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from safeswap.demo.data import language_info
from safeswap.demo.experts import build_experts
from safeswap.demo.language import in_language_rate, kept_language_gain, measure_language
from safeswap.quiet import quiet_transformers
from safeswap.demo.recipes import RECIPES, DemoRecipe
from safeswap.demo.adapter_check import max_logit_difference
from safeswap.demo.search_stage import held_out_files, run_search
from safeswap.demo.summary import write_summary
from safeswap.demo.train import ADAPTER_DIR
from safeswap.errors import SafeswapError
from safeswap.evaluation.cache import stored_answers
from safeswap.files import atomic_write
from safeswap.progress import RichProgress, console

# The merges the demo compares; layer-swap keeps the outer fifth of the layers from the language expert,
# direction is the adaptive rule deciding by the cosine of the updates (after SafeMERGE), slerp the
# spherical blend at t = 0.5 (the baseline of Aakanksha et al., 2024).
MERGES: dict[str, dict[str, Any]] = {
    "merge-adaptive": {"method": "adaptive"},
    "merge-layer-swap": {"method": "layer-swap", "parameters": {"bottom": 6, "top": 6}},
    "merge-linear": {"method": "linear"},
    "merge-direction": {"method": "adaptive", "parameters": {"criterion": "direction"}},
    "merge-slerp": {"method": "slerp"},
}


def _language_measure(runs: Path, model: Path, fingerprint: str, language: str, recipe: DemoRecipe, cache) -> dict:
    """Held-out perplexity, cached by model fingerprint and recipe."""
    store = runs / "language_measure.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    key = f"{fingerprint}|{language}|{recipe.language_sentences}"
    if key not in known:
        known[key] = measure_language(model, language, cache, limit=recipe.language_sentences)
        atomic_write(store, json.dumps(known, indent=1))
    return known[key]


class _StageClock:
    """Prints each finished stage with its time and an estimate of what remains.

    Stages differ in length (training the experts takes about as long as two or three
    model evaluations, a merge a second), so each stage carries a relative weight and
    the estimate is the time per unit of weight so far times the weight left.
    """

    def __init__(self, weights: list[float]):
        self.start = self.last = time.time()
        self.weights, self.finished = weights, 0

    def done(self, what: str) -> None:
        now = time.time()
        self.finished += 1
        done, left = sum(self.weights[: self.finished]), sum(self.weights[self.finished :])
        eta = (now - self.start) / done * left if left else 0.0
        console.print(f"[green]done[/green] {what} in {now - self.last:.0f} s"
                      + (f"; about {eta / 60:.1f} min left" if left else ""))
        self.last = now


# Relative stage lengths, from a full run on two CPU cores: experts 280 s, merges 1 s, evaluations ~115 s,
# the search ~8 min.
EXPERTS_WEIGHT, SEARCH_WEIGHT, MERGE_WEIGHT, EVALUATION_WEIGHT = 2.4, 4.0, 0.01, 1.0


def merge_as_adapter(experts, out: Path, method: str, parameters: dict | None = None) -> Path:
    """The merge of the experts' adapters written as a LoRA adapter over the base (`safeswap merge --output adapter`)."""
    from safeswap.api import merge

    return merge(experts.base, experts.safety / ADAPTER_DIR, experts.language / ADAPTER_DIR, out=out, force=True,
                 method=method, parameters=parameters, output="adapter")


def run_demo(
    language: str = "ko", out: str | os.PathLike = "safeswap-demo", quick: bool = False,
    multijail: str | os.PathLike | None = None, cache: str | os.PathLike | None = None, judge: str = "refusal",
    judge_model: str | None = None, judge_base_url: str | None = None, show_progress: bool = True,
) -> Path:
    """Run the demo end to end; returns the path of the summary report (OUT/README.md)."""
    from safeswap.api import merge
    from safeswap.evaluation.multijail import load_benign, load_multijail, select_subset
    from safeswap.search.splits import load_benign_asset
    from safeswap.evaluation.safety import evaluate_safety
    from safeswap.report import build_report

    started = time.time()
    language_info(language)
    if language == "en":
        raise SafeswapError("the demo language must be a MultiJail language other than English")
    recipe = RECIPES["quick" if quick else "full"]
    out = Path(out)
    runs = out / f"runs-{recipe.name}"
    prompts = load_multijail(multijail)  # the file, else the hub, else the copy shipped with safeswap

    console.rule(f"[bold]safeswap demo ({recipe.name}): safety expert + {language} expert")
    console.print(f"MultiJail: {prompts.source} (sha256 {prompts.sha256[:12]})")
    evaluations = 4 + len(MERGES)  # base, both experts, every merge, the searched merge
    stage = _StageClock([EXPERTS_WEIGHT, SEARCH_WEIGHT] + [MERGE_WEIGHT] * (len(MERGES) + 1)
                        + [EVALUATION_WEIGHT] * evaluations)
    experts = build_experts(language, recipe, cache, show_progress=show_progress)
    stage.done("base model and experts")
    console.print("searching: adaptive merges scored on the search half of the prompts")
    # The search's candidates are adapters over the base: it runs on the experts' adapters, not their full copies.
    searched = run_search(experts.base, experts.safety / ADAPTER_DIR, experts.language / ADAPTER_DIR, language,
                          recipe, out / "search", multijail, show_progress)
    console.print(f"search: {searched.summary['statement']}")
    stage.done("search")
    # Every row is evaluated on the held-out half: prompts the search never scored.
    harmful_file, benign = held_out_files(searched, prompts, load_benign_asset(), language, recipe, runs)
    harmful_ids = {p.id for p in select_subset(load_multijail(harmful_file), recipe.multijail_prompts, seed=0)}
    benign_ids = {p.id for p in load_benign(benign).prompts}
    models: dict[str, Path] = {"base": experts.base, "safety-expert": experts.safety,
                               f"{language}-expert": experts.language}
    for label, spec in MERGES.items():
        console.print(f"merging: {label}")
        # The experts are merged as the LoRA adapters they were trained as (no full copy is read).
        models[label] = merge(experts.base, experts.safety / ADAPTER_DIR, experts.language / ADAPTER_DIR,
                              out=out / "models" / label, force=True, **spec)
        stage.done(label)
    # The adaptive merge also as an adapter over the base (the experts' factors, exactly), checked against the full one.
    console.print("merging: merge-adaptive as a LoRA adapter")
    adaptive_adapter = merge_as_adapter(experts, out / "models" / "merge-adaptive-adapter", **MERGES["merge-adaptive"])
    notes: dict[str, str] = {}
    if searched.plan is not None:
        kind = "recommended" if searched.misses is None else "best"
        console.print(f"merging: merge-searched (the search's {kind} plan, replayed)")
        models["merge-searched"] = merge(plan=searched.plan, out=out / "models" / "merge-searched", force=True)
        if searched.misses is not None:
            notes["merge-searched"] = f"best only: misses {searched.misses}"
    stage.done("merge-searched" if searched.plan else "search (no candidate evaluated: nothing to merge)")

    rows = []
    languages = ["en", language]
    for label, path in models.items():
        console.print(f"evaluating: {label}")
        with RichProgress() as progress, quiet_transformers():
            result = evaluate_safety(
                path, languages=languages, backend="hf", judge=judge, out=runs, data=harmful_file,
                limit=recipe.multijail_prompts, benign=benign, label=label, max_new_tokens=recipe.max_new_tokens,
                batch_size=16, judge_model=judge_model, judge_base_url=judge_base_url, progress=progress,
            )
        answers = stored_answers(runs, result["model"]["fingerprint"], languages,
                                 {"multijail": harmful_ids, "benign": benign_ids})
        measure = _language_measure(runs, path, result["model"]["fingerprint"], language, recipe, cache)
        rows.append({
            "model": label, "note": notes.get(label), "path": str(path), "result": result,
            "in_language": {lang: in_language_rate(texts, lang) for lang, texts in answers.items()},
            "perplexity": measure["perplexity"], "language_measure": measure,
        })
        stage.done(f"evaluation of {label}")
    base_ppl, expert_ppl = rows[0]["perplexity"], rows[2]["perplexity"]
    for row in rows:
        row["kept_language_gain"] = kept_language_gain(base_ppl, expert_ppl, row["perplexity"])
    build_report(runs, out / "report", title=f"safeswap demo ({recipe.name}, {language})", searches=[out / "search"])
    check_prompts = [p.texts[code] for p in load_multijail(harmful_file).prompts[:4] for code in languages
                     if p.texts.get(code)] + [p.texts[language] for p in load_benign(benign).prompts[:4]]
    adapter_check = {"folder": str(adaptive_adapter), "prompts": len(check_prompts),
                     "max_abs_logit_difference": max_logit_difference(experts.base, adaptive_adapter,
                                                                      models["merge-adaptive"], check_prompts)}
    summary = write_summary(out, rows, language, recipe, time.time() - started, searched, adapter_check)
    console.print(f"[bold green]demo report:[/bold green] {summary}  (full report: {out / 'report' / 'report.html'})")
    return summary
