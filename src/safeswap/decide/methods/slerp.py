"""SLERP: spherical interpolation from the language expert to the safety expert, tensor by tensor.

    cos(theta) = <L/|L|, S/|S|>                                (each tensor flattened to one vector)
    W = sin((1-t)*theta)/sin(theta) * L + sin(t*theta)/sin(theta) * S
    W = (1-t)*L + t*S                                          (|cos(theta)| > 0.9995: nearly (anti)parallel)

`t` is the safety expert's share (0: the language expert, 1: the safety expert). The
arithmetic is mergekit 0.1.5's `slerp` step for step, so that both agree to float32
rounding: float32 throughout; norms and the dot product summed over chunks of 2^20
entries; a norm at or below 1e-8 counts as 1; the dot clamped to [-1, 1]; the
un-normalised tensors interpolated; the result rounded once to the output dtype by the
engine. Every float tensor, embeddings and LM head included, is interpolated, as in
mergekit. t = 0 and t = 1 take the expert's tensors whole (mergekit's formula gives
the same values; the take keeps the bytes, signed zeros included).

The angle needs the whole tensor, so the engine runs the operation on one whole
tensor at a time, as it does TIES (memory: a few copies of the largest tensor).
Used by Aakanksha et al. (2024), "Mix Data or Merge Models?", as the baseline for
merging safety and general models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.operations import Take
from safeswap.errors import SafeswapError

# mergekit 0.1.5 (merge_methods/slerp.py): above this |cos(theta)| the experts are taken as parallel.
DOT_THRESHOLD = 0.9995
# A norm at or below this counts as 1, so a zero tensor is not divided by zero.
EPS = 1e-8
# mergekit's chunk of the flattened tensor for the norms, the dot product and the interpolation.
CHUNK_ELEMENTS = 1024 * 1024


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """mergekit 0.1.5's slerp of one tensor pair (v0 at t = 0, v1 at t = 1), in float32.

    Overwrites v0 with the result (the engine's scratch copies; mergekit writes into a
    new tensor, chunk by chunk, with the same values) and returns it in v0's shape.
    """
    shape = v0.shape
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    tt = torch.tensor([t], dtype=torch.float32).reshape(-1, 1)
    if not a.shape[1]:
        return ((1 - tt) * a + tt * b).reshape(shape)
    chunks = [slice(start, start + CHUNK_ELEMENTS) for start in range(0, a.shape[1], CHUNK_ELEMENTS)]
    norm_a = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(a[:, c], dim=1, keepdim=True) for c in chunks]), dim=0)
    norm_b = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(b[:, c], dim=1, keepdim=True) for c in chunks]), dim=0)
    norm_a = torch.where(norm_a > EPS, norm_a, 1)
    norm_b = torch.where(norm_b > EPS, norm_b, 1)
    dot = torch.stack([((a[:, c] / norm_a) * (b[:, c] / norm_b)).sum(dim=1, keepdim=True) for c in chunks])
    dot = dot.sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    for c in chunks:  # each product rounded, then the sum: mergekit's unfused `coef_a * x + coef_b * y`
        a[:, c] = coef_a * a[:, c] + coef_b * b[:, c]
    return a.reshape(shape)


@dataclass(frozen=True)
class Slerp:
    """Spherical interpolation of one tensor from `start` (t = 0) to `end` (t = 1); a whole-tensor operation."""

    t: float
    start: str = "language"
    end: str = "safety"
    elementwise = False  # the angle needs the whole tensor

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.start, self.end)

    def compute(self, tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Works in place on the float32 inputs it is given."""
        return slerp(self.t, tensors[self.start], tensors[self.end])

    def describe(self) -> str:
        return f"slerp {self.start} -> {self.end}, t = {self.t:g}"


class SlerpMerge(MergeMethod):
    name = "slerp"
    summary = ("spherical interpolation from the language expert to the safety expert per tensor, t the safety "
               "expert's share, linear where the two are nearly parallel (mergekit's slerp; the baseline of "
               "Aakanksha et al., 2024, \"Mix Data or Merge Models?\")")
    mergekit_name = "slerp"
    not_low_rank = ("SLERP's per-tensor coefficients do not sum to 1, so the base's own weights enter the result "
                    "scaled: a full-rank update")
    defaults = {"t": 0.5}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        check.reject_unknown(self.name, params, self.defaults)
        p = {**self.defaults, **params}
        t = check.number(p["t"], "t")
        if not 0.0 <= t <= 1.0:
            raise SafeswapError(f"t must lie in [0, 1] (the safety expert's share), got {t:g}")
        p["t"] = t
        return p

    def operation(self, plan, name, role) -> Take | Slerp:
        t = float(plan.parameters["t"])
        if t == 0.0:
            return Take("language")
        if t == 1.0:
            return Take("safety")
        return Slerp(t)
