"""A search over LoRA experts: each candidate is itself an adapter, built from its plan's operations, never merged.

When both experts are LoRA adapters over the base, a candidate of an exact method (a take or
an affine blend per tensor: adaptive, layer-swap, linear) is exactly the adapter whose factors
write/adapter_factors.py composes from its operations: rank r_S + r_L where it blends, one
expert's factors where it takes, nothing where it keeps the base. The probe swaps these
factors into one loaded base (adapter_probe.py); the generation stage and the final evaluation
get them as a PEFT adapter folder (write_candidate_adapter), which every backend runs on the base.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from safeswap.decide.planning import operations
from safeswap.errors import SafeswapError
from safeswap.files import atomic_write
from safeswap.read.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter_folder
from safeswap.read.inputs import Inputs, open_inputs
from safeswap.write.adapter_factors import Factors, compose, delta_coefficients

# Methods whose every operation is a take or an affine blend, so a candidate is exactly an adapter.
# TIES's trim, DARE's drop and SLERP's arc are not low-rank: they need full weights.
EXACT_METHODS = ("adaptive", "layer-swap", "linear", "task-arithmetic")
EXPERT_ROLES = ("safety", "language")


def adapter_experts(safety: str, language: str) -> bool:
    """Whether the search's experts are LoRA adapters (both), or full checkpoints (both); one of each is refused."""
    kinds = {role: Path(ref).expanduser().is_dir() and is_adapter_folder(Path(ref).expanduser())
             for role, ref in (("safety", safety), ("language", language))}
    if kinds["safety"] != kinds["language"]:
        adapter = next(role for role, is_adapter in kinds.items() if is_adapter)
        raise SafeswapError(f"the {adapter} expert is a LoRA adapter and the other a full checkpoint; a search takes "
                            "two adapters over --base or two full checkpoints (merge the adapter into its base with "
                            "PEFT's merge_and_unload)")
    return kinds["safety"]


def check_exact_methods(methods: list[str]) -> None:
    """Refuse, before any work, a method whose candidates are not adapters."""
    inexact = [m for m in methods if m not in EXACT_METHODS]
    if inexact:
        raise SafeswapError(f"a search over LoRA experts takes only methods whose merge is again an adapter "
                            f"({', '.join(EXACT_METHODS)}); {', '.join(inexact)} is not low-rank (give full "
                            "checkpoints to search it)")


@lru_cache(maxsize=2)
def open_experts(base: str, safety: str, language: str) -> Inputs:
    """The triple opened once per process (headers and the adapters' factors; the base's weights stay on disk)."""
    return open_inputs({"base": base, "safety": safety, "language": language})


def adapted_tensors(inputs: Inputs) -> list[str]:
    """Every tensor either expert adapts, in the base's order."""
    adapted = {name for role in EXPERT_ROLES for name in inputs.models[role].adapter.factors}
    return [name for name in inputs.tensor_names() if name in adapted]


def plan_factors(plan, inputs: Inputs) -> dict[str, Factors]:
    """The plan's merge as factors {tensor: (A, B)} (scale folded into B), exactly; a tensor left at the base has none.

    Only adapted tensors can differ from the base: elsewhere both experts are the base, and any
    combination of them is too."""
    ops = operations(plan, inputs)
    factors = {}
    for name in adapted_tensors(inputs):
        coefficients = delta_coefficients(ops[name])
        if coefficients is None:
            raise SafeswapError(f"{plan.method}: the operation on {name} ({ops[name].describe()}) is not a blend of "
                                "the experts, so the merge is no adapter")
        experts = {role: inputs.models[role].adapter.factors[name] for role in EXPERT_ROLES
                   if name in inputs.models[role].adapter.factors}
        composed = compose(coefficients, experts)
        if composed is not None:
            factors[name] = composed
    return factors


def role_factors(inputs: Inputs, role: str) -> dict[str, Factors]:
    """A reference model as factors: the base has none, an expert its own (scale folded into B)."""
    if role == "base":
        return {}
    return {name: (a, b * scale) for name, (a, b, scale) in inputs.models[role].adapter.factors.items()}


def write_candidate_adapter(folder: Path, factors: dict[str, Factors], base: str) -> Path:
    """A PEFT LoRA folder (adapter_config.json, adapter_model.safetensors) holding the factors on `base`.

    Each module keeps its own rank, with lora_alpha equal to it (its scale is already in B), through
    rank_pattern and alpha_pattern where it differs from the most common rank; vLLM and SGLang read one
    lora_alpha / r, which is 1 for every module. Same factors, same bytes."""
    import torch
    from safetensors.torch import save

    if not factors:
        raise SafeswapError("the candidate changes no adapted module of the base; there is no adapter to write")
    modules = {name.removesuffix(".weight"): ab for name, ab in factors.items()}
    ranks = {module: int(a.shape[0]) for module, (a, _) in modules.items()}
    counts: dict[int, int] = {}
    for r in ranks.values():
        counts[r] = counts.get(r, 0) + 1
    rank = max(counts, key=lambda r: (counts[r], r))
    pattern = {module: r for module, r in sorted(ranks.items()) if r != rank}
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base),
              "r": rank, "lora_alpha": rank, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
              "target_modules": sorted(modules), "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
              "fan_in_fan_out": False, "inference_mode": True}
    tensors = {}
    for module in sorted(modules):
        a, b = modules[module]
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(torch.float32).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(torch.float32).contiguous()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / ADAPTER_WEIGHTS, save(tensors, metadata={"format": "pt"}))
    atomic_write(folder / ADAPTER_CONFIG, json.dumps(config, indent=1, sort_keys=True))
    return folder
