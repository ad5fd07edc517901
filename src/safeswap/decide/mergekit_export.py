"""A safeswap plan as a mergekit (0.1.5) configuration that merges to the same weights.

- linear, task-arithmetic, ties: mergekit's method of the same name with the same
  parameters (mergekit's `models:` form). mergekit computes in `dtype: float32` and
  rounds once to `out_dtype`, as safeswap does.
- adaptive and layer-swap (unit plans): mergekit's `linear` with normalize off and
  one slice per decoder layer. In slice i each expert's `weight` is a list of
  conditions, first match wins: the tensors of layer i whose unit is not taken from
  the language expert (filters are tensor-name prefixes, e.g.
  `model.layers.3.self_attn.q_proj.`), then the rest of layer i (`model.layers.3.`),
  then a condition without filter that mergekit reaches only for the embeddings,
  final norm and LM head (planned with the first and last slice). A taken unit is
  weight 1 for its expert and 0 for the other; a blend is alpha and 1 - alpha.
- slerp: mergekit's slerp with the language expert as `base_model`, which mergekit
  interpolates from (its t = 0), and the safety expert as the other model, so the
  plan's `t` (the safety expert's share) is mergekit's `t` unchanged.
- dare-linear, dare-ties: exported as mergekit's dare_linear / dare_ties for
  reference only: mergekit draws its own random masks and rescales to the L1 norm,
  so its weights differ from safeswap's seeded ones (the YAML says so).

The tensor-to-unit rules are not restated here: every condition comes from the
plan's own method.operation() on the family's tensor names, the same call the
merge engine makes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from safeswap.read.architecture import classify, config_levels, family_for
from safeswap.errors import SafeswapError
from safeswap.files import atomic_write
from safeswap.decide.plan_file import MergePlan
from safeswap.decide.methods import get_method, load_plan
from safeswap.decide.operations import Linear, Take

EXPERTS = ("safety", "language")
TORCH_DTYPE_NAMES = {"bfloat16", "float16", "float32"}


def _path(plan: MergePlan, role: str) -> str:
    """The model's reference for mergekit: local folders absolute (mergekit takes a relative path for a hub id)."""
    try:
        ref = str(plan.models[role]["path"])
    except KeyError:
        raise SafeswapError(f"plan does not record the {role} model's path") from None
    local = Path(ref).expanduser()
    return str(local.resolve()) if local.is_dir() else ref


def _expert_weights(op) -> dict[str, float]:
    """A Take or a blend as mergekit linear weights of (safety, language)."""
    if isinstance(op, Take):
        if op.role not in EXPERTS:
            raise SafeswapError(f"mergekit export: a unit taken from the {op.role} model cannot be expressed")
        return {e: 1.0 if e == op.role else 0.0 for e in EXPERTS}
    if isinstance(op, Linear):
        weights = dict(op.weights)
        if set(weights) - set(EXPERTS):
            raise SafeswapError("mergekit export: a blend that involves the base model cannot be expressed")
        return {e: float(weights.get(e, 0.0)) for e in EXPERTS}
    raise SafeswapError(f"mergekit export: operation {op.describe()} has no mergekit linear equivalent")


def _layer_members(family) -> list[str]:
    return list(family.attention) + list(family.attention_unscored) + list(family.mlp) + list(family.norms)


def _layer_conditions(plan: MergePlan, family, method, layer: int) -> list[tuple[str, dict[str, float]]]:
    """(name-prefix filter, expert weights) for the tensors of one layer, most specific first."""
    prefix = f"{family.layer_prefix}{layer}."
    rest_name = prefix + "safeswap_unlisted_member.weight"  # what any tensor the family table does not list gets
    rest = _expert_weights(method.operation(plan, rest_name, classify(family, rest_name)))
    # Projection plans decide weight and bias separately: their unit ids are full tensor names, matched exactly.
    exact = [str(u["unit"]) for u in plan.units
             if str(u["unit"]).startswith(prefix) and str(u["unit"]).endswith((".weight", ".bias"))]
    # Other members are matched by their name prefix, weight and bias alike, unless they have exact
    # units (a member prefix would then also catch a bias that must fall through to the layer's rule).
    members = [m for m in _layer_members(family)
               if prefix + m + ".weight" not in exact and prefix + m + ".bias" not in exact]
    candidates = [(name, name) for name in exact] + [(prefix + m + ".", prefix + m + ".weight") for m in members]
    conditions = []
    for filter_, name in dict.fromkeys(candidates):
        weights = _expert_weights(method.operation(plan, name, classify(family, name)))
        if weights != rest:
            conditions.append((filter_, weights))
    conditions.append((prefix, rest))
    return conditions


def _unit_plan_config(plan: MergePlan, family) -> dict[str, Any]:
    method = get_method(plan.method)
    outside_name = "model.embed_tokens.weight"
    outside = _expert_weights(method.operation(plan, outside_name, classify(family, outside_name)))
    slices = []
    for layer in range(plan.num_layers):
        conditions = _layer_conditions(plan, family, method, layer)
        sources = []
        for expert in EXPERTS:
            weight = [{"filter": f, "value": w[expert]} for f, w in conditions]
            weight.append({"value": outside[expert]})
            sources.append({"model": _path(plan, expert), "layer_range": [layer, layer + 1],
                            "parameters": {"weight": weight}})
        slices.append({"sources": sources})
    # base_model only names the donor of config and tokenizer (linear ignores it otherwise).
    return {"merge_method": "linear", "base_model": _path(plan, plan.tokenizer_from), "slices": slices,
            "parameters": {"normalize": False}}


