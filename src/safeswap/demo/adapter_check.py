"""How close a merge written as a LoRA adapter is to the same merge written as full weights, on the demo's prompts.

The adapter on the base computes W x + B (A x) in float32; the full merge stores W + B A rounded
once to bf16. Both models read the same prompts (chat template applied, one at a time: no padding
enters), and the largest |logit difference| over every position and token is what the README
reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def max_logit_difference(base: Path, adapter: Path, full: Path, prompts: Sequence[str]) -> float:
    """max |logits(base + adapter) - logits(full merge)| over the prompts' positions, both models in float32 on CPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(full))
    attached = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                                         str(adapter)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(full), dtype=torch.float32).eval()
    largest = 0.0
    with torch.no_grad():
        for text in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]
            difference = (attached(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max()
            largest = max(largest, float(difference))
    return largest
