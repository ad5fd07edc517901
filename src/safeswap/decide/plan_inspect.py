"""Reading plans: a decision table, a one-line summary, and where two plans disagree.

Parameter shares come from replaying the plan's own method.operation() over the
model's tensors, the same call the merge engine makes, so they hold for every
method and every hand edit. Tensor sizes are read from a checkpoint's headers
(the merged folder, or the language expert's folder named in the plan); without
one, counts of units are still reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from safeswap.read.architecture import classify, family_for
from safeswap.read.checkpoint import FLOAT_DTYPES, Checkpoint
from safeswap.errors import SafeswapError
from safeswap.decide.plan_file import DECISIONS, MergePlan
from safeswap.decide.methods import get_method
from safeswap.decide.operations import Linear, Take

SOURCES = ("safety", "language", "blend", "combined")


@dataclass(frozen=True)
class TensorSize:
    numel: int
    dtype: str


def tensor_sizes(plan: MergePlan, folder: str | os.PathLike | None = None) -> dict[str, TensorSize] | None:
    """Every tensor's size, from `folder` or the plan's language expert when it is a local folder; else None."""
    candidates = [folder] if folder is not None else []
    candidates.append(plan.models.get("language", {}).get("path"))
    for candidate in candidates:
        if not candidate or not Path(str(candidate)).is_dir():
            continue
        try:
            with Checkpoint(Path(str(candidate))) as ckpt:
                return {n: TensorSize(ckpt.tensors[n].numel, ckpt.tensors[n].dtype) for n in ckpt.ordered_names()}
        except SafeswapError:
            continue  # no weights there (or unreadable): try the next place
    return None


def tensor_sources(plan: MergePlan, sizes: dict[str, TensorSize]) -> dict[str, str]:
    """Where each tensor comes from: safety | language | blend (two experts mixed) | combined (any other formula)."""
    family = family_for(plan.architecture, "plan")
    method = get_method(plan.method)
    sources = {}
    for name, size in sizes.items():
        op = method.operation(plan, name, classify(family, name))
        if isinstance(op, Take):
            sources[name] = op.role
        elif size.dtype not in FLOAT_DTYPES:
            sources[name] = "language"  # integer buffers are copied from the language expert, never averaged
        elif isinstance(op, Linear) and set(op.roles) <= {"safety", "language"}:
            sources[name] = "blend"
        else:
            sources[name] = "combined"
    return sources


def parameter_shares(plan: MergePlan, sizes: dict[str, TensorSize]) -> dict[str, float]:
    """Fraction of all parameters per source (keys of SOURCES that occur)."""
    sources = tensor_sources(plan, sizes)
    total = sum(s.numel for s in sizes.values()) or 1
    shares: dict[str, float] = {}
    for name, source in sources.items():
        shares[source] = shares.get(source, 0.0) + sizes[name].numel / total
    return {k: shares[k] for k in SOURCES if k in shares}


def unit_counts(plan: MergePlan) -> dict[str, int]:
    return {d: sum(1 for u in plan.units if u["decision"] == d) for d in DECISIONS}


def summary_line(plan: MergePlan, sizes: dict[str, TensorSize] | None = None) -> str:
    """e.g. "44 units: 12 from safety, 20 from language, 12 blended; parameters: 18.2% safety, ..."."""
    if plan.units:
        c = unit_counts(plan)
        text = f"{len(plan.units)} units: {c['safety']} from safety, {c['language']} from language, {c['blend']} blended"
    else:
        text = f"{plan.method}: no per-unit decisions, every tensor follows one formula"
    if sizes is None:
        return text + "; parameter shares need the model's folder"
    shares = parameter_shares(plan, sizes)
    words = {"safety": "safety", "language": "language", "blend": "blended", "combined": f"combined by {plan.method}"}
    return text + "; parameters: " + ", ".join(f"{100 * v:.1f}% {words[k]}" for k, v in shares.items())


def _number(value) -> str:
    return "" if value is None else f"{value:+.4f}" if isinstance(value, float) else str(value)


def decision_table(plan: MergePlan, title: str | None = None) -> Table:
    """unit, decision (with its blend weight), d, p_S, p_L, and cos where the plan has it: one row per unit."""
    table = Table(title=title, show_lines=False, header_style="bold")
    scored = any("d" in u for u in plan.units)  # methods that ignore the statistics leave these out
    directed = any("cos" in u for u in plan.units)  # plans of the direction criterion
    columns = [("unit", "left"), ("decision", "left")] + ([("d", "right"), ("p_S", "right"), ("p_L", "right")] if scored else [])
    columns += [("cos", "right")] if directed else []
    for column, justify in columns:
        table.add_column(column, justify=justify)
    colours = {"safety": "blue", "language": "dark_orange", "blend": "green"}
    default_alpha = plan.parameters.get("alpha", 0.5)
    for u in plan.units:
        decision = u["decision"]
        label = f"blend a={float(u.get('alpha', default_alpha)):.3g}" if decision == "blend" else decision
        p_s = u.get("p_safety")
        p_l = u.get("p_language")
        row = [str(u["unit"]), f"[{colours[decision]}]{label}[/]"]
        if scored:
            row += [_number(u.get("d")), "" if p_s is None else f"{p_s:.4f}", "" if p_l is None else f"{p_l:.4f}"]
        if directed:
            row.append(_number(u.get("cos")))
        table.add_row(*row)
    return table


def format_value(value) -> str:
    """A parameter value for people: floats in %g, expert weights as 'safety 0.6, language 0.4'."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_parameters(plan: MergePlan) -> str:
    """key=value pairs on one line; a dict value in parentheses."""
    return "; ".join(f"{key}=({format_value(v)})" if isinstance(v, dict) else f"{key}={format_value(v)}"
                     for key, v in plan.parameters.items())


