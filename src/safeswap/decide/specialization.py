"""How much each expert changed each unit of the base, streamed tensor by tensor.

For a scored tensor and expert X:  r_X = ||W_X - W_base||_F / ||W_base||_F
(the plain ||W_X - W_base||_F where ||W_base||_F <= 1e-8), computed in float32
in row chunks so that memory stays at one chunk per model.

Units pool the r of their tensors: a layer sums them, a module takes the root
of the sum of squares, a projection is one tensor. Scores are then normalised
over all units into p_X, and d = p_safety - p_language drives the norm rule.

The same pass accumulates <S - B, L - B> per tensor (one dot product on chunks
already in memory), from which each unit gets the cosine between the language
expert's update and the safety expert's: the direction rule's criterion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from safeswap.read.checkpoint import FLOAT_DTYPES
from safeswap.read.chunks import Workspace, all_finite, row_chunks
from safeswap.errors import SafeswapError
from safeswap.read.adapter import AdapterCheckpoint, LoraAdapter
from safeswap.read.inputs import Inputs
from safeswap.threads import worker_pool

GRANULARITIES = ("layer", "module", "projection")
CHUNK_ELEMENTS = 512 << 10  # per model and chunk: its float32 copies stay in the CPU cache (2.7x faster than 8M)
BASE_NORM_FLOOR = 1e-8
NORMALISE_EPS = 1e-8


@dataclass
class TensorStat:
    name: str
    layer: int
    module: str
    projection: str
    numel: int
    base_norm: float
    delta_safety: float
    delta_language: float
    dot: float | None = None  # <S - B, L - B>; None in statistics written before it was measured

    @property
    def r_safety(self) -> float:
        return relative_change(self.delta_safety, self.base_norm)

    @property
    def r_language(self) -> float:
        return relative_change(self.delta_language, self.base_norm)

    @property
    def cos(self) -> float | None:
        if self.dot is None:
            return None
        return cosine(self.dot, self.delta_safety ** 2, self.delta_language ** 2)

    def row(self) -> dict:
        return {**asdict(self), "r_safety": self.r_safety, "r_language": self.r_language, "cos": self.cos}


@dataclass
class UnitScore:
    unit: str
    layer: int
    module: str | None
    score_safety: float
    score_language: float
    projection: str | None = None
    p_safety: float = 0.0
    p_language: float = 0.0
    cos: float | None = None  # cosine of the unit's concatenated updates L - B and S - B

    @property
    def d(self) -> float:
        return self.p_safety - self.p_language

    def row(self) -> dict:
        return {**asdict(self), "d": self.d}


def relative_change(delta: float, base_norm: float) -> float:
    return delta / base_norm if base_norm > BASE_NORM_FLOOR else delta


def cosine(dot: float, square_safety: float, square_language: float) -> float:
    """<S - B, L - B> / (||S - B|| ||L - B||) from the dot and the squared norms; 0 where either update is 0.

    Clamped to [-1, 1]: float32 chunk sums can land a rounding error beyond it when L - B is parallel to S - B.
    """
    if square_safety <= 0.0 or square_language <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, dot / (math.sqrt(square_safety) * math.sqrt(square_language))))


_workspace = Workspace()


def _low_rank(model) -> LoraAdapter | None:
    return model.adapter if isinstance(model, AdapterCheckpoint) else None


def _norms(inputs: Inputs, name: str, experts: tuple[str, ...], allow_nonfinite: bool = False,
           dots: bool = True) -> tuple[list[float], list[float | None]]:
    """([||B||, ||X_1 - B||, ||X_2 - B||, ...], [<X_1 - B, X_2 - B>, <X_1 - B, X_3 - B>, ...]) of one tensor.

    In float32, chunk by chunk. Each model's chunk is read and converted once, whatever
    the number of experts. With dots, X_1 - B (the safety expert's update) stays in its
    own buffer while the others are read, so each dot product is one more reduction on
    chunks already in memory; without, the dots are None. A LoRA adapter expert is never
    read: its norm and its dots come from its factors (read.adapter), so B A is never
    formed. NaN/Inf is refused; with allow_nonfinite, non-finite entries count as zero.
    """
    base = inputs.base
    info = base.tensors[name]
    ws = _workspace
    low = [_low_rank(inputs.models[key]) for key in experts]
    squares = [0.0] * (1 + len(experts))
    products = [0.0] * (len(experts) - 1)
    for first, rows in row_chunks(info, CHUNK_ELEMENTS):
        nbytes = info.chunk_bytes(rows)
        b_stored = base.read(name, first, rows, out=ws.get("raw_a", nbytes))
        b = ws.floats("base", b_stored.numel()).view(b_stored.shape).copy_(b_stored)
        if allow_nonfinite:
            b.nan_to_num_(0.0, 0.0, 0.0)
        base_norm = torch.linalg.vector_norm(b).item()
        squares[0] += base_norm * base_norm
        lead = None  # X_1 - B of a full safety expert, kept for the dots
        for i, key in enumerate(experts):
            if low[i] is not None:
                if i and dots and lead is not None:
                    products[i - 1] += low[i].dot_rows(name, first, rows, lead)
                continue
            x = ws.floats("lead" if i == 0 and dots else "expert", b.numel()).view(b.shape)
            x.copy_(inputs.models[key].read(name, first, rows, out=ws.get("raw_b", nbytes)))
            if allow_nonfinite:
                x.nan_to_num_(0.0, 0.0, 0.0)
            # Sum squares of chunk norms (and the chunk dots) in float64: exact enough, order fixed by chunking.
            norm = torch.linalg.vector_norm(x.sub_(b)).item()
            squares[1 + i] += norm * norm
            if i == 0:
                lead = x
            elif dots:
                # A native multiply-and-sum, not torch.dot: BLAS's dot may split the sum by its own threads,
                # which made the same tensor's dot differ between runs.
                products[i - 1] += (torch.mul(lead, x, out=ws.floats("product", b.numel()).view(b.shape)).sum().item()
                                    if lead is not None else low[0].dot_rows(name, first, rows, x))
    norms = [math.sqrt(v) for v in squares]
    for i, adapter in enumerate(low):
        if adapter is not None:
            norms[1 + i] = adapter.delta_norm(name)
            if i and dots and low[0] is not None:
                products[i - 1] = low[0].dot(adapter, name)
    for who, value in zip(("base",) + tuple(experts), norms):
        if not math.isfinite(value):
            raise SafeswapError(
                f"tensor {name} holds NaN or Inf values in the {who} model (use --allow-nonfinite to merge anyway)"
            )
    return norms, products if dots else [None] * (len(experts) - 1)


def _check_finite(inputs: Inputs, name: str) -> None:
    """NaN/Inf check of an unscored tensor (norms, embeddings, LM head) in every input model."""
    for role, model in inputs.models.items():
        info = model.tensors[name]
        if info.dtype not in FLOAT_DTYPES:
            continue
        for first, rows in row_chunks(info, CHUNK_ELEMENTS):
            chunk = model.read(name, first, rows, out=_workspace.get("raw_a", info.chunk_bytes(rows)))
            if not all_finite(chunk):
                raise SafeswapError(
                    f"tensor {name} holds NaN or Inf values in the {role} model (use --allow-nonfinite to merge anyway)"
                )


def measure_many(inputs: Inputs, languages: list[str], on_tensor: Callable[[str], None] | None = None,
                 allow_nonfinite: bool = False, dots: bool = True) -> dict[str, list[TensorStat]]:
    """Statistics of every scored tensor for the safety expert against each language expert.

    With dots, each language's TensorStat carries its own <S - B, L - B> (the direction
    criterion's input; about a tenth more analysis time); without, dot is None. The base and
    the safety expert are read once for all languages. Two worker threads: reads (pread) and
    torch kernels both release the GIL, so one tensor's I/O overlaps another's arithmetic on
    the second core.
    """
    names = [n for n in inputs.tensor_names() if inputs.roles[n].scored]
    experts = ("safety", *languages)
    stats: dict[str, list[TensorStat]] = {lang: [] for lang in languages}
    with worker_pool() as pool:
        if not allow_nonfinite:  # scored tensors are checked through their norms below
            unscored = [n for n in inputs.tensor_names() if not inputs.roles[n].scored]
            list(pool.map(lambda n: _check_finite(inputs, n), unscored))
        measured = pool.map(lambda n: _norms(inputs, n, experts, allow_nonfinite, dots), names)
        for name, (norms, products) in zip(names, measured):
            role = inputs.roles[name]
            numel = inputs.base.tensors[name].numel
            for lang, delta, dot in zip(languages, norms[2:], products):
                stats[lang].append(TensorStat(name, role.layer, role.module, role.projection, numel,
                                              norms[0], norms[1], delta, dot))
            if on_tensor:
                on_tensor(name)
    return stats


def measure(inputs: Inputs, on_tensor: Callable[[str], None] | None = None,
            allow_nonfinite: bool = False, dots: bool = True) -> list[TensorStat]:
    """Statistics of every scored tensor of a base / safety / language triple, in storage order."""
    return measure_many(inputs, ["language"], on_tensor, allow_nonfinite, dots)["language"]


def unit_of(granularity: str, layer: int, module: str, tensor_name: str) -> str:
    """The unit id a scored tensor belongs to."""
    if granularity == "layer":
        return f"layer.{layer}"
    if granularity == "module":
        return f"layer.{layer}.{module}"
    if granularity == "projection":
        return tensor_name
    raise SafeswapError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")


def unit_scores(stats: Iterable[TensorStat], granularity: str) -> list[UnitScore]:
    """Pool tensor statistics into unit scores and normalise them (steps 2-4 of the rule).

    Each unit's cos is that of its tensors' updates concatenated: the sum of their dots over
    sqrt(sum ||S - B||^2) * sqrt(sum ||L - B||^2); None when a tensor's dot was not measured.
    """
    units: dict[str, UnitScore] = {}
    sums: dict[str, list] = {}  # unit -> [sum of dots (None once one is missing), sum ||S-B||^2, sum ||L-B||^2]
    for t in stats:
        uid = unit_of(granularity, t.layer, t.module, t.name)
        u = units.get(uid)
        if u is None:
            module = None if granularity == "layer" else t.module
            projection = None
            if granularity == "projection":
                projection = t.projection + (".bias" if t.name.endswith(".bias") else "")
            u = units[uid] = UnitScore(uid, t.layer, module, 0.0, 0.0, projection)
            sums[uid] = [0.0, 0.0, 0.0]
        acc = sums[uid]
        acc[0] = None if acc[0] is None or t.dot is None else acc[0] + t.dot
        acc[1] += t.delta_safety ** 2
        acc[2] += t.delta_language ** 2
        if granularity == "module":
            u.score_safety += t.r_safety ** 2
            u.score_language += t.r_language ** 2
        else:
            u.score_safety += t.r_safety
            u.score_language += t.r_language
    if granularity == "module":
        for u in units.values():
            u.score_safety, u.score_language = math.sqrt(u.score_safety), math.sqrt(u.score_language)
    total_s = sum(u.score_safety for u in units.values()) + NORMALISE_EPS
    total_l = sum(u.score_language for u in units.values()) + NORMALISE_EPS
    for uid, u in units.items():
        u.p_safety, u.p_language = u.score_safety / total_s, u.score_language / total_l
        dot, square_s, square_l = sums[uid]
        u.cos = None if dot is None else cosine(dot, square_s, square_l)
    # Layer order, attention before MLP, storage order within: plans and figures read top-down.
    order = {"attention": 0, "mlp": 1}
    ranked = sorted(enumerate(units.values()), key=lambda iu: (iu[1].layer, order.get(iu[1].module, 2), iu[0]))
    return [u for _, u in ranked]
