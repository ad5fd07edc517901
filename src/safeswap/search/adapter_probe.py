"""The probe of a search over LoRA experts: the base loaded once per process, each candidate's factors swapped in.

The base is loaded as the probe loads any model (float32, eval mode) and given, once, a PEFT
LoRA of rank R = max over modules of r_S + r_L on every module either expert adapts, with
lora_alpha = R (scale 1: the factors carry their scales in B). A candidate is then its factors
copied into those layers, zero-padded past its own rank (the padding adds 0 to B A), and
zeros where it leaves the base: W x + B (A x) with the candidate's exact B A. Nothing is merged,
written or loaded per candidate.
"""

from __future__ import annotations

from functools import lru_cache

from safeswap.search.adapters import EXPERT_ROLES, adapted_tensors, open_experts, plan_factors, role_factors
from safeswap.write.adapter_factors import Factors


class SwappableAdapter:
    """The base with one LoRA layer per adapted module, whose factors are replaced in place."""

    def __init__(self, base: str, safety: str, language: str, device: str | None = None):
        from peft import LoraConfig, get_peft_model

        from safeswap.read.sources import resolve_model
        from safeswap.search.probe import load_model

        self.inputs = open_experts(base, safety, language)
        names = adapted_tensors(self.inputs)
        rank = max(sum(self.inputs.models[role].adapter.factors[name][0].shape[0] for role in EXPERT_ROLES
                       if name in self.inputs.models[role].adapter.factors) for name in names)
        model, self.tokenizer = load_model(resolve_model(base, "base"), device)
        modules = [name.removesuffix(".weight") for name in names]
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=modules, lora_dropout=0.0, bias="none")
        # The transformers model inside PEFT's wrapper, its target modules now LoRA layers: the probe calls it as
        # it calls any model (PEFT's wrapper would hide the forward's cache keyword).
        self.model = get_peft_model(model, config).base_model.model.eval()
        found = dict(self.model.named_modules())
        self.layers = {name: found[module] for name, module in zip(names, modules)}

    def load(self, factors: dict[str, Factors]) -> None:
        """Make the model W + B A with these factors on their modules and the base everywhere else."""
        import torch

        with torch.no_grad():
            for name, layer in self.layers.items():
                a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                a.zero_()
                b.zero_()
                if name in factors:
                    fa, fb = factors[name]
                    a[:fa.shape[0]].copy_(fa)
                    b[:, :fb.shape[1]].copy_(fb)


@lru_cache(maxsize=1)
def swappable(base: str, safety: str, language: str, device: str | None) -> SwappableAdapter:
    """One loaded base per process (a pool worker or a Ray worker keeps its own across candidates)."""
    return SwappableAdapter(base, safety, language, device)


def candidate_model(context, plan):
    """(model, tokenizer) that is a candidate: its plan's factors swapped into the process's base."""
    probe = swappable(context.base, context.safety, context.language, context.device)
    probe.load(plan_factors(plan, probe.inputs))
    return probe.model, probe.tokenizer


def role_model(context, role: str):
    """(model, tokenizer) that is the base (no factors) or one expert (its own factors)."""
    probe = swappable(context.base, context.safety, context.language, context.device)
    probe.load(role_factors(probe.inputs, role))
    return probe.model, probe.tokenizer


def load_adapter_model(folder, base: str, device: str | None = None):
    """A PEFT adapter folder on the base, loaded as the probe loads a model (float32, eval), with the base's
    tokenizer: the final evaluation's perplexity of an expert or a candidate, from the folder its answers came from."""
    from peft import PeftModel

    from safeswap.read.sources import resolve_model
    from safeswap.search.probe import load_model

    model, tokenizer = load_model(resolve_model(base, "base"), device)
    return PeftModel.from_pretrained(model, str(folder)).base_model.model.eval(), tokenizer
