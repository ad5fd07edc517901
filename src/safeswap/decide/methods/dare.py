"""What DARE-linear and DARE-TIES share (Yu et al. 2024, "Language Models are Super Mario").

    tau_i' = m_i * (W_i - W_base) / density,   m_i ~ Bernoulli(density) per entry

The rescale is the paper's 1/density. (mergekit 0.1.5 instead rescales each
tensor to keep the task vector's L1 norm; its masks come from torch's global
generator, so its DARE results differ from run to run and from ours.)

Masks are drawn per tensor and expert from a generator seeded with
sha256(seed, tensor name, expert): the same --seed gives byte-identical output
whatever the thread count or the order in which tensors are merged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from safeswap.decide import parameters as check
from safeswap.decide.methods.base import MergeMethod
from safeswap.decide.methods.task_vectors import TaskVectorMerge


class DareMethod(MergeMethod):
    not_low_rank = "DARE drops random entries of each task vector, which leaves a full-rank update"
    consensus: ClassVar[bool] = False
    random_masks = True

    def validate_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        return check.weighted_parameters(self.name, params, self.defaults)

    def operation(self, plan, name, role) -> TaskVectorMerge:
        p = plan.parameters
        return TaskVectorMerge(
            tuple(p["weights"].items()), p["lambda"], p["normalize"], consensus=self.consensus, sparsify="random",
            density=p["density"], seed=p["seed"],
        )
