"""Generation with transformers: the model's chat template, left-padded batches, greedy by default; a LoRA adapter
folder as the model is loaded on its base with PEFT."""

from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import (BackendOptions, Conversation, DecodingSettings, Generation,
                                               adapter_model)
from safeswap.read.tokenizer_source import tokenizer_source

DTYPES = ("auto", "float32", "bfloat16", "float16")


def choose_device(device: str = "auto") -> str:
    """cuda when there is a GPU, else Apple's mps, else cpu."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SafeswapError(f"--device {device} asked for, but torch sees no CUDA GPU")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def choose_dtype(dtype: str, device: str):
    """bf16 on GPUs that support it (fp16 on older ones), float32 on CPU where bf16 matmuls are slow."""
    import torch

    if dtype not in DTYPES:
        raise SafeswapError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _decoding(settings: DecodingSettings, torch_dtype, tokenizer: str | None = None) -> dict[str, Any]:
    # dtype and a tokenizer from another folder change the numbers, so they belong to the cache key;
    # batch size does not (by intent).
    return {"backend": HFBackend.name, **settings.as_dict(), "dtype": str(torch_dtype).replace("torch.", ""),
            **({"tokenizer": tokenizer} if tokenizer else {})}


class HFBackend:
    """A causal LM loaded with transformers, generating in left-padded batches."""

    name = "hf"

    def __init__(
        self,
        model: str,
        settings: DecodingSettings = DecodingSettings(),
        *,
        revision: str | None = None,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str = "auto",
        tokenizer: str | None = None,
        adapter_base: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise SafeswapError(f"--batch-size must be at least 1, got {batch_size}")
        self.settings = settings
        self.batch_size = batch_size
        self.device = choose_device(device)
        self.torch_dtype = choose_dtype(dtype, self.device)
        self.model_name = str(model)
        self.tokenizer_from = tokenizer
        # A LoRA adapter folder runs on its base, attached with PEFT (its tokenizer by the merge's rule:
        # the adapter folder's own when it holds one, else the base's).
        adapter = adapter_model(self.model_name, BackendOptions(adapter_base=adapter_base))
        weights = adapter.base if adapter else self.model_name
        if tokenizer is None and adapter:
            tokenizer = tokenizer_source(adapter.folder, adapter.base, "adapter")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or weights, revision=None if tokenizer else revision)
            self.model = AutoModelForCausalLM.from_pretrained(weights, revision=revision, dtype=self.torch_dtype)
            if adapter:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, adapter.folder)
        except (OSError, ValueError) as exc:
            raise SafeswapError(f"cannot load model {self.model_name}: {str(exc).splitlines()[0]}") from None
        except ImportError:
            raise SafeswapError("a LoRA adapter as the model needs PEFT: pip install peft") from None
        self.model.to(self.device).eval()
        if not self.tokenizer.chat_template:
            raise SafeswapError(f"{self.model_name} has no chat template; safety evaluation needs a chat model")
        # Left padding keeps every prompt's last token at the end of the row,
        # which is where generation continues from.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.generation_config = self._generation_config()
        self._torch = torch

    @classmethod
    def from_options(cls, model: str, settings: DecodingSettings, options: BackendOptions) -> "HFBackend":
        return cls(model, settings, revision=options.revision, batch_size=options.batch_size, dtype=options.dtype,
                   device=options.device, tokenizer=options.tokenizer, adapter_base=options.adapter_base)

    @classmethod
    def decoding_identity(cls, settings: DecodingSettings, options: BackendOptions) -> dict[str, Any]:
        dtype = choose_dtype(options.dtype, choose_device(options.device))
        return _decoding(settings, dtype, options.tokenizer)

    def _generation_config(self):
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = self.settings.max_new_tokens
        config.pad_token_id = self.tokenizer.pad_token_id
        if config.eos_token_id is None:
            config.eos_token_id = self.tokenizer.eos_token_id
        if self.settings.greedy:
            config.do_sample = False
            # Clear sampling knobs a model's generation_config may carry, so greedy is truly greedy.
            config.temperature = None
            config.top_p = None
            config.top_k = None
        else:
            config.do_sample = True
            config.temperature = self.settings.temperature
            config.top_p = self.settings.top_p
        return config

    def decoding(self) -> dict[str, Any]:
        return _decoding(self.settings, self.torch_dtype, self.tokenizer_from)

    def _eos_ids(self) -> set[int]:
        eos = self.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        return {i for i in ids if i is not None}

    def _content_as_parts(self) -> bool:
        """Whether the template reads message content only as a list of {"type": "text", ...} parts.

        Such templates (Llama Guard 3 1B's, for one) silently render a plain
        string as nothing, so the model would judge an empty conversation.
        Templates that also accept strings test `is string` first.
        """
        template = self.tokenizer.chat_template or ""
        return "is string" not in template and ("['type']" in template or "'type'" in template)

    def render(self, conversations: Sequence[Conversation], add_generation_prompt: bool = True) -> list[str]:
        """The prompts exactly as the model sees them (chat template applied)."""
        if self._content_as_parts():
            conversations = [
                [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in c] for c in conversations
            ]
        try:
            return [
                self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=add_generation_prompt)
                for c in conversations
            ]
        except Exception as exc:  # jinja errors from a template that rejects the roles used
            raise SafeswapError(f"the chat template of {self.model_name} failed: {exc}") from None

    def generate(
        self, conversations: Sequence[Conversation], *, add_generation_prompt: bool = True
    ) -> Iterator[tuple[int, Generation]]:
        texts = self.render(conversations, add_generation_prompt)
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        # Longest first: similar lengths share a batch (less padding) and an
        # out-of-memory error shows up in the first batch, not the last.
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        eos_ids = self._eos_ids()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for index, generation in zip(batch, self._generate_batch([texts[i] for i in batch], eos_ids)):
                yield index, generation

    def _generate_batch(self, texts: list[str], eos_ids: set[int]) -> list[Generation]:
        torch = self._torch
        # The chat template already holds the BOS token where the model wants one.
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if not self.settings.greedy:
            torch.manual_seed(self.settings.seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation_config)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        generations = []
        for row in new_tokens:
            stop = next((i for i, token in enumerate(row) if token in eos_ids), None)
            kept = row if stop is None else row[:stop]
            # A cut at max_new_tokens can split a multi-byte character; drop its remains.
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip().rstrip("\ufffd")
            generations.append(Generation(text, n_tokens=len(kept), finish_reason="length" if stop is None else "stop"))
        return generations

    def close(self) -> None:
        torch = self._torch
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