@dataclass
class PlanDiff:
    """Where plan A and plan B disagree."""

    settings: list[tuple[str, object, object]] = field(default_factory=list)  # (field, A, B)
    units: list[tuple[str, str, str]] = field(default_factory=list)  # (unit, A's decision, B's decision)
    tensors: list[tuple[str, str, str]] = field(default_factory=list)  # (tensor, A's operation, B's operation)
    compared_tensors: int = 0
    differing_parameters: float | None = None  # fraction of parameters whose operation differs
    note: str = ""

    @property
    def identical(self) -> bool:
        return not (self.settings or self.units or self.tensors)


def _decision_label(unit: dict, default_alpha: float) -> str:
    if unit["decision"] == "blend":
        return f"blend a={float(unit.get('alpha', default_alpha)):g}"
    return unit["decision"]


def _synthetic_sizes(plan: MergePlan) -> dict[str, TensorSize]:
    """Weight names from the family table when no checkpoint is at hand (sizes unknown: numel 0)."""
    family = family_for(plan.architecture, "plan")
    members = family.attention + family.attention_unscored + family.mlp + family.norms
    names = [f"{family.layer_prefix}{i}.{m}.weight" for i in range(plan.num_layers) for m in members]
    return {n: TensorSize(0, "BF16") for n in ["model.embed_tokens.weight", *names, "model.norm.weight"]}


def diff_plans(a: MergePlan, b: MergePlan, sizes: dict[str, TensorSize] | None = None) -> PlanDiff:
    """Settings that differ, units whose decision differs, and (when the plans' units are not the
    same set, e.g. two granularities or methods) tensors whose operation differs."""
    diff = PlanDiff()
    for name in ("method", "architecture", "num_layers", "outside_layers", "tokenizer_from"):
        if getattr(a, name) != getattr(b, name):
            diff.settings.append((name, getattr(a, name), getattr(b, name)))
    for key in sorted(set(a.parameters) | set(b.parameters)):
        if a.parameters.get(key) != b.parameters.get(key):
            diff.settings.append((f"parameters.{key}", a.parameters.get(key), b.parameters.get(key)))
    for role in sorted(set(a.models) | set(b.models)):
        fa, fb = (p.models.get(role, {}).get("fingerprint") for p in (a, b))
        if fa != fb:
            diff.settings.append((f"models.{role}", a.models.get(role, {}).get("path"), b.models.get(role, {}).get("path")))
    ids_a, ids_b = [u["unit"] for u in a.units], [u["unit"] for u in b.units]
    if ids_a and set(ids_a) == set(ids_b):
        alpha_a, alpha_b = a.parameters.get("alpha", 0.5), b.parameters.get("alpha", 0.5)
        for uid in ids_a:
            la, lb = _decision_label(a.unit(uid), alpha_a), _decision_label(b.unit(uid), alpha_b)
            if la != lb:
                diff.units.append((uid, la, lb))
        if a.method == b.method and a.outside_layers == b.outside_layers and alpha_a == alpha_b:
            return diff  # same units, same rule elsewhere: the unit rows are the whole story
    if a.architecture != b.architecture:
        diff.note = "different architectures: tensors cannot be compared"
        return diff
    if sizes is None:
        sizes = tensor_sizes(a) or tensor_sizes(b)
    if sizes is None:
        sizes = _synthetic_sizes(a)
        diff.note = "no model folder at hand: compared the family's weight names, parameter shares unknown"
    method_a, method_b = get_method(a.method), get_method(b.method)
    family = family_for(a.architecture, "plan")
    total = sum(s.numel for s in sizes.values())
    differing = 0
    for name, size in sizes.items():
        role = classify(family, name)
        op_a, op_b = method_a.operation(a, name, role).describe(), method_b.operation(b, name, role).describe()
        if op_a != op_b:
            diff.tensors.append((name, op_a, op_b))
            differing += size.numel
    diff.compared_tensors = len(sizes)
    diff.differing_parameters = differing / total if total else None
    return diff


def diff_table(diff: PlanDiff, label_a: str = "A", label_b: str = "B", limit: int = 200) -> list:
    """Rich renderables for a PlanDiff (the CLI prints them in order)."""
    out: list = []
    if diff.settings:
        t = Table(title="settings", header_style="bold")
        for c in ("field", label_a, label_b):
            t.add_column(c)
        for name, va, vb in diff.settings:
            t.add_row(name, "-" if va is None else str(va), "-" if vb is None else str(vb))
        out.append(t)
    if diff.units:
        t = Table(title=f"units that differ ({len(diff.units)})", header_style="bold")
        for c in ("unit", label_a, label_b):
            t.add_column(c)
        for row in diff.units[:limit]:
            t.add_row(*row)
        out.append(t)
    if diff.tensors:
        t = Table(title=f"tensors whose operation differs ({len(diff.tensors)} of {diff.compared_tensors})",
                  header_style="bold")
        for c in ("tensor", label_a, label_b):
            t.add_column(c)
        for row in diff.tensors[:limit]:
            t.add_row(*row)
        out.append(t)
    if len(diff.units) > limit or len(diff.tensors) > limit:
        out.append(f"(first {limit} rows shown)")
    if diff.differing_parameters is not None and diff.tensors:
        out.append(f"{100 * diff.differing_parameters:.1f}% of parameters are computed differently")
    if diff.note:
        out.append(diff.note)
    if diff.identical:
        out.append("the plans agree on every decision")
    return out
