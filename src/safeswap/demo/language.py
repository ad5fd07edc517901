"""Language measures of the demo: held-out perplexity (whether answers are in the prompt's language is
safeswap.evaluation.answer_language, re-exported here).

Held-out perplexity. The target-language side of gettext pairs that no
training set used, scored as plain text (no chat template); all models share
the base tokenizer, so per-token perplexities compare directly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from safeswap.demo.data import heldout_text
from safeswap.quiet import quiet_transformers
from safeswap.errors import SafeswapError
from safeswap.evaluation.answer_language import in_language_rate, is_in_language, latin_language, script_shares
from safeswap.search.objectives import kept_language_gain

__all__ = ["in_language_rate", "is_in_language", "kept_language_gain", "latin_language", "load_for_inference",
           "measure_language", "script_shares"]


def load_for_inference(model_path: str | os.PathLike):
    """(model, tokenizer) in bf16 and eval mode; the tokenizer pads on the right, as scoring text wants."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = Path(model_path)
    if not (model_path / "config.json").is_file():
        raise SafeswapError(f"{model_path} is not a model checkpoint (no config.json)")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.bfloat16).eval()
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def measure_language(
    model_path: str | os.PathLike,
    language: str = "ko",
    cache: str | os.PathLike | None = None,
    texts: list[str] | None = None,
    limit: int = 160,
    batch_size: int = 16,
    show_progress: bool = True,
) -> dict:
    """Held-out perplexity of a model on target-language text (lower is better).

    `texts` defaults to the held-out gettext sentences of the language.
    Returns {"metric", "perplexity", "nll_per_token", "tokens", "sentences", "source"}.
    """
    import torch

    from safeswap.progress import task

    source = "given texts"
    if texts is None:
        texts = heldout_text(language, cache, limit=limit)
        source = f"held-out gettext sentences ({language})"
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("measure_language needs at least one non-empty text")
    model, tokenizer = load_for_inference(model_path)
    total_nll, total_tokens = 0.0, 0
    description = f"language measure: {Path(model_path).name}"
    with task(description, total=len(texts), enabled=show_progress) as advance, torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:]
            keep = mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
            total_nll += float(nll)
            total_tokens += int(keep.sum())
            advance(len(chunk))
    per_token = total_nll / max(1, total_tokens)
    return {
        "metric": "heldout_perplexity",
        "perplexity": math.exp(per_token),
        "nll_per_token": per_token,
        "tokens": total_tokens,
        "sentences": len(texts),
        "source": source,
    }
