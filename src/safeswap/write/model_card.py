"""README.md for a merged folder, in the form the Hugging Face hub renders as a model card.

YAML front matter (base_model, library_name, tags, language), then: which experts
were merged, with what method and parameters, a compact table of the decisions,
the decisions.png figure, and the commands that reproduce the merge.
"""

from __future__ import annotations

import re
import shlex
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


def front_matter(plan: MergePlan, languages: list[str] | None = None, adapter: bool = False) -> dict:
    """An adapter output is, for the hub, an adapter of the base (library peft); a checkpoint a merge of its inputs."""
    meta: dict = {}
    roles = ("base",) if adapter else ("safety", "language", "base")
    parents = [h for h in (_hub_id(plan.models.get(r, {}).get("path")) for r in roles) if h]
    if parents:
        meta["base_model"] = list(dict.fromkeys(parents))
        meta["base_model_relation"] = "adapter" if adapter else "merge"
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["tags"] = ["merge", "safeswap", "lora"] if adapter else ["merge", "safeswap"]
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


def serve_markdown(plan: MergePlan, adapter: dict) -> str:
    """The adapter's ranks and the vLLM command that serves it (its --max-lora-rank from the largest rank)."""
    base = str(plan.models.get("base", {}).get("path", "BASE"))
    ranks = (f"rank {adapter['rank']}" if adapter["smallest_rank"] == adapter["largest_rank"] else
             f"ranks {adapter['smallest_rank']} to {adapter['largest_rank']} (`r` {adapter['rank']}, the others "
             "in `rank_pattern`)")
    text = (f"A PEFT LoRA adapter over `{base}`: {adapter['modules']} modules, {ranks}, {adapter['dtype']} factors, "
            "each module's scale folded into its B (`lora_alpha` equals the rank everywhere).")
    need = adapter["vllm_max_lora_rank"]
    if need is None:
        return text + f"\n\nIts largest rank, {adapter['largest_rank']}, is above vLLM's largest `--max-lora-rank`."
    return text + (f"\n\nServed with vLLM (`--max-lora-rank {need}`, the smallest value vLLM accepts that holds rank "
                   f"{adapter['largest_rank']}):\n\n```bash\nvllm serve {base} --enable-lora --lora-modules "
                   f"{vllm_lora_module(adapter['path'])} --max-lora-rank {need}\n```")


def vllm_lora_module(path: str) -> str:
    """NAME=PATH for vLLM's --lora-modules: the folder's name and the path it was written to."""
    return f"{Path(path).name}={shlex.quote(str(path))}"


def card_text(plan: MergePlan, folder: Path, command: str | None, languages: list[str] | None = None,
              adapter: dict | None = None) -> str:
    title = card_title(plan)
    models = ["| role | model | fingerprint |", "|---|---|---|"]
    for role in ("safety", "language", "base"):
        record = plan.models.get(role)
        if record:
            ref = str(record.get("path", ""))
            shown = f"[{ref}](https://huggingface.co/{ref})" if _hub_id(ref) else f"`{ref}`"
            models.append(f"| {ROLE_NAMES[role]} | {shown} | `{str(record.get('fingerprint', ''))[:23]}…` |")
    parts = [
        "---\n" + yaml.safe_dump(front_matter(plan, languages, adapter is not None), sort_keys=False, allow_unicode=True) + "---",
        f"# {title}",
        "A merge of a safety expert and a language expert fine-tuned from one base, made without any training "
        f"by safeswap {plan.safeswap_version}.",
        "\n".join(models),
        f"## Method: `{plan.method}`",
        _sentence(get_method(plan.method).summary),
        _parameters_markdown(plan),
        "## Decisions",
        # An adapter folder holds no weights to measure shares on: the base has every tensor's size.
        summary_line(plan, tensor_sizes(plan, plan.models.get("base", {}).get("path") if adapter else folder)) + ".",
    ]
    table = decisions_markdown(plan)
    if table:
        parts.append(table)
    if (folder / DECISIONS_FIGURE).is_file():
        parts.append(f"![Where each unit of the merged model comes from]({DECISIONS_FIGURE})")
    if adapter is not None:
        parts += ["## Serve", serve_markdown(plan, adapter)]
    parts.append("## Reproduce")
    if command:
        parts.append("The command that made this merge:\n\n```bash\n" + command.strip() + "\n```")
    if adapter is not None:
        parts.append("Replaying the plan stored beside the adapter, with the input models it records, gives "
                     f"byte-identical adapter files:\n\n```bash\nsafeswap merge --plan {PLAN_FILENAME} --output adapter "
                     "--out merged\n```")
    else:
        parts.append(
            f"Replaying the plan stored beside the weights, with the input models it records, gives byte-identical shards:\n\n```bash\n"
            f"safeswap merge --plan {PLAN_FILENAME} --out merged\n```"
        )
    return "\n\n".join(parts) + "\n"


def write_model_card(plan: MergePlan, folder: Path, command: str | None = None, *,
                     languages: list[str] | None = None, adapter: dict | None = None) -> Path:
    """Write folder/README.md (atomically) and return its path.

    languages: the target-language codes; by default plan.models["language"]["code"] when the plan records one.
    "en" (the safety expert's language) is always listed. adapter: write.adapter_output's summary of an
    adapter output (its ranks and the vLLM command that serves it).
    """
    folder = Path(folder)
    text = card_text(plan, folder, command, languages, adapter)
    return atomic_write(folder / CARD_FILENAME, text)
