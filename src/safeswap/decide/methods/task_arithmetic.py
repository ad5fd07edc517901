"""Task arithmetic (Ilharco et al. 2023): add the experts' task vectors to the base.

    W = W_base + lambda * sum_i w_i * (W_i - W_base)

With normalize the sum is divided by sum_i w_i (mergekit's option; off by default, as in mergekit).
Computed entry by entry, so the engine streams it in row chunks.
"""

from __future__ import annotations

from typing import Any

from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.task_vectors import TaskVectorMerge


class TaskArithmetic(MergeMethod):
    name = "task-arithmetic"
    summary = "task arithmetic: W_base + lambda · sum_i w_i (W_i - W_base)"
    mergekit_name = "task_arithmetic"
    defaults = {"weights": {"safety": 1.0, "language": 1.0}, "lambda": 1.0, "normalize": False}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        return check.weighted_parameters(self.name, params, self.defaults)

    def operation(self, plan, name, role) -> TaskVectorMerge:
        p = plan.parameters
        return TaskVectorMerge(tuple(p["weights"].items()), p["lambda"], p["normalize"])
