"""adapter_config.json, read with PEFT's semantics and checked against the factors it describes.

PEFT (0.21, tuners/lora/model.py and utils/other.py) gives each adapted module its rank and
alpha through `rank_pattern` / `alpha_pattern`: the first key, in the file's order, for which
`re.match(rf"(.*\\.)?({key})$", module)` matches; else the top-level `r` / `lora_alpha`. A module
is adapted when `target_modules` (a list: a module name or a name suffix after a dot; a string: a
regex that must match the whole module name; "all-linear": every linear layer but the output head)
matches it, unless `exclude_modules` does, within `layers_to_transform` where that is set.
The functions here copy those rules; tests/test_adapters.py checks them against PEFT's own.

A config that says one thing over factors that are another (a rank, a module it does not target,
a targeted kind of module with no factor anywhere) is refused: PEFT refuses the first, and the
others mean the file does not describe the adapter.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.read.shards import model_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT's LoraConfig defaults, used when a key is absent.
DEFAULT_R, DEFAULT_ALPHA = 8, 8
ALL_LINEAR = "all-linear"
# adapter_config.json settings that change the weights in ways not implemented here: refused when set.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "modules_to_save": "modules_to_save (whole modules trained beside the adapter)",
    "fan_in_fan_out": "fan_in_fan_out (transposed Conv1D weights)",
    "layer_replication": "layer_replication",
    "lora_bias": "lora_bias (trained biases in the adapter)",
    "target_parameters": "target_parameters (adapters on raw parameters)",
    "trainable_token_indices": "trainable_token_indices",
}


def read_config(folder: Path) -> dict:
    """The adapter's config, its types checked, every unsupported PEFT feature refused by name."""
    path = model_file(folder, ADAPTER_CONFIG)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SafeswapError(f"{path} is unreadable ({e.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise SafeswapError(f"{path} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise SafeswapError(f"{path}: peft_type {config.get('peft_type')!r} is not supported; only LORA adapters are")
    for key, what in _UNSUPPORTED.items():
        if config.get(key) not in (None, False, [], {}, "none"):
            raise SafeswapError(f"{path}: {what} is not supported; merge this adapter into the base with PEFT first")
    if config.get("bias", "none") != "none":
        raise SafeswapError(f"{path}: bias={config['bias']!r} (trained biases) is not supported; only bias='none' is")
    _check_types(config, path)
    return config


def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_alpha(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_types(config: dict, path: Path) -> None:
    if not _is_rank(config.get("r", DEFAULT_R)):
        raise SafeswapError(f"{path}: r is {config['r']!r}; it must be a positive integer")
    if not _is_alpha(config.get("lora_alpha", DEFAULT_ALPHA)):
        raise SafeswapError(f"{path}: lora_alpha is {config['lora_alpha']!r}; it must be a number")
    if not isinstance(config.get("use_rslora", False), bool):
        raise SafeswapError(f"{path}: use_rslora is {config['use_rslora']!r}; it must be true or false")
    for key, valid, what in (("rank_pattern", _is_rank, "a positive integer"), ("alpha_pattern", _is_alpha, "a number")):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            raise SafeswapError(f"{path}: {key} is {patterns!r}; it must map module patterns to values")
        for pattern, value in patterns.items():
            if not valid(value):
                raise SafeswapError(f"{path}: {key}[{pattern!r}] is {value!r}; it must be {what}")
            _compile(pattern, path, key)
    targets = config.get("target_modules")
    if targets is None:
        raise SafeswapError(f"{path}: target_modules is not set (PEFT would pick its defaults for the model type, "
                            "which safeswap does not guess); write the adapted modules there")
    if isinstance(targets, str):
        if targets.lower() != ALL_LINEAR:
            _compile(targets, path, "target_modules")
    elif not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise SafeswapError(f"{path}: target_modules is {targets!r}; it must be a list of names or a regex string")
    exclude = config.get("exclude_modules")
    if isinstance(exclude, str):
        _compile(exclude, path, "exclude_modules")
    elif exclude is not None and (not isinstance(exclude, list) or not all(isinstance(t, str) for t in exclude)):
        raise SafeswapError(f"{path}: exclude_modules is {exclude!r}; it must be a list of names or a regex string")


def _compile(pattern: str, path: Path, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise SafeswapError(f"{path}: {key} {pattern!r} is not a valid regular expression ({e})") from None


def pattern_key(patterns: dict, module: str) -> str | None:
    """PEFT's get_pattern_key: the first key (in order) matching a dotted suffix of module; None if none does."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


def module_rank_alpha(config: dict, module: str) -> tuple[int, float, str, str]:
    """(r, alpha, where r comes from, where alpha comes from) of one adapted module, as PEFT gives them."""
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    r_key, a_key = pattern_key(ranks, module), pattern_key(alphas, module)
    r = ranks[r_key] if r_key is not None else config.get("r", DEFAULT_R)
    alpha = alphas[a_key] if a_key is not None else config.get("lora_alpha", DEFAULT_ALPHA)
    r_from = f"rank_pattern[{r_key!r}]" if r_key is not None else "r"
    a_from = f"alpha_pattern[{a_key!r}]" if a_key is not None else "lora_alpha"
    return r, alpha, r_from, a_from


def module_scale(config: dict, module: str) -> float:
    """alpha / r, or alpha / sqrt(r) with use_rslora (PEFT's LoraLayer.update_layer), per module."""
    r, alpha, _, _ = module_rank_alpha(config, module)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _layer_index(config: dict, module: str) -> int | None:
    pattern = config.get("layers_pattern")
    if not pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", module)
    else:
        match = None
        for p in [pattern] if isinstance(pattern, str) else pattern:
            match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", module)
            if match is not None:
                break
    return int(match["idx"]) if match else None


def is_targeted(config: dict, module: str, linear_modules: frozenset[str] | set[str]) -> bool:
    """PEFT's check_target_module_exists for one module name (modules_to_save is refused before this).

    `linear_modules` is what "all-linear" expands to: the model's linear layers without the output head.
    """
    exclude = config.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, module):
                return False
        elif module in exclude or any(module.endswith(f".{e}") for e in exclude):
            return False
    targets = config["target_modules"]
    if isinstance(targets, str):
        if targets.lower() == ALL_LINEAR:
            return module in linear_modules
        return re.fullmatch(targets, module) is not None
    if module in targets:
        return True
    found = any(module.endswith(f".{t}") for t in targets)
    layers = config.get("layers_to_transform")
    if found and layers is not None and (not isinstance(layers, list) or layers):
        index = _layer_index(config, module)
        if index is None:
            return False
        return index == layers if isinstance(layers, int) else index in layers
    return found


def check_against_factors(config: dict, ranks: dict[str, int], modules: list[str], linear_modules: set[str],
                          role: str) -> None:
    """Refuse a config that does not describe its factors, in one line naming the module and both values.

    ranks: each adapted module's factor rank; modules: every module of the base that holds a 2-D weight
    (the candidates PEFT could adapt); linear_modules: those "all-linear" names.
    """
    where = f"{role} adapter"
    for module, rank in ranks.items():
        if not is_targeted(config, module, linear_modules):
            raise SafeswapError(f"{where}: it holds factors for {module}, which its target_modules "
                                f"{config['target_modules']!r} does not target")
        r, _, r_from, _ = module_rank_alpha(config, module)
        if r != rank:
            raise SafeswapError(f"{where}: {module} has factors of rank {rank}, but its adapter_config.json "
                                f"{r_from} says {r}")
    adapted_kinds = {m.rsplit(".", 1)[-1] for m in ranks}
    for module in modules:
        kind = module.rsplit(".", 1)[-1]
        if kind not in adapted_kinds and is_targeted(config, module, linear_modules):
            raise SafeswapError(f"{where}: its target_modules {config['target_modules']!r} targets {module}, "
                                f"but the adapter holds no factors for any {kind}")
