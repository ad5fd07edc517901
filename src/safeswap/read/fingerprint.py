"""A cheap, stable identity for a model (its content fingerprint), as recorded in plans and results and used to key cached generations.

Hashing every byte of a 70B checkpoint takes minutes, so a local folder is
fingerprinted from: config.json, the files that shape generation (tokenizer,
chat template, generation config), each weight file's size, each safetensors
shard's header, and a small block from the middle of every tensor plus a few
evenly spaced blocks of each file. Sampling every tensor matters here: a
layer-swapped model differs from its parents only in some tensors, and a
handful of blocks per file could all land on the unchanged ones.

A hub id is fingerprinted as "hub:<id>@<revision>" (revision "main" when not
given; pass a commit hash for a fingerprint that cannot drift).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.read.header import read_header
from safeswap.read.shards import model_file

# Files besides config.json that change what a model generates.
GENERATION_FILES = (
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
TENSOR_BLOCK = 4096  # bytes read from the middle of each tensor
FILE_BLOCKS = 4  # evenly spaced blocks per weight file
FILE_BLOCK = 1 << 16
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _update_with_file(digest: "hashlib._Hash", label: str, data: bytes) -> None:
    digest.update(f"{label}\0{len(data)}\0".encode())
    digest.update(data)


def _read_at(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def _hash_safetensors(digest, path: Path) -> None:
    header = read_header(path)
    digest.update(header.raw)
    with open(path, "rb") as f:
        for name in sorted(header.entries):
            e = header.entries[name]
            length = min(TENSOR_BLOCK, e.end - e.begin)
            middle = header.data_start + e.begin + (e.end - e.begin - length) // 2
            digest.update(_read_at(f, middle, length))
        _hash_spread_blocks(digest, f, header.data_start, path.stat().st_size)


def _hash_spread_blocks(digest, f, start: int, size: int) -> None:
    span = max(0, size - start - FILE_BLOCK)
    for i in range(FILE_BLOCKS):
        offset = start + (span * i) // max(1, FILE_BLOCKS - 1)
        digest.update(_read_at(f, offset, FILE_BLOCK))


def fingerprint_folder(folder: str | Path) -> str:
    """sha256 fingerprint of a local model folder (see the module docstring)."""
    folder = Path(folder)
    config = model_file(folder, "config.json")
    if config is None:
        raise SafeswapError(f"{folder} has no config.json; is it a model folder?")
    digest = hashlib.sha256()
    _update_with_file(digest, "config.json", config.read_bytes())
    for name in GENERATION_FILES:
        path = model_file(folder, name)
        if path is not None:
            _update_with_file(digest, name, path.read_bytes())
    found = {p.name for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)}
    weight_files = sorted(p for p in (model_file(folder, name) for name in found) if p is not None)
    if not weight_files:
        raise SafeswapError(f"{folder} has no weight files (*.safetensors, *.bin, *.gguf)")
    for path in weight_files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        if path.suffix == ".safetensors":
            _hash_safetensors(digest, path)
        else:
            with open(path, "rb") as f:
                _hash_spread_blocks(digest, f, 0, path.stat().st_size)
    return "sha256:" + digest.hexdigest()


def fingerprint_adapter(folder: str | Path, base_fingerprint: str) -> str:
    """sha256 fingerprint of a LoRA adapter on its base: the adapter's config and weights, and the base's fingerprint."""
    folder = Path(folder)
    digest = hashlib.sha256()
    digest.update(f"base\0{base_fingerprint}\0".encode())
    for name in ("adapter_config.json", *GENERATION_FILES):
        path = model_file(folder, name)
        if path is not None:
            _update_with_file(digest, name, path.read_bytes())
    weights = model_file(folder, "adapter_model.safetensors")
    if weights is None:
        raise SafeswapError(f"{folder} has no adapter_model.safetensors")
    digest.update(f"{weights.name}\0{weights.stat().st_size}\0".encode())
    _hash_safetensors(digest, weights)
    return "sha256:" + digest.hexdigest()


def is_local_model(model: str | Path) -> bool:
    return Path(model).expanduser().exists()


def fingerprint_model(model: str | Path, revision: str | None = None) -> str:
    """Fingerprint of a local folder, or "hub:<id>@<revision>" for a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return fingerprint_folder(path)
    if path.exists():
        raise SafeswapError(f"{model} is a file, not a model folder")
    text = str(model)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return f"hub:{text}@{revision or 'main'}"
    raise SafeswapError(f"model folder not found: {model}")


def model_label(model: str | Path) -> str:
    """A short name for reports: the folder name, or the last part of a hub id."""
    text = str(model).rstrip("/\\")
    return Path(text).name or text
