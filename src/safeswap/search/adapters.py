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
from safeswap.decide.methods import get_method
from safeswap.write.adapter_factors import Factors
from safeswap.write.adapter_output import AdapterResult, adapter_config, merge_factors, stored_tensors

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
    """Refuse, before any work, a method whose candidates are not adapters (the method's own not_low_rank fact)."""
    for method in methods:
        reason = get_method(method).not_low_rank
        if reason:
            raise SafeswapError(f"a search over LoRA experts takes only methods whose merge is again an adapter; "
                                f"{method} is not: {reason} (give full checkpoints to search it)")


@lru_cache(maxsize=2)
def open_experts(base: str, safety: str, language: str) -> Inputs:
    """The triple opened once per process (headers and the adapters' factors; the base's weights stay on disk)."""
    return open_inputs({"base": base, "safety": safety, "language": language})


def adapted_tensors(inputs: Inputs) -> list[str]:
    """Every tensor either expert adapts, in the base's order."""
    adapted = {name for role in EXPERT_ROLES for name in inputs.models[role].adapter.factors}
    return [name for name in inputs.tensor_names() if name in adapted]


def plan_factors(plan, inputs: Inputs) -> dict[str, Factors]:
    """The plan's merge as factors {tensor: (A, B)} (scale folded into B), exactly: the same factors a
    `merge --output adapter` of the plan writes (write/adapter_output.merge_factors); a tensor left at the
    base has none."""
    result = merge_factors(inputs, operations(plan, inputs), "F32")
    return {f"{module}.weight": ab for module, ab in result.factors.items()}


def role_factors(inputs: Inputs, role: str) -> dict[str, Factors]:
    """A reference model as factors: the base has none, an expert its own (scale folded into B)."""
    if role == "base":
        return {}
    return {name: (a, b * scale) for name, (a, b, scale) in inputs.models[role].adapter.factors.items()}


def write_candidate_adapter(folder: Path, factors: dict[str, Factors], base: str) -> Path:
    """A PEFT LoRA folder (adapter_config.json, adapter_model.safetensors) holding the factors on `base`, in the
    format `merge --output adapter` writes (lora_alpha == r for every module), float32. Same factors, same bytes."""
    from safetensors.torch import save

    result = AdapterResult({name.removesuffix(".weight"): ab for name, ab in factors.items()}, "F32")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / ADAPTER_WEIGHTS, save(stored_tensors(result), metadata={"format": "pt"}))
    atomic_write(folder / ADAPTER_CONFIG, json.dumps(adapter_config(result, str(base)), indent=1, sort_keys=True))
    return folder
