"""What the merge engine does to produce one output tensor.

A method turns its plan into one Operation per tensor. The engine streams each
operation chunk by chunk (elementwise operations) or whole (those that need the
full tensor, such as TIES's magnitude threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Take:
    """Copy one model's tensor bytes unchanged (bit-identical)."""

    role: str
    keeps_finite = True  # the bytes of a finite input

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,)

    def describe(self) -> str:
        return f"take {self.role}"


@dataclass(frozen=True)
class Linear:
    """sum_i w_i * W_i in float32, rounded once to the output dtype."""

    weights: tuple[tuple[str, float], ...]
    elementwise = True

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.weights)

    @property
    def keeps_finite(self) -> bool:
        """Non-negative weights summing to at most 1 never leave the inputs' range."""
        return all(w >= 0 for _, w in self.weights) and sum(w for _, w in self.weights) <= 1 + 1e-6

    def compute(self, tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Works in place on the float32 inputs it is given (the engine's scratch buffers).

        Each product is rounded, then the sum, exactly as the written formula
        alpha*S + (1-alpha)*L; never add_(alpha=...), whose fused form rounds differently.
        """
        out = None
        for role, w in self.weights:
            term = tensors[role].mul_(w)
            out = term if out is None else out.add_(term)
        return out

    def describe(self) -> str:
        return " + ".join(f"{w:g}*{r}" for r, w in self.weights)


def blend(alpha: float) -> Take | Linear:
    """alpha * safety + (1 - alpha) * language; alpha 1 or 0 is a plain take (exact bytes, signed zeros kept)."""
    alpha = float(alpha)
    if alpha == 1.0:
        return Take("safety")
    if alpha == 0.0:
        return Take("language")
    return Linear((("safety", alpha), ("language", 1.0 - alpha)))