def _task_vector_config(plan: MergePlan) -> dict[str, Any]:
    p = plan.parameters
    models = []
    for expert in EXPERTS:
        params: dict[str, Any] = {"weight": p["weights"][expert]}
        if "density" in p:
            params["density"] = p["density"]
        models.append({"model": _path(plan, expert), "parameters": params})
    shared: dict[str, Any] = {"normalize": p["normalize"], "lambda": p["lambda"]}
    if get_method(plan.method).random_masks:
        shared["rescale"] = True
    return {"merge_method": get_method(plan.method).mergekit_name, "base_model": _path(plan, "base"), "models": models,
            "parameters": shared}


def _linear_config(plan: MergePlan) -> dict[str, Any]:
    p = plan.parameters
    models = [{"model": _path(plan, e), "parameters": {"weight": p["weights"][e]}} for e in EXPERTS]
    # base_model only names the donor of config and tokenizer (linear ignores it otherwise).
    return {"merge_method": "linear", "base_model": _path(plan, plan.tokenizer_from), "models": models,
            "parameters": {"normalize": p["normalize"]}}


def _slerp_config(plan: MergePlan) -> dict[str, Any]:
    # mergekit interpolates from base_model (t = 0) to the other model: t = 0 is the language expert.
    models = [{"model": _path(plan, e)} for e in EXPERTS]
    return {"merge_method": get_method(plan.method).mergekit_name, "base_model": _path(plan, "language"),
            "models": models, "parameters": {"t": plan.parameters["t"]}}


def default_out_dtype(plan: MergePlan) -> str:
    """The language expert's stored dtype when its folder is at hand, else bfloat16."""
    config = Path(str(plan.models.get("language", {}).get("path", ""))) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "bfloat16"
    if not isinstance(data, dict):
        return "bfloat16"
    for cfg in config_levels(data):
        for key in ("dtype", "torch_dtype"):
            if cfg.get(key) in TORCH_DTYPE_NAMES:
                return cfg[key]
    return "bfloat16"


def mergekit_config(plan: MergePlan, out_dtype: str | None = None) -> dict[str, Any]:
    """The mergekit configuration (a dict) that reproduces `plan`."""
    out_dtype = out_dtype or default_out_dtype(plan)
    if out_dtype not in TORCH_DTYPE_NAMES:
        raise SafeswapError(f"unsupported output dtype {out_dtype!r}; choose one of {', '.join(sorted(TORCH_DTYPE_NAMES))}")
    method = get_method(plan.method)
    if method.unit_granularity(plan) is not None:  # unit decisions: one linear slice per layer
        config = _unit_plan_config(plan, family_for(plan.architecture, "plan"))
    elif method.mergekit_name == "linear":
        config = _linear_config(plan)
    elif method.mergekit_name == "slerp":
        config = _slerp_config(plan)
    else:
        config = _task_vector_config(plan)
    config["dtype"] = "float32"  # compute in float32 and round once, as safeswap does
    config["out_dtype"] = out_dtype
    return config


class _ConfigDumper(yaml.SafeDumper):
    """One line per condition and per layer range, so a slice reads as a short table."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict):
    flow = set(data) <= {"filter", "value"}
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list):
    flow = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(dict, _represent_dict)
_ConfigDumper.add_representer(list, _represent_list)


def mergekit_yaml(plan: MergePlan, out_dtype: str | None = None) -> str:
    config = mergekit_config(plan, out_dtype)
    header = [f"# mergekit configuration exported by safeswap from a plan (method: {plan.method})."]
    if get_method(plan.method).random_masks:
        header.append("# NOTE: mergekit draws its own random DARE masks and rescales to the L1 norm, so these weights")
        header.append("# differ from safeswap's seeded merge; the configuration is the closest mergekit equivalent.")
    else:
        header.append("# Run: mergekit-yaml THIS_FILE OUT_DIR  (mergekit 0.1.5) to obtain the same weights as safeswap.")
    if "slices" in config:
        header.append("# One slice per decoder layer; each weight list is tried top-down, first matching filter wins;")
        header.append("# the last, unfiltered entry applies only to embeddings, final norm and LM head.")
    body = yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=200)
    return "\n".join(header) + "\n" + body


def export_mergekit(plan: MergePlan | str | os.PathLike, out: str | os.PathLike | None = None,
                    out_dtype: str | None = None) -> str:
    """The mergekit YAML for a plan (object or file); written atomically to `out` when given."""
    plan = plan if isinstance(plan, MergePlan) else load_plan(plan)
    text = mergekit_yaml(plan, out_dtype)
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise SafeswapError(f"{out} is a folder; give a file name for the mergekit YAML")
        atomic_write(out, text)
    return text


__all__ = ["export_mergekit", "mergekit_config", "mergekit_yaml"]
