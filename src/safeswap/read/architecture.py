"""Tensor name -> (layer, module, projection), per model family, kept as data.

Adding a family is adding one entry to FAMILIES. Inside a decoder layer every
tensor belongs to one module:

- "attention": the scored attention projections, plus unscored members such as
  Qwen3's q_norm/k_norm, which travel with the attention unit;
- "mlp": the scored feed-forward projections;
- "norm": the layer's own norms (never scored; in module mode they stay with
  the language expert);
- "other": anything unrecognised inside a layer (treated like a norm).

Tensors outside the layers (embeddings, final norm, LM head) are "outside".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from safeswap.errors import SafeswapError

ATTENTION, MLP, NORM, OTHER, OUTSIDE = "attention", "mlp", "norm", "other", "outside"


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    norms: tuple[str, ...]
    attention_unscored: tuple[str, ...] = ()
    layer_prefix: str = "model.layers."


_LLAMA_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_LLAMA_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")
_GEMMA2_NORMS = _LLAMA_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")
_QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("LlamaForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS),
    Family("mistral", ("MistralForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS),
    Family("qwen2", ("Qwen2ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS),
    Family("qwen3", ("Qwen3ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, _QK_NORMS),
    Family("gemma", ("GemmaForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS),
    Family("gemma2", ("Gemma2ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _GEMMA2_NORMS),
    Family("gemma3", ("Gemma3ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _GEMMA2_NORMS, _QK_NORMS),
    Family(
        "phi3",
        ("Phi3ForCausalLM",),
        ("self_attn.qkv_proj", "self_attn.o_proj"),
        ("mlp.gate_up_proj", "mlp.down_proj"),
        _LLAMA_NORMS,
    ),
)


@dataclass(frozen=True)
class TensorRole:
    """Where a tensor sits in the model and whether it is scored."""

    layer: int | None
    module: str
    projection: str
    scored: bool


def supported_architectures() -> list[str]:
    return sorted(a for f in FAMILIES for a in f.architectures)


def family_for(architecture: str | None, role: str = "model") -> Family:
    if not architecture:
        raise SafeswapError(f"{role} model: config.json has no 'architectures' entry")
    for family in FAMILIES:
        if architecture in family.architectures:
            return family
    raise SafeswapError(
        f"{role} model: unsupported architecture {architecture}; supported: {', '.join(supported_architectures())}"
    )


_PARAM_SUFFIX = re.compile(r"\.(weight|bias)$")


def classify(family: Family, name: str) -> TensorRole:
    """The role of one tensor name under a family's naming scheme."""
    if not name.startswith(family.layer_prefix):
        return TensorRole(None, OUTSIDE, name, False)
    rest = name[len(family.layer_prefix):]
    index, _, member = rest.partition(".")
    if not index.isdigit():
        return TensorRole(None, OUTSIDE, name, False)
    layer = int(index)
    path = _PARAM_SUFFIX.sub("", member)
    short = path.rsplit(".", 1)[-1]
    if path in family.attention:
        return TensorRole(layer, ATTENTION, short, True)
    if path in family.mlp:
        return TensorRole(layer, MLP, short, True)
    if path in family.attention_unscored:
        return TensorRole(layer, ATTENTION, short, False)
    if path in family.norms:
        return TensorRole(layer, NORM, short, False)
    return TensorRole(layer, OTHER, path, False)


def config_levels(config: dict) -> tuple[dict, dict]:
    """The config and its nested text_config (multimodal configs keep the decoder's settings there), in lookup order."""
    nested = config.get("text_config")
    return config, nested if isinstance(nested, dict) else {}


def config_value(config: dict, key: str, accept=lambda value: True):
    """The first value of `key` in config_levels(config) that accept() takes; None when there is none."""
    for cfg in config_levels(config):
        if key in cfg and accept(cfg[key]):
            return cfg[key]
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def num_layers(config: dict) -> int:
    """Decoder layer count from a config (text_config for nested configs)."""
    n = config_value(config, "num_hidden_layers", _is_count)
    if n is None:
        raise SafeswapError("config.json has no num_hidden_layers")
    return n


def vocab_size(config: dict) -> int | None:
    return config_value(config, "vocab_size", _is_count)
