"""Language measures of the demo: answers written in the prompt's language, and held-out perplexity.

In-language detection. Korean, Chinese, Arabic, Thai and Bengali have scripts of
their own: an answer is in the language when at least half of its letters are in
that script. English, Italian, Vietnamese, Swahili and Javanese share the Latin
script: an answer is in one of them when at least half of its letters are Latin
and that language's function words (a short written list per language, e.g.
"il, la, di, che" for Italian) are the most frequent among the five. Vietnamese
also counts its distinctive letters (ơ, ư, đ and the stacked tone marks). An
answer with no letters, or a Latin one with no function word at all, counts as
not in the language: it gives no evidence that the model writes that language.

Held-out perplexity. The target-language side of gettext pairs that no
training set used, scored as plain text (no chat template); all models share
the base tokenizer, so per-token perplexities compare directly.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from safeswap.demo.data import heldout_text, language_info
from safeswap.demo.quiet import quiet_transformers
from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES
from safeswap.evaluation.results import rate

SCRIPT_RANGES = {
    "hangul": ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)),
    "han": ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "thai": ((0x0E00, 0x0E7F),),
    "bengali": ((0x0980, 0x09FF),),
}
LATIN_LANGUAGES = tuple(code for code in MULTIJAIL_LANGUAGES if language_info(code)["script"] == "latin")
VIETNAMESE_LETTERS = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def script_of(char: str) -> str | None:
    """The script of a letter: one of SCRIPT_RANGES, 'latin', or None for other letters."""
    code = ord(char)
    for script, ranges in SCRIPT_RANGES.items():
        if any(low <= code <= high for low, high in ranges):
            return script
    if char.isalpha() and (code < 0x0250 or 0x1E00 <= code <= 0x1EFF):
        return "latin"
    return None


def script_shares(text: str) -> dict[str, float]:
    """Share of the text's letters in each script."""
    letters = [c for c in text if c.isalpha()]
    counts: dict[str, int] = {}
    for char in letters:
        script = script_of(char) or "other"
        counts[script] = counts.get(script, 0) + 1
    return {script: n / len(letters) for script, n in counts.items()} if letters else {}


def latin_language(text: str) -> str | None:
    """The Latin-script MultiJail language whose function words the text uses most, or None."""
    words = [w.casefold() for w in _WORD.findall(text)]
    if not words:
        return None
    scores = {}
    for code in LATIN_LANGUAGES:
        vocabulary = set(language_info(code)["function_words"])
        scores[code] = sum(w in vocabulary for w in words)
    scores["vi"] += sum(c in VIETNAMESE_LETTERS for c in text.casefold()) / 2
    best = max(scores, key=lambda code: (scores[code], code == "en"))
    return best if scores[best] > 0 else None


def is_in_language(text: str, language: str) -> bool:
    """Whether an answer is written in `language` (a MultiJail code), by script and function words."""
    script = language_info(language)["script"]
    shares = script_shares(text)
    if shares.get(script, 0.0) < 0.5:
        return False
    if script != "latin":
        return True
    return latin_language(text) == language


def in_language_rate(texts: list[str], language: str) -> dict:
    """Share of texts written in `language`, as a rate with its 95% Wilson interval."""
    k = sum(is_in_language(t, language) for t in texts)
    return rate(k, len(texts))


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


def kept_language_gain(base_perplexity: float, expert_perplexity: float, model_perplexity: float) -> float:
    """Share of the language expert's gain over the base that a model keeps, in log-perplexity.

    1.0 = as good as the language expert, 0.0 = no better than the base; can
    leave [0, 1] when a model beats the expert or falls behind the base.
    """
    gain = math.log(base_perplexity) - math.log(expert_perplexity)
    if gain == 0:
        return float("nan")
    return (math.log(base_perplexity) - math.log(model_perplexity)) / gain
