"""LoRA fine-tuning on CPU, merged back into an ordinary full-weight checkpoint.

A plain torch loop rather than a trainer framework: on two CPU cores every
saved second matters, and the loop does three things a generic trainer does not.
It batches examples of similar length (little padding), it computes the
vocabulary projection only at answer positions (the 49k-row output layer is a
large share of a small model's compute) and it keeps the run bit-for-bit
reproducible for a given seed and thread count.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from safeswap.demo.data import Example, data_fingerprint
from safeswap.demo.recipes import ExpertRecipe
from safeswap.quiet import quiet_transformers
from safeswap.errors import SafeswapError

EXPERT_INFO = "safeswap_expert.json"
ADAPTER_DIR = "adapter"  # the LoRA adapter itself (PEFT's layout), beside the merged full weights
IGNORE = -100


def encode_examples(tokenizer, examples: list[Example], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example, through the chat template; only the answer is learnt."""
    encoded = []
    for example in examples:
        user = [{"role": "user", "content": example.prompt}]
        prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": example.answer}], tokenize=False
        )
        if not full_text.startswith(prompt_text):
            raise SafeswapError("the tokenizer's chat template does not put the answer after the prompt")
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
        if all(label == IGNORE for label in labels):
            continue  # the prompt alone fills max_length: nothing to learn from it
        encoded.append((ids, labels))
    if not encoded:
        raise SafeswapError("no training example fits max_length; raise it or shorten the prompts")
    return encoded


def batch_order(lengths: list[int], steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """`steps` batches of example indices: seeded epochs, similar lengths batched together.

    Each window of 8 batches is sorted by length before being cut into batches,
    then the batches are shuffled: little padding, yet no length curriculum.
    """
    rng = random.Random(seed)
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        epoch = list(range(len(lengths)))
        rng.shuffle(epoch)
        stream += epoch
    stream = stream[: steps * batch_size]
    window = 8 * batch_size
    batches = []
    for start in range(0, len(stream), window):
        chunk = sorted(stream[start : start + window], key=lambda i: lengths[i])
        group = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(group)
        batches += group
    return batches


def learning_rate_at(step: int, recipe: ExpertRecipe) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = max(1, int(recipe.steps * recipe.warmup_share))
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _collate(encoded, indices, pad_id):
    import torch

    width = max(len(encoded[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        seq, lab = encoded[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
    return ids, labels, mask


def _answer_loss(model, ids, labels, mask):
    """Mean cross-entropy over answer tokens, projecting to the vocabulary only where needed."""
    import torch
    import torch.nn.functional as F

    inner = model.get_base_model()
    targets = labels[:, 1:]
    keep = targets != IGNORE
    softcap = getattr(inner.config, "final_logit_softcapping", None)
    if hasattr(inner, "model") and hasattr(inner, "lm_head") and not softcap:
        hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        logits = inner.lm_head(hidden[keep])
    else:  # families that post-process logits: let the model do it
        logits = inner(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    return F.cross_entropy(logits.float(), targets[keep])


def train_expert(
    base: str | os.PathLike,
    examples: list[Example],
    recipe: ExpertRecipe,
    out: str | os.PathLike,
    description: str = "training expert",
    show_progress: bool = True,
) -> Path:
    """Fine-tune `base` with LoRA on `examples`; save the adapter and the merged bf16 checkpoint at `out`.

    The folder is written under a temporary name and renamed when complete; it holds
    the merged weights (what the evaluations load), the base's tokenizer and config,
    the adapter in `adapter/` (what the demo merges, as a LoRA expert) and a
    `safeswap_expert.json` record.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safeswap.progress import task

    base, out = Path(base), Path(out)
    if not (base / "config.json").is_file():
        raise SafeswapError(f"base model {base} has no config.json")
    if not examples:
        raise SafeswapError("cannot train an expert on an empty dataset")
    started = time.time()
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = encode_examples(tokenizer, examples, recipe.max_length)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
    lora = LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=recipe.lora_alpha,
        target_modules=list(recipe.target_modules),
        layers_to_transform=list(recipe.layers) if recipe.layers else None,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft calls a transformers API that warns of its own renaming
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # adapters learn in float32; the frozen base stays bf16
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=recipe.learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    batches = batch_order([len(ids) for ids, _ in encoded], recipe.steps, recipe.batch_size, recipe.seed)
    with task(description, total=recipe.steps, enabled=show_progress) as advance:
        for step, indices in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, recipe)
            ids, labels, mask = _collate(encoded, indices, pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = _answer_loss(model, ids, labels, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 4))
            advance(1)
    record = {
        "recipe": asdict(recipe),
        "base": str(base),
        "examples": len(examples),
        "data_sha256": data_fingerprint(examples),
        "sources": dict(Counter(":".join(e.source.split(":")[:2]) for e in examples)),
        "loss_first": losses[0],
        "loss_last_10_mean": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "losses": losses,
        "seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    _save_atomically(model, tokenizer, record, out)
    return out


def _save_atomically(peft_model, tokenizer, record: dict, out: Path) -> None:
    """The adapter, then the merged weights (merging consumes the adapter), into a staging folder renamed at the end."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        with quiet_transformers():
            peft_model.save_pretrained(str(staging / ADAPTER_DIR))
            # Merge in float32 so W + BA is rounded to bf16 once.
            merged = peft_model.float().merge_and_unload().to(torch.bfloat16)
            merged.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
        (staging / EXPERT_INFO).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def base_fingerprint(base: str | os.PathLike) -> str:
    """What identifies a base for caching: its config and the size of its weight files."""
    base = Path(base)
    parts = [(base / "config.json").read_text(encoding="utf-8")]
    parts += [f"{p.name}:{p.stat().st_size}" for p in sorted(base.glob("*.safetensors"))]
    return "|".join(parts)


def cached_expert(
    base: str | os.PathLike,
    examples: list[Example],
    recipe: ExpertRecipe,
    cache_root: str | os.PathLike,
    name: str,
    show_progress: bool = True,
) -> Path:
    """The expert for (base, data, recipe) from `cache_root`, training it first if absent."""
    key = recipe.key(data_fingerprint(examples), base_fingerprint(base))
    out = Path(cache_root) / f"{name}-{key}"
    if (out / EXPERT_INFO).is_file() and (out / ADAPTER_DIR / "adapter_config.json").is_file():
        return out  # an expert cached before adapters were kept is trained again
    return train_expert(base, examples, recipe, out, description=f"training {name} expert", show_progress=show_progress)
