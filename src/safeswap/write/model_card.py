"""README.md for a merged folder, in the form the Hugging Face hub renders as a model card.

YAML front matter (base_model, library_name, tags, language), then: which experts
were merged, with what method and parameters, a compact table of the decisions,
the decisions.png figure, and the commands that reproduce the merge.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from safeswap.files import atomic_write
from safeswap.decide.methods import get_method
from safeswap.decide.plan_file import MergePlan
from safeswap.merged_folder import CARD_FILENAME, DECISIONS_FIGURE, PLAN_FILENAME
from safeswap.decide.plan_inspect import format_value, summary_line, tensor_sizes

SAFETY_LANGUAGE = "en"  # the safety expert is the English one by construction
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ROLE_NAMES = {"safety": "safety expert (English)", "language": "language expert", "base": "base model"}
CELL = {"safety": "S", "language": "L"}


def _hub_id(ref: str | None) -> str | None:
    """A reference the hub can link to: a repo id, never a local folder."""
    if not ref or Path(ref).expanduser().exists() or not _REPO_ID.match(ref):
        return None
    return ref


def language_codes(plan: MergePlan, languages: list[str] | None = None) -> list[str]:
    codes = [SAFETY_LANGUAGE]
    extra = languages if languages is not None else [plan.models.get("language", {}).get("code")]
    for code in extra:
        if code and str(code) not in codes:
            codes.append(str(code))
    return codes


def front_matter(plan: MergePlan, languages: list[str] | None = None) -> dict:
    meta: dict = {}
    parents = [h for h in (_hub_id(plan.models.get(r, {}).get("path")) for r in ("safety", "language", "base")) if h]
    if parents:
        meta["base_model"] = list(dict.fromkeys(parents))
        meta["base_model_relation"] = "merge"
    meta["library_name"] = "transformers"
    meta["tags"] = ["merge", "safeswap"]
    meta["language"] = language_codes(plan, languages)
    return meta


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _cell(unit: dict, default_alpha: float) -> str:
    if unit["decision"] == "blend":
        return f"B {float(unit.get('alpha', default_alpha)):.2g}"
    return CELL[unit["decision"]]


def _column(unit: dict) -> str:
    if "projection" in unit:
        return f"{unit.get('module', '')}.{unit['projection']}".strip(".")
    return unit.get("module") or "layer"


def decisions_markdown(plan: MergePlan) -> str:
    """Layers as rows (consecutive identical layers share a row), units of a layer as columns."""
    if not plan.units:
        return ""
    default_alpha = plan.parameters.get("alpha", 0.5)
    columns = list(dict.fromkeys(_column(u) for u in plan.units))
    layers: dict[int, dict[str, str]] = {}
    for u in plan.units:
        layers.setdefault(int(u["layer"]), {})[_column(u)] = _cell(u, default_alpha)
    rows: list[tuple[int, int, tuple[str, ...]]] = []
    for layer in sorted(layers):
        cells = tuple(layers[layer].get(c, "") for c in columns)
        if rows and rows[-1][2] == cells and rows[-1][1] == layer - 1:
            rows[-1] = (rows[-1][0], layer, cells)
        else:
            rows.append((layer, layer, cells))
    lines = ["| layers | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for first, last, cells in rows:
        span = str(first) if first == last else f"{first}–{last}"
        lines.append(f"| {span} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("S: from the safety expert · L: from the language expert · B a: blend a·S + (1-a)·L")
    return "\n".join(lines)


def _parameters_markdown(plan: MergePlan) -> str:
    lines = ["| parameter | value |", "|---|---|"]
    for key, value in plan.parameters.items():
        lines.append(f"| {key} | {format_value(value)} |")
    lines.append(f"| outside layers (embeddings, final norm, LM head) | {plan.outside_layers} |")
    lines.append(f"| tokenizer from | {plan.tokenizer_from} |")
    return "\n".join(lines)


def _short_name(ref: str | None) -> str:
    return Path(str(ref or "model").rstrip("/")).name or str(ref)


def card_title(plan: MergePlan) -> str:
    """Named after the inputs, never after the folder: the card is written before the folder gets its final name."""
    language = _short_name(plan.models.get("language", {}).get("path"))
    safety = _short_name(plan.models.get("safety", {}).get("path"))
    return f"{language} + {safety} ({plan.method} merge)"


def card_text(plan: MergePlan, folder: Path, command: str | None, languages: list[str] | None = None) -> str:
    title = card_title(plan)
    models = ["| role | model | fingerprint |", "|---|---|---|"]
    for role in ("safety", "language", "base"):
        record = plan.models.get(role)
        if record:
            ref = str(record.get("path", ""))
            shown = f"[{ref}](https://huggingface.co/{ref})" if _hub_id(ref) else f"`{ref}`"
            models.append(f"| {ROLE_NAMES[role]} | {shown} | `{str(record.get('fingerprint', ''))[:23]}…` |")
    parts = [
        "---\n" + yaml.safe_dump(front_matter(plan, languages), sort_keys=False, allow_unicode=True) + "---",
        f"# {title}",
        "A merge of a safety expert and a language expert fine-tuned from one base, made without any training "
        f"by safeswap {plan.safeswap_version}.",
        "\n".join(models),
        f"## Method: `{plan.method}`",
        _sentence(get_method(plan.method).summary),
        _parameters_markdown(plan),
        "## Decisions",
        summary_line(plan, tensor_sizes(plan, folder)) + ".",
    ]
    table = decisions_markdown(plan)
    if table:
        parts.append(table)
    if (folder / DECISIONS_FIGURE).is_file():
        parts.append(f"![Where each unit of the merged model comes from]({DECISIONS_FIGURE})")
    parts.append("## Reproduce")
    if command:
        parts.append("The command that made this merge:\n\n```bash\n" + command.strip() + "\n```")
    parts.append(
        f"Replaying the plan stored beside the weights, with the input models it records, gives byte-identical shards:\n\n```bash\n"
        f"safeswap merge --plan {PLAN_FILENAME} --out merged\n```"
    )
    return "\n\n".join(parts) + "\n"


def write_model_card(plan: MergePlan, folder: Path, command: str | None = None, *,
                     languages: list[str] | None = None) -> Path:
    """Write folder/README.md (atomically) and return its path.

    languages: the target-language codes; by default plan.models["language"]["code"] when the plan records one.
    "en" (the safety expert's language) is always listed.
    """
    folder = Path(folder)
    text = card_text(plan, folder, command, languages)
    return atomic_write(folder / CARD_FILENAME, text)
