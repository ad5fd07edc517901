"""Task-vector merging, shared by task-arithmetic, TIES and DARE.

One operation covers the family (the papers' formulas; mergekit 0.1.5's order
of operations wherever the papers leave one open, so results agree with
mergekit's to float32 rounding):

    tau_i  = W_i - W_base                                  (task vector of expert i)
    tau_i' = sparsify(tau_i)                               (TIES: keep the top `density` by magnitude;
                                                            DARE: keep each entry with probability
                                                            `density`, rescale survivors by 1/density)
    t_i    = w_i * tau_i'
    merged = sum_i t_i                                     (no consensus)
           = sum_i t_i * [sign(t_i) == s]                  (TIES consensus, s = +1 where sum_i t_i >= 0, else -1)
    merged /= sum_i w_i  (or sum_i w_i [sign(t_i) == s])   (only with normalize; a zero divisor counts as 1)
    W      = W_base + lambda * merged

All arithmetic is float32; the engine rounds the result once to the output dtype.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

# mergekit treats a divisor this close to zero as "do not divide" (sum of weights such as 1 + -1).
ZERO_DIVISOR = 1e-8


def keep_largest(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the k = max(1, int(density * n)) entries of largest magnitude, zero the rest.

    Entries of equal magnitude at the cut are chosen in torch.argsort's order, as
    mergekit does, so the same k entries survive in both tools (argsort on CPU
    does not depend on the thread count).
    """
    if density >= 1.0 or delta.numel() == 0:
        return delta
    flat = delta.reshape(-1)
    k = max(1, int(density * flat.numel()))
    top = torch.argsort(flat.abs(), descending=True)[:k]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[top] = True  # a byte mask: cheaper to scatter than the values themselves
    return flat.mul_(keep).view(delta.shape)


def tensor_seed(seed: int, name: str, role: str) -> int:
    """A 63-bit generator seed from (seed, tensor name, expert).

    Deriving it from names, never from a shared generator's position, makes each
    tensor's drop mask independent of the order and thread in which tensors are merged.
    """
    digest = hashlib.sha256(f"{seed}\0{name}\0{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_drop(delta: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    """DARE: keep each entry with probability `density` and divide the survivors by `density`.

    torch.rand on the CPU fills the tensor serially from the generator, so the
    mask depends on the seed alone, not on torch's thread count.
    """
    if density >= 1.0:
        return delta
    generator = torch.Generator(device="cpu").manual_seed(seed)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    return delta.mul_(keep).div_(density)


@dataclass(frozen=True)
class TaskVectorMerge:
    """W_base + lambda * combine(w_i * sparsify(W_i - W_base)) for one tensor (see the module docstring)."""

    weights: tuple[tuple[str, float], ...]
    scale: float = 1.0  # lambda
    normalize: bool = False
    consensus: bool = False  # TIES sign election
    sparsify: str | None = None  # None | "magnitude" (TIES) | "random" (DARE)
    density: float = 1.0
    seed: int = 0

    @property
    def elementwise(self) -> bool:
        # Without trimming or dropping every entry is computed on its own, so the engine may stream row chunks.
        # The magnitude cut needs the whole tensor; the drop mask is drawn for the whole tensor.
        return self.sparsify is None

    @property
    def roles(self) -> tuple[str, ...]:
        return ("base",) + tuple(r for r, _ in self.weights)

    def compute(self, tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Works in place on the float32 inputs it is given."""
        base = tensors["base"]
        deltas = []
        for role, w in self.weights:
            delta = tensors[role].sub_(base)
            if self.sparsify == "magnitude":
                delta = keep_largest(delta, self.density)
            elif self.sparsify == "random":
                delta = random_drop(delta, self.density, tensor_seed(self.seed, name, role))
            deltas.append(delta.mul_(w))
        if self.consensus:
            merged, divisor = _sign_consensus(deltas, [w for _, w in self.weights])
        else:
            merged = deltas[0]
            for d in deltas[1:]:
                merged = merged.add_(d)
            # Summed in float32, as mergekit does, so that normalised results agree bit for bit.
            divisor = float(torch.tensor([w for _, w in self.weights], dtype=torch.float32).sum())
            if abs(divisor) < ZERO_DIVISOR:
                divisor = 1.0
        if self.normalize:
            merged = merged.div_(divisor)
        if self.scale != 1.0:
            merged = merged.mul_(self.scale)
        return merged.add_(base)

    def delta_coefficients(self) -> dict[str, float] | None:
        """{expert: c} with W = W_base + sum c (W_expert - W_base), the form write.adapter_factors writes as
        LoRA factors; None with a trim, drop or sign election, which act entry by entry."""
        if self.sparsify is not None or self.consensus:
            return None
        divisor = 1.0
        if self.normalize:  # compute()'s float32 sum, and its rule for a zero divisor
            divisor = float(torch.tensor([w for _, w in self.weights], dtype=torch.float32).sum())
            if abs(divisor) < ZERO_DIVISOR:
                divisor = 1.0
        return {role: self.scale * w / divisor for role, w in self.weights if w != 0.0}

    def describe(self) -> str:
        terms = " + ".join(f"{w:g}*tau_{r}" for r, w in self.weights)
        steps = []
        if self.sparsify == "magnitude":
            steps.append(f"trim to {self.density:g}")
        elif self.sparsify == "random":
            steps.append(f"drop to {self.density:g} (seed {self.seed})")
        if self.consensus:
            steps.append("sign election")
        if self.normalize:
            steps.append("normalised")
        return f"base + {self.scale:g} * ({terms})" + (f" [{', '.join(steps)}]" if steps else "")


def _sign_consensus(deltas: list[torch.Tensor], weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES elect + disjoint merge: keep the entries whose sign agrees with the sign of their sum.

    The elected sign is that of sum_i t_i (the total mass, TIES's "sum" rule), +1 where
    the sum is exactly 0. A zero entry (trimmed or dropped) agrees with no sign, so
    it neither contributes nor counts in the divisor.
    """
    total = deltas[0].clone()
    for d in deltas[1:]:
        total.add_(d)
    positive = total >= 0
    merged = torch.zeros_like(total)
    divisor = torch.zeros_like(total)
    for d, w in zip(deltas, weights):
        agrees = torch.where(positive, d > 0, d < 0)
        merged.add_(d * agrees)
        divisor.add_(agrees * w)
    divisor[divisor == 0] = 1.0
    return merged, divisor
