"""`--output adapter`: a merge of LoRA experts written as one PEFT LoRA adapter, exactly, instead of full weights.

The same pipeline decides (or replays) the plan and turns it into one operation per tensor;
this writer then takes the place of the shard engine. Every operation must be the base
plus a weighted sum of the experts' updates (write.adapter_factors), which LoRA factors
express exactly; the methods whose results are not (TIES, DARE, SLERP) are refused before
any work, by their `not_low_rank` fact. The experts are adapters without modules_to_save,
so every tensor outside their adapted modules is the base's own and the adapter holds
factors only.

Each module's scale is folded into its B, so the adapter's own scale is 1 everywhere:
lora_alpha == r for every module, per-module ranks given by equal rank_pattern and
alpha_pattern entries (vLLM and SGLang read one global lora_alpha / r). A module the merge
leaves at the base's weights is omitted and not targeted (PEFT cannot hold a rank-0 module).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from safeswap.decide.methods import get_method
from safeswap.decide.plan_file import MergePlan
from safeswap.errors import SafeswapError
from safeswap.files import sha256_file
from safeswap.merged_folder import PLAN_FILENAME
from safeswap.read.adapter import AdapterCheckpoint
from safeswap.read.adapter_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from safeswap.read.checkpoint import DTYPES, TORCH_TO_SAFETENSORS
from safeswap.read.inputs import Inputs
from safeswap.write.adapter_factors import Factors, compose, delta_coefficients
from safeswap.write.manifest import write_manifest
from safeswap.write.model_card import write_model_card
from safeswap.write.outputs import CONFIG_DTYPES, copy_tokenizer_files, write_figures

OUTPUT_KINDS = ("checkpoint", "adapter")
# vLLM's accepted --max-lora-rank values (vllm/config/lora.py).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_PREFIX = "base_model.model."


def check_output_kind(output: str) -> str:
    if output not in OUTPUT_KINDS:
        raise SafeswapError(f"--output {output!r}: choose {' or '.join(OUTPUT_KINDS)}")
    return output


def check_method(method: str) -> None:
    """Refuse, before any work, a method whose result has no exact low-rank form."""
    reason = get_method(method).not_low_rank
    if reason:
        raise SafeswapError(f"--output adapter cannot write a {method} merge: {reason}; use --output checkpoint")


def check_experts(inputs: Inputs) -> None:
    for role, model in inputs.models.items():
        if role != "base" and not isinstance(model, AdapterCheckpoint):
            raise SafeswapError(f"--output adapter needs every expert to be a LoRA adapter over --base, "
                                f"but the {role} expert {model.folder} is a full checkpoint")


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts that holds `rank`; None above its largest."""
    return next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= rank), None)


@dataclass(frozen=True)
class AdapterResult:
    """One merge as LoRA factors: module name -> (A, B) in float32, the scale in B, in the base's order."""

    factors: dict[str, Factors]
    dtype: str  # safetensors name of the stored factors

    @property
    def ranks(self) -> dict[str, int]:
        return {module: a.shape[0] for module, (a, _) in self.factors.items()}

    @property
    def rank(self) -> int:
        """The top-level r: the most common rank (the smaller on a tie)."""
        counts = Counter(self.ranks.values())
        return min(counts, key=lambda r: (-counts[r], r))

    def summary(self) -> dict:
        ranks = self.ranks
        largest = max(ranks.values())
        return {"modules": len(ranks), "rank": self.rank, "smallest_rank": min(ranks.values()), "largest_rank": largest,
                "vllm_max_lora_rank": vllm_max_lora_rank(largest), "dtype": CONFIG_DTYPES[self.dtype]}


def factor_dtype(view: Inputs, override: str | None) -> str:
    """--dtype, else the experts' stored factor dtype (float32 where they differ)."""
    if override:
        return override
    stored = {m.adapter.dtype for role, m in view.models.items() if role != "base"}
    return stored.pop() if len(stored) == 1 else "F32"


def merge_factors(view: Inputs, ops: dict, dtype: str, allow_nonfinite: bool = False) -> AdapterResult:
    """Every tensor's operation as factors; refuses, naming the tensor, one that has no exact low-rank form,
    and (unless allow_nonfinite) factors holding NaN or Inf once stored in `dtype`."""
    experts = {role: m.adapter.factors for role, m in view.models.items() if role != "base"}
    factors = {}
    for name in view.tensor_names():
        coefficients = delta_coefficients(ops[name])
        if coefficients is None:
            raise SafeswapError(f"--output adapter: tensor {name} is merged as {ops[name].describe()}, which is not "
                                "the base plus a weighted sum of the experts' updates (weights summing to 1), "
                                "so it has no exact LoRA form; use --output checkpoint")
        composed = compose(coefficients, {role: f[name] for role, f in experts.items()
                                          if role in coefficients and name in f})
        if composed is not None:
            if not allow_nonfinite and not all(bool(torch.isfinite(f.to(DTYPES[dtype][0])).all()) for f in composed):
                raise SafeswapError(f"--output adapter: the factors of {name[: -len('.weight')]} hold NaN or Inf as "
                                    f"{CONFIG_DTYPES[dtype]} (use --allow-nonfinite to write them anyway)")
            factors[name[: -len(".weight")]] = composed
    return AdapterResult(factors, dtype)


