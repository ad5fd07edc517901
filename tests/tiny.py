"""Tiny models and tokenizers that tests build on the fly (no hub access).

Every helper is deterministic: the same arguments give the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB_SIZE = 320

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A few sentences in every MultiJail language so the byte-level BPE learns some merges.
_CORPUS = [
    "How do I bake bread at home? Mix flour, water, salt and yeast.",
    "I cannot help with that request.",
    "안녕하세요. 저는 도와드릴 수 없습니다.",
    "Siwezi kusaidia na ombi hilo. Habari yako?",
    "আমি এই অনুরোধে সাহায্য করতে পারি না।",
    "我不能帮助你做这件事。你好吗？",
    "Non posso aiutarti con questa richiesta.",
    "Tôi không thể giúp bạn việc đó.",
    "لا أستطيع المساعدة في هذا الطلب.",
    "ฉันไม่สามารถช่วยเรื่องนี้ได้",
    "Aku ora bisa mbantu panjaluk iki.",
]


def make_tokenizer(out_dir: str | Path, vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer with a ChatML template, saved to out_dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def _config(family: str, layers: int, tie: bool):
    import transformers as tf

    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "qwen3":
        return tf.Qwen3Config(head_dim=16, **common)
    if family == "gemma2":
        return tf.Gemma2Config(head_dim=16, **common)
    if family == "gemma3":
        return tf.Gemma3TextConfig(head_dim=16, **common)
    if family == "phi3":
        common.pop("num_key_value_heads")
        return tf.Phi3Config(num_key_value_heads=4, **common)
    raise ValueError(family)


FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")


def make_model(
    out_dir: str | Path,
    family: str = "llama",
    layers: int = 4,
    seed: int = 0,
    tie: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    tokenizer: bool = True,
):
    """Build a random tiny model of a family and save it (safetensors) to out_dir."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _config(family, layers, tie)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init of norms is all-ones; give them some spread so blends are visible.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    model.save_pretrained(str(out_dir))
    if tokenizer:
        make_tokenizer(out_dir)
    return Path(out_dir)


def perturb(
    src_dir: str | Path,
    out_dir: str | Path,
    rules: dict[str, float],
    seed: int,
    noise: float = 1e-3,
):
    """Copy a saved model, adding Gaussian noise scaled per tensor.

    rules maps a substring of the tensor name to a relative noise scale; every
    matching tensor gets `scale * ||W|| / sqrt(numel)` noise (so r ~= scale),
    every other tensor gets `noise` relative noise.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src_dir), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = noise
            for pattern, s in rules.items():
                if pattern in name:
                    scale = s
            rms = p.float().norm() / (p.numel() ** 0.5)
            p.add_(scale * rms * torch.randn(p.shape, generator=gen))
    src_dtype = json.loads((Path(src_dir) / "config.json").read_text()).get("dtype", "bfloat16")
    model = model.to(getattr(torch, src_dtype))
    model.save_pretrained(str(out_dir))
    try:
        AutoTokenizer.from_pretrained(str(src_dir)).save_pretrained(str(out_dir))
    except Exception:
        pass
    return Path(out_dir)


def make_triple(root: str | Path, family: str = "llama", layers: int = 4, tie: bool = False):
    """base, safety and language experts with known specialisations.

    The safety expert is changed mostly in the MLPs of the middle layers, the
    language expert mostly in the attention of the outer (first and last) layers.
    """
    root = Path(root)
    base = make_model(root / "base", family=family, layers=layers, seed=0, tie=tie)
    middle = range(1, layers - 1)
    outer = (0, layers - 1)
    safety_rules = {f"layers.{i}.mlp.": 0.5 for i in middle}
    language_rules = {f"layers.{i}.self_attn.": 0.5 for i in outer}
    safety = perturb(base, root / "safety", safety_rules, seed=1)
    language = perturb(base, root / "language", language_rules, seed=2)
    return base, safety, language
