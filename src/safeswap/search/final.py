"""The final evaluation: the recommended candidate, the references and the models on the held-out split.

These are the only numbers a search reports as results: prompts no candidate was scored on
(MultiJail ids and benign prompts of the held-out half, `splits.json`), answered with
generation and judged, harmful prompts in English and every target language, benign ones in
English and the first target language, plus perplexity on the held-out benign texts of the
target language. Written to DIR/final.json; each model's safety result file lies in DIR/final/
(so `safeswap report DIR/final` reads them like any evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safeswap.files import atomic_write
from safeswap.progress import StageProgress
from safeswap.search.candidates import Candidate
from safeswap.search.judged import JudgeSettings, PromptChoice, cached_record, judge_folder
from safeswap.search.objectives import kept_language_gain
from safeswap.search.runner import SearchContext, written
from safeswap.search.space import SearchSpace

FINAL_DIR = "final"
FINAL_FILE = "final.json"
MODEL_LABELS = {"base": "base", "safety": "safety-expert", "language": "language-expert"}


def _perplexity(folder, texts: tuple[str, ...], context: SearchContext) -> float:
    from safeswap.search.probe import load_model, perplexity

    if context.adapters and str(folder) != context.base:  # an adapter folder (an expert or a candidate) on the base
        from safeswap.search.adapter_probe import load_adapter_model

        model, tokenizer = load_adapter_model(folder, context.base, context.device)
    else:
        model, tokenizer = load_model(folder, context.device, context.base)
    return perplexity(model, tokenizer, texts, context.batch_size, context.max_length)


def final_rows(recommended: Candidate | None, references: list[Candidate], with_references: bool
               ) -> list[tuple[str, str, Candidate | None]]:
    """(label, kind, candidate) in table order: the models, the recommended candidate, the other references."""
    rows: list[tuple[str, str, Candidate | None]] = [(label, "model", None) for label in MODEL_LABELS.values()]
    if recommended is not None:
        rows.append((f"recommended ({recommended.label})" if recommended.label else "recommended", "recommended",
                     recommended))
    if with_references:
        rows += [(c.label, "reference", c) for c in references if recommended is None or c.key != recommended.key]
    return rows


def run_final(context: SearchContext, space: SearchSpace, settings: JudgeSettings, prompts: PromptChoice,
              ability_texts: tuple[str, ...], recommended: Candidate | None, references: list[Candidate],
              progress: StageProgress | None = None,
              notify: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Evaluate every row on the held-out prompts; writes and returns DIR/final.json's content."""
    out = Path(context.out)
    stage = space.generation  # decoding as in the generation stage, so both stages' rates compare
    paths = {label: getattr(context, role) for role, label in MODEL_LABELS.items()}
    tag = settings.key(sorted(prompts.ids()["multijail"]), sorted(prompts.ids()["benign"]), prompts.languages,
                       stage.max_new_tokens, ability_texts)
    rows = []
    for label, kind, cand in final_rows(recommended, references, space.final.references):
        notify(f"final evaluation (held-out): {label}")

        def measure(folder) -> dict[str, Any]:
            record = judge_folder(folder, label, prompts, settings, stage.max_new_tokens, stage.batch_size,
                                  out / FINAL_DIR, progress, base=context.base,
                                  adapter_base=context.base if context.adapters else None)
            return {**record, "perplexity": _perplexity(folder, ability_texts, context)}

        def run(cand=cand, label=label) -> dict[str, Any]:
            if cand is None:
                return measure(paths[label])
            with written(context, cand, f"final-{cand.key}") as folder:
                return measure(folder)

        # Cached per model and settings: a resumed search re-evaluates nothing it already measured.
        name = f"model-{label}" if cand is None else cand.key
        record = cached_record(out / FINAL_DIR / "records" / f"{name}-{tag}.json", run)
        rows.append({"label": label, "kind": kind, "key": cand.key if cand else None,
                     "method": cand.method if cand else None, "values": cand.values if cand else None,
                     "outside_layers": cand.outside_layers if cand else None, "harmful": record["harmful"],
                     "harmful_pooled": record["harmful_pooled"], "benign_refusal": record["benign_refusal"],
                     "in_language": record["in_language"], "perplexity": record["perplexity"],
                     "fingerprint": record["fingerprint"], "metric": record["metric"], "judge": record["judge"]})
    base, language = rows[0]["perplexity"], rows[2]["perplexity"]
    for row in rows:
        gain = kept_language_gain(base, language, row["perplexity"])
        row["kept_gain"] = gain + 0.0 if gain == gain else None  # + 0.0: no "-0.0" for the base
    final = {"split": "held-out", "metric": rows[0]["metric"], "judge": rows[0]["judge"],
             "languages": list(prompts.languages), "benign_language": prompts.target,
             "harmful_n": len(prompts.harmful), "benign_n": len(prompts.benign.prompts),
             "harmful_ids": sorted(p.id for p in prompts.harmful),
             "benign_ids": sorted(p.id for p in prompts.benign.prompts), "ability_texts": len(ability_texts),
             "rows": [{k: v for k, v in r.items() if k not in ("metric", "judge")} for r in rows]}
    atomic_write(out / FINAL_FILE, json.dumps(final, indent=1, sort_keys=True))
    return final