def require_update(result: AdapterResult) -> AdapterResult:
    """A merge written as an adapter must change some module (PEFT cannot load an adapter of no module)."""
    if not result.factors:
        raise SafeswapError("--output adapter: the merge leaves every module at the base's weights; there is no adapter to write")
    return result


def adapter_config(result: AdapterResult, base_ref: str) -> dict:
    """PEFT's LoraConfig fields, lora_alpha == r for every module."""
    r = result.rank
    patterns = {module: rank for module, rank in result.ranks.items() if rank != r}
    return {
        "alpha_pattern": dict(patterns),
        "base_model_name_or_path": base_ref,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": r,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": patterns,
        "target_modules": list(result.factors),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def stored_tensors(result: AdapterResult) -> dict[str, torch.Tensor]:
    """The factors as PEFT saves them: base_model.model.<module>.lora_A.weight / lora_B.weight."""
    torch_dtype = DTYPES[result.dtype][0]
    tensors = {}
    for module, (a, b) in result.factors.items():
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = a.to(torch_dtype).contiguous()
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = b.to(torch_dtype).contiguous()
    return tensors


def write_adapter(view: Inputs, plan: MergePlan, result: AdapterResult, folder: Path, input_hashes: dict,
                  command: str | None, final_path: Path) -> dict:
    """adapter_config.json, adapter_model.safetensors, tokenizer, plan, figures, card and manifest, into `folder`
    (which becomes `final_path`, the path the card's vLLM command names); returns the summary."""
    from safetensors.torch import save_file

    base_ref = str(plan.models["base"]["path"])
    config = adapter_config(result, base_ref)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(stored_tensors(result), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    copy_tokenizer_files(view, plan, folder)
    write_figures(plan, folder)
    plan_path = plan.save(folder / PLAN_FILENAME)
    summary = {**result.summary(), "path": str(final_path)}
    write_model_card(plan, folder, command, adapter=summary)
    outputs = {name: sha256_file(folder / name) for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)}
    write_manifest(folder, hashlib.sha256(plan_path.read_bytes()).hexdigest(), input_hashes, outputs)
    return summary


def summary_line(summary: dict) -> str:
    ranks = (f"rank {summary['rank']}" if summary["smallest_rank"] == summary["largest_rank"]
             else f"ranks {summary['smallest_rank']}-{summary['largest_rank']} (r {summary['rank']})")
    need = summary["vllm_max_lora_rank"]
    serve = (f"vLLM needs --max-lora-rank {need}" if need is not None else
             f"its largest rank is above vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]})")
    return f"{summary['modules']} modules, {ranks}, {summary['dtype']} factors; {serve}"


def verify_adapter(folder: Path, view: Inputs, ops: dict) -> int:
    """Every module's stored factors equal what the plan's inputs give (the taken ones: the source's A and
    scale * B), byte for byte in the stored dtype. Returns the number of modules checked."""
    from safetensors.torch import load_file

    stored = load_file(str(folder / ADAPTER_WEIGHTS))
    dtype = {t.dtype for t in stored.values()}
    # allow_nonfinite: a folder written with --allow-nonfinite is checked byte for byte like any other
    expected = stored_tensors(merge_factors(view, ops, TORCH_TO_SAFETENSORS[dtype.pop()] if len(dtype) == 1 else "F32",
                                            allow_nonfinite=True))
    for key in sorted(set(expected) | set(stored)):
        if key not in stored:
            raise SafeswapError(f"{ADAPTER_WEIGHTS} lacks {key}, which the plan's inputs give")
        if key not in expected:
            raise SafeswapError(f"{ADAPTER_WEIGHTS} holds {key}, which the plan's inputs do not give")
        if stored[key].dtype != expected[key].dtype or not torch.equal(stored[key].view(torch.uint8),
                                                                        expected[key].view(torch.uint8)):
            raise SafeswapError(f"{key} differs from the factors the plan's inputs give")
    return len(expected) // 2



def adapter_bytes(inputs: Inputs) -> int:
    """An upper bound of one output's size: every expert's factors, in float32."""
    return sum((a.numel() + b.numel()) * 4 for role, m in inputs.models.items() if role != "base"
               for a, b, _ in m.adapter.factors.values())


def write_adapters(views: dict, keys: dict, plans: dict, results: dict, settings, needed: int,
                   settled_inputs: Callable[[], dict]) -> dict:
    """One adapter folder per language (OUT, or OUT/<code>), atomically, as the shard writer does for checkpoints.

    settled_inputs() gives each language's input hashes once the pipeline has checked them and recorded them
    in the plans (inside the atomic output: a refusal there leaves nothing behind)."""
    from safeswap.write.writer import atomic_output

    summaries = {}
    with atomic_output(settings.out, settings.force, needed) as tmp:
        subsets = settled_inputs()
        for code, view in views.items():
            folder = tmp if code is None else tmp / code
            folder.mkdir(exist_ok=True)
            final = (settings.out if code is None else settings.out / code).absolute()
            summaries[code] = write_adapter(view, plans[code], results[code], folder, subsets[code], settings.command,
                                            final)
    return summaries
