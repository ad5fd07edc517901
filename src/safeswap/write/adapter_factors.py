"""A merge of LoRA experts as LoRA factors: each tensor's operation turned into (A, B), exactly.

When every expert is an adapter over one base, W_X = W_B + s_X B_X A_X, and an operation
that is an affine combination of the inputs, W = W_B + sum_X c_X (W_X - W_B), is itself an adapter:

    take base          -> no update
    take X             -> A_X, s_X B_X
    sum_X c_X dW_X     -> [c_S s_S B_S | c_L s_L B_L] [A_S ; A_L]   (rank r_S + r_L)

The scale is folded into B, so the result's own scale is 1 (lora_alpha == r). An operation
that is not such a combination (TIES's trim, DARE's drop, SLERP) has no exact low-rank form and
is refused by the caller, which asks delta_coefficients first.
"""

from __future__ import annotations

import torch

from safeswap.decide.operations import Linear, Take

Factors = tuple[torch.Tensor, torch.Tensor]  # (A [r, in], B [out, r]), float32, scale folded into B


def delta_coefficients(op) -> dict[str, float] | None:
    """{expert role: c} with W = W_B + sum c * (W_role - W_B), or None when op is no such combination.

    Take(base) is {}; Take(X) is {X: 1}; a Linear whose weights sum to 1 is its weights without the
    base's (sum w_r W_r = W_B + sum w_r (W_r - W_B) exactly when sum w_r = 1). Other operations may say
    so themselves through a method of the same name (task arithmetic without trim or drop does).
    """
    if isinstance(op, Take):
        return {} if op.role == "base" else {op.role: 1.0}
    if isinstance(op, Linear):
        if abs(sum(w for _, w in op.weights) - 1.0) > 1e-9:
            return None
        return {role: float(w) for role, w in op.weights if role != "base" and w != 0.0}
    own = getattr(op, "delta_coefficients", None)
    return own() if own is not None else None


def compose(coefficients: dict[str, float], factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
            ) -> Factors | None:
    """The factors of sum_X c_X s_X B_X A_X, experts in the order of `coefficients`; None for no update.

    `factors` holds each expert's (A, B, scale) for this tensor; an expert without an entry did not
    change the tensor and adds nothing.
    """
    parts = [(factors[role], c) for role, c in coefficients.items() if c != 0.0 and role in factors]
    if not parts:
        return None
    a = torch.cat([ab[0] for ab, _ in parts], dim=0)
    b = torch.cat([ab[1] * (c * ab[2]) for ab, c in parts], dim=1)
    return a, b
