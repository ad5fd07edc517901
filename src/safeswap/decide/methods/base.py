"""The interface every merge method implements.

A method does two things: `build` decides (turns inputs, and statistics when it
needs them, into a MergePlan), and `operation` replays (turns the plan into the
operation for one tensor). Replay reads only the plan, so a hand-edited plan
merges exactly as written.
"""

from __future__ import annotations

from typing import Any, ClassVar

from safeswap.read.architecture import OUTSIDE, TensorRole
from safeswap.decide.operations import Linear, Take, blend
from safeswap.decide.parameters import check_alpha
from safeswap.decide.plan_file import MergePlan


class MergeMethod:
    """Every fact about a method lives on its class: the model card, the mergekit export and
    the CLI read them from here."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one sentence for model cards: what the method does, with its source
    mergekit_name: ClassVar[str] = "linear"  # mergekit 0.1.5's merge_method that reproduces it
    random_masks: ClassVar[bool] = False  # seeded random drops, which mergekit draws its own way
    uses_statistics: ClassVar[bool] = False
    # Why the method's result is no low-rank update of the base, so `--output adapter` refuses it;
    # empty where every tensor is the base plus a weighted sum of the experts' updates (exact as LoRA factors).
    not_low_rank: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and check ranges; returns the full parameter dict."""
        return {**self.defaults, **params}

    def build_units(self, inputs, stats, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-unit decisions for unit-based methods; others return []."""
        return []

    def unit_granularity(self, plan: MergePlan) -> str | None:
        """The granularity of the plan's units (layer, module, projection); None for a method without units."""
        return None

    def operation(self, plan: MergePlan, name: str, role: TensorRole) -> Take | Linear:
        raise NotImplementedError


def outside_operation(plan: MergePlan) -> Take | Linear:
    """Embeddings, final norm and LM head: blended by default, or taken whole.

    Every outside tensor gets the same operation, so a tied LM head stays tied.
    """
    if plan.outside_layers == "blend":
        return blend(check_alpha(plan.parameters.get("alpha", 0.5)))
    return Take(plan.outside_layers)


def decision_operation(unit: dict[str, Any], default_alpha: float) -> Take | Linear:
    decision = unit["decision"]
    if decision == "blend":
        return blend(unit.get("alpha", default_alpha))
    return Take(decision)


def is_outside(role: TensorRole) -> bool:
    return role.module == OUTSIDE
