"""DARE + task arithmetic: drop and rescale each task vector, then add them.

    W = W_base + lambda * sum_i w_i * tau_i'          (tau_i' as in safeswap.decide.methods.dare)

normalize (off by default, as mergekit's dare_linear) divides the sum by sum_i w_i.
"""

from __future__ import annotations

from safeswap.decide.methods.dare import DareMethod


class DareLinear(DareMethod):
    name = "dare-linear"
    summary = ("DARE + task arithmetic: drop task-vector entries with probability 1 - density, rescale by "
               "1/density, add them to the base")
    mergekit_name = "dare_linear"
    consensus = False
    defaults = {"weights": {"safety": 1.0, "language": 1.0}, "density": 0.5, "lambda": 1.0, "normalize": False, "seed": 0}
