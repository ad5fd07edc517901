"""The demo's search: a small `safeswap search` on its two experts, and the held-out prompts every row is evaluated on.

The search runs over the experts as the LoRA adapters they were trained as: every candidate is
an adapter, probed by swapping its factors into one loaded base, and answers with the adapter
attached to the base. It scores candidates on the search half of MultiJail and of the benign
prompts (probe, then generation and the refusal judge for the probe's best); the plan it hands
back (the recommended one, else the best: the closest to its constraints) is replayed into
`merge-searched`. The demo's table then evaluates every model, the searched
merge included, on the held-out half only, so no number in the table comes from a prompt
the search saw. The search's own final evaluation is switched off: the table is that
evaluation, with the demo's larger prompt counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeswap.demo.recipes import DemoRecipe
from safeswap.evaluation.multijail import PromptSet


@dataclass(frozen=True)
class DemoSearch:
    """What the demo takes from its search."""

    folder: Path
    summary: dict[str, Any]
    splits: dict[str, Any]

    @property
    def plan(self) -> Path | None:
        """The plan the search handed back: recommended-plan.yaml, else best-plan.yaml; None when it evaluated none."""
        chosen = self.summary.get("plan") or self.summary.get("best_plan")
        return Path(chosen) if chosen else None

    @property
    def misses(self) -> str | None:
        """When the plan is only the best (no candidate met every constraint): what it misses, and by how much."""
        if self.summary.get("plan") or not self.summary.get("best_plan"):
            return None
        return ", ".join(f"{name} by {v:.3g}" for name, v in (self.summary.get("best_misses") or {}).items())


def run_search(base: Path, safety: Path, language_expert: Path, language: str, recipe: DemoRecipe, folder: Path,
               multijail: str | os.PathLike | None, show_progress: bool = True) -> DemoSearch:
    """Run (or resume, from the folder) the recipe's search over the experts' LoRA adapters (`safety` and
    `language_expert` are the adapter folders)."""
    from safeswap.quiet import quiet_transformers
    from safeswap.progress import RichProgress, console
    from safeswap.search.run import search
    from safeswap.search.space import parse_space

    space = parse_space({**recipe.search, "languages": [language]})
    with RichProgress() as progress, quiet_transformers():
        summary = search(str(base), str(safety), str(language_expert), space, folder, multijail=multijail,
                         on_batch=(lambda done: progress("trials", done, space.trials, "Search trials"))
                         if show_progress else None,
                         progress=progress if show_progress else None, notify=console.print)
    splits = json.loads((folder / "splits.json").read_text(encoding="utf-8"))
    return DemoSearch(folder, summary, splits)


def held_out_files(searched: DemoSearch, harmful: PromptSet, benign: PromptSet, language: str, recipe: DemoRecipe,
                   folder: Path) -> tuple[Path, Path]:
    """The held-out MultiJail prompts and at most recipe.benign_prompts held-out benign prompts, as prompt files."""
    from safeswap.search.splits import write_half

    harmful_file = write_half(harmful, searched.splits["multijail"]["held_out"], folder / "multijail-held-out.jsonl")
    benign_file = write_half(benign, searched.splits["benign"]["held_out"], folder / f"benign-held-out-{language}.jsonl",
                             languages=["en", language], limit=recipe.benign_prompts)
    return harmful_file, benign_file
