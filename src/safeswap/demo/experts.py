"""Base model and both experts of the demo in one call, each cached by its recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safeswap.demo.base_model import prepare_base
from safeswap.demo.data import build_language_data, build_safety_data, language_info, write_jsonl
from safeswap.demo.packages import cache_dir
from safeswap.demo.recipes import FULL, DemoRecipe
from safeswap.demo.train import cached_expert


@dataclass(frozen=True)
class DemoModels:
    base: Path
    safety: Path
    language: Path


def build_experts(
    language: str = "ko",
    recipe: DemoRecipe = FULL,
    cache: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> DemoModels:
    """The bf16 base, the English safety expert and the `language` expert, training what is not cached.

    The safety expert does not depend on the target language except through
    `recipe.safety_data.n_foreign` (which leaves the target language out), so
    it is shared across target languages when that is 0.
    """
    language_info(language)  # unknown codes fail here, before any download
    root = cache_dir(cache)
    base = prepare_base(root, show_progress=show_progress)
    data = recipe.safety_data
    safety_examples = build_safety_data(
        root, n_harmful=data.n_harmful, n_benign=data.n_benign, seed=data.seed,
        n_foreign=data.n_foreign, target_language=language,
    )
    language_examples = build_language_data(
        language, root, n_translation=recipe.language_data.n_translation,
        instruction_repeats=recipe.language_data.instruction_repeats, seed=recipe.language_data.seed,
    )
    experts = root / "models" / "experts"
    safety_name = "safety" if data.n_foreign == 0 else f"safety-not-{language}"
    safety = cached_expert(base, safety_examples, recipe.safety, experts, safety_name, show_progress)
    expert = cached_expert(base, language_examples, recipe.language, experts, f"language-{language}", show_progress)
    # The exact training sets, beside the checkpoints, for anyone who wants to read them.
    write_jsonl(safety_examples, safety / "training_data.jsonl")
    write_jsonl(language_examples, expert / "training_data.jsonl")
    return DemoModels(base=base, safety=safety, language=expert)
