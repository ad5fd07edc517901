"""Greedy answers of a checkpoint to chat prompts, batched on CPU."""

from __future__ import annotations

import os
from pathlib import Path

from safeswap.demo.quiet import quiet_transformers
from safeswap.errors import SafeswapError


def load_for_inference(model_path: str | os.PathLike):
    """(model, tokenizer) in bf16, eval mode, tokenizer padding on the left for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = Path(model_path)
    if not (model_path / "config.json").is_file():
        raise SafeswapError(f"{model_path} is not a model checkpoint (no config.json)")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.bfloat16).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def generate_answers(
    model_path: str | os.PathLike,
    prompts: list[str],
    max_new_tokens: int = 48,
    batch_size: int = 16,
    description: str = "generating",
    show_progress: bool = True,
) -> list[str]:
    """The model's greedy answer to each prompt (one user turn through the chat template), in order.

    Prompts are batched by length so that left padding stays short; the answers
    come back in the order of `prompts`.
    """
    import torch

    from safeswap.progress import task

    if not prompts:
        return []
    model, tokenizer = load_for_inference(model_path)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    answers: list[str] = [""] * len(texts)
    with task(description, total=len(texts), enabled=show_progress) as advance, torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for i, row in zip(chunk, new_tokens):
                # A cut at max_new_tokens can split a multi-byte character: drop its remains.
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip().rstrip("\ufffd")
            advance(len(chunk))
    return answers
