"""DARE + TIES sign election: drop and rescale each task vector, then merge the entries agreeing in sign.

    s = sign(sum_i w_i tau_i'),   W = W_base + lambda * sum_i w_i tau_i' [sign(tau_i') = s]

(tau_i' as in safeswap.decide.methods.dare; no magnitude trim, the random drop replaces it.)
normalize (off by default, as mergekit's dare_ties) divides by sum_i w_i [sign(tau_i') = s].
"""

from __future__ import annotations

from safeswap.decide.methods.dare import DareMethod


class DareTies(DareMethod):
    name = "dare-ties"
    summary = ("DARE + TIES: drop task-vector entries with probability 1 - density, rescale by 1/density, "
               "merge the entries agreeing with the elected sign")
    mergekit_name = "dare_ties"
    consensus = True
    defaults = {"weights": {"safety": 1.0, "language": 1.0}, "density": 0.5, "lambda": 1.0, "normalize": False, "seed": 0}
