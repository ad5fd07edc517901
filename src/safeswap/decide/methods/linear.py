"""Linear merge (model soup, Wortsman et al. 2022): a weighted average of the two experts.

    W = sum_i w_i * W_i / sum_i w_i       (with normalize, the default, as in mergekit)
    W = sum_i w_i * W_i                   (with --no-normalize)

Every float tensor, embeddings and LM head included, is combined the same way.
"""

from __future__ import annotations

from typing import Any

from safeswap.errors import SafeswapError
from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.operations import Linear


class LinearMerge(MergeMethod):
    name = "linear"
    summary = "weighted average of the experts (model soup): sum_i w_i W_i / sum_i w_i"
    defaults = {"weights": {"safety": 0.5, "language": 0.5}, "normalize": True}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        p = check.weighted_parameters(self.name, params, self.defaults)
        if p["normalize"] and sum(p["weights"].values()) == 0:
            raise SafeswapError("linear weights sum to 0 and cannot be normalised; change them or pass --no-normalize")
        return p

    def operation(self, plan, name, role) -> Linear:
        weights = plan.parameters["weights"]
        total = sum(weights.values()) if plan.parameters["normalize"] else 1.0
        return Linear(tuple((expert, w / total) for expert, w in weights.items()))
