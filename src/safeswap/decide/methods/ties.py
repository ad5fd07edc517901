"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint merge.

    tau_i' = top-k(W_i - W_base) by magnitude, k = max(1, int(density * n)) per tensor
    s      = sign(sum_i w_i tau_i')                 (+1 where the sum is 0)
    W      = W_base + lambda * sum_i w_i tau_i' [sign(tau_i') = s] / sum_i w_i [sign(tau_i') = s]

Choices the paper leaves open, taken from mergekit 0.1.5: trimming is per tensor,
the sign is elected on the weighted task vectors, the disjoint mean is weighted by
w_i (normalize, on by default; --no-normalize sums instead), ties in magnitude at
the cut follow torch.argsort's order. Default density 0.2 is the paper's k = 20%.
"""

from __future__ import annotations

from typing import Any

from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.task_vectors import TaskVectorMerge


class Ties(MergeMethod):
    name = "ties"
    summary = ("TIES-Merging: trim each task vector to its top-density entries, elect the sign per parameter, "
               "average the agreeing entries, scale by lambda")
    mergekit_name = "ties"
    not_low_rank = "TIES trims each task vector entry by entry and elects signs per entry, which no low-rank factors express"
    defaults = {"weights": {"safety": 1.0, "language": 1.0}, "density": 0.2, "lambda": 1.0, "normalize": True}

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        return check.weighted_parameters(self.name, params, self.defaults)

    def operation(self, plan, name, role) -> TaskVectorMerge:
        p = plan.parameters
        return TaskVectorMerge(
            tuple(p["weights"].items()), p["lambda"], p["normalize"], consensus=True, sparsify="magnitude",
            density=p["density"],
        )
