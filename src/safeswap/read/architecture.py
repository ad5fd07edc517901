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

Each family also says, as data, which config setting sizes which dimension of which
tensor (SHAPES): check_config_describes_tensors refuses a config.json that does not
describe its tensors (a layer count over fewer layers, a hidden size, heads x head size
or vocabulary size the shapes contradict), which transformers would otherwise load by
filling the difference with random weights or fail on deep inside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from safeswap.errors import SafeswapError

ATTENTION, MLP, NORM, OTHER, OUTSIDE = "attention", "mlp", "norm", "other", "outside"


# (tensor member inside a layer, or a whole name outside, dimension, size name from config_sizes)
Shape = tuple[str, int, str]


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    norms: tuple[str, ...]
    attention_unscored: tuple[str, ...] = ()
    layer_prefix: str = "model.layers."
    shapes: tuple[Shape, ...] = ()  # see SHAPES; norms (sized hidden) and outside tensors are added by shape_rules


_LLAMA_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_LLAMA_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")
_GEMMA2_NORMS = _LLAMA_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")
_QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")

# Which setting sizes which dimension ([out, in] for a linear weight; a bias has only out).
_LLAMA_SHAPES: tuple[Shape, ...] = (
    ("self_attn.q_proj", 0, "q"), ("self_attn.q_proj", 1, "hidden"),
    ("self_attn.k_proj", 0, "kv"), ("self_attn.k_proj", 1, "hidden"),
    ("self_attn.v_proj", 0, "kv"), ("self_attn.v_proj", 1, "hidden"),
    ("self_attn.o_proj", 0, "hidden"), ("self_attn.o_proj", 1, "q"),
    ("mlp.gate_proj", 0, "intermediate"), ("mlp.gate_proj", 1, "hidden"),
    ("mlp.up_proj", 0, "intermediate"), ("mlp.up_proj", 1, "hidden"),
    ("mlp.down_proj", 0, "hidden"), ("mlp.down_proj", 1, "intermediate"),
)
_QK_NORM_SHAPES: tuple[Shape, ...] = (("self_attn.q_norm", 0, "head_dim"), ("self_attn.k_norm", 0, "head_dim"))
_PHI3_SHAPES: tuple[Shape, ...] = (
    ("self_attn.qkv_proj", 0, "qkv"), ("self_attn.qkv_proj", 1, "hidden"),
    ("self_attn.o_proj", 0, "hidden"), ("self_attn.o_proj", 1, "q"),
    ("mlp.gate_up_proj", 0, "gate_up"), ("mlp.gate_up_proj", 1, "hidden"),
    ("mlp.down_proj", 0, "hidden"), ("mlp.down_proj", 1, "intermediate"),
)
# Outside the layers, by full name (a tied model has no lm_head).
_OUTSIDE_SHAPES: tuple[Shape, ...] = (
    ("model.embed_tokens.weight", 0, "vocab"), ("model.embed_tokens.weight", 1, "hidden"),
    ("lm_head.weight", 0, "vocab"), ("lm_head.weight", 1, "hidden"), ("model.norm.weight", 0, "hidden"),
)

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("LlamaForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, shapes=_LLAMA_SHAPES),
    Family("mistral", ("MistralForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, shapes=_LLAMA_SHAPES),
    Family("qwen2", ("Qwen2ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, shapes=_LLAMA_SHAPES),
    Family("qwen3", ("Qwen3ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, _QK_NORMS,
           shapes=_LLAMA_SHAPES + _QK_NORM_SHAPES),
    Family("gemma", ("GemmaForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _LLAMA_NORMS, shapes=_LLAMA_SHAPES),
    Family("gemma2", ("Gemma2ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _GEMMA2_NORMS, shapes=_LLAMA_SHAPES),
    Family("gemma3", ("Gemma3ForCausalLM",), _LLAMA_ATTN, _LLAMA_MLP, _GEMMA2_NORMS, _QK_NORMS,
           shapes=_LLAMA_SHAPES + _QK_NORM_SHAPES),
    Family(
        "phi3",
        ("Phi3ForCausalLM",),
        ("self_attn.qkv_proj", "self_attn.o_proj"),
        ("mlp.gate_up_proj", "mlp.down_proj"),
        _LLAMA_NORMS,
        shapes=_PHI3_SHAPES,
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


SIZE_SETTINGS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "vocab_size")


def check_config_types(config: dict, role: str) -> None:
    """Every size setting present is a positive integer (null counts as absent): a "64" or 64.0 would
    otherwise compare unequal to 64 and be reported as two models differing."""
    for cfg in config_levels(config):
        for key in SIZE_SETTINGS:
            value = cfg.get(key)
            if value is not None and not (_is_count(value) and value > 0):
                raise SafeswapError(f"{role} model: config.json {key} is {value!r}; it must be a positive integer")


def config_sizes(config: dict) -> dict[str, tuple[int, str]]:
    """Each size the shape table names -> (value, how config.json gives it), for the settings present.

    head_dim is the config's own when given (Gemma 2, Qwen 3), else hidden_size / num_attention_heads;
    num_key_value_heads defaults to num_attention_heads (no grouped-query attention)."""
    get = {key: config_value(config, key, _is_count) for key in
           ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")}
    sizes: dict[str, tuple[int, str]] = {}
    hidden, heads = get["hidden_size"], get["num_attention_heads"]
    if hidden:
        sizes["hidden"] = (hidden, f"hidden_size {hidden}")
    if get["intermediate_size"]:
        n = get["intermediate_size"]
        sizes["intermediate"] = (n, f"intermediate_size {n}")
        sizes["gate_up"] = (2 * n, f"2 x intermediate_size {n} = {2 * n}")
    if get["vocab_size"]:
        sizes["vocab"] = (get["vocab_size"], f"vocab_size {get['vocab_size']}")
    head_dim = get["head_dim"] or (hidden // heads if hidden and heads and hidden % heads == 0 else None)
    if head_dim and heads:
        kv = get["num_key_value_heads"] or heads
        shown = f"head_dim {head_dim}" if get["head_dim"] else f"hidden_size {hidden} / num_attention_heads {heads} = {head_dim}"
        sizes["head_dim"] = (head_dim, shown)
        sizes["q"] = (heads * head_dim, f"num_attention_heads {heads} x head_dim {head_dim} = {heads * head_dim}")
        sizes["kv"] = (kv * head_dim, f"num_key_value_heads {kv} x head_dim {head_dim} = {kv * head_dim}")
        qkv = (heads + 2 * kv) * head_dim
        sizes["qkv"] = (qkv, f"(num_attention_heads {heads} + 2 x num_key_value_heads {kv}) x head_dim {head_dim} = {qkv}")
    return sizes


def _layer_text(layers: list[int]) -> str:
    if not layers:
        return "no layers"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]} ({len(layers)} layers)" if len(layers) > 1 else f"layer {layers[0]} only"
    return "layers " + ", ".join(map(str, layers[:8])) + (" ..." if len(layers) > 8 else "")


def check_config_describes_tensors(family: Family, config: dict, shapes: dict[str, tuple[int, ...]], role: str) -> None:
    """Refuse a config.json whose settings the tensors contradict, in one line naming the setting, its value
    and what the tensors say: the layer count against the layer indices present, then every size in the
    family's shape table (hidden, intermediate, heads x head size, vocabulary)."""
    n = num_layers(config)
    present = sorted({role_.layer for role_ in (classify(family, name) for name in shapes) if role_.layer is not None})
    if present != list(range(n)):
        raise SafeswapError(f"{role} model: config.json says num_hidden_layers {n}, but the tensors hold {_layer_text(present)}")
    sizes = config_sizes(config)
    rules = [(f"{family.layer_prefix}{layer}.{member}.", dim, size) for layer in present
             for member, dim, size in family.shapes + tuple((norm, 0, "hidden") for norm in family.norms)]
    rules += [(name, dim, size) for name, dim, size in _OUTSIDE_SHAPES]
    for prefix, dim, size in rules:
        if size not in sizes:
            continue  # a setting the config does not give cannot contradict anything
        expected, shown = sizes[size]
        for name in (prefix + "weight", prefix + "bias") if prefix.endswith(".") else (prefix,):
            shape = shapes.get(name)
            if shape is not None and dim < len(shape) and shape[dim] != expected:
                raise SafeswapError(f"{role} model: config.json gives {shown}, but {name} has {shape[dim]} "
                                    f"in dimension {dim} (shape {list(shape)})")
