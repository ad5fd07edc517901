"""A model's identity as recorded in plans, statistics and results and used to key cached generations.

A local folder's fingerprint is built from the full sha256 of each of its files
(safeswap.read.content_id: the weights, every JSON file, the tokenizer and chat-template
files), so any changed byte changes it; the sha256 come from the hub cache's blob names or
the user's sha256 cache, so fingerprinting a model already seen reads none of its bytes.

A hub id is fingerprinted as "hub:<id>@<revision>" (revision "main" when not
given; pass a commit hash for a fingerprint that cannot drift).
"""

from __future__ import annotations

import re
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.read.content_id import fingerprint_of, folder_identity
from safeswap.read.shards import model_file

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def fingerprint_folder(folder: str | Path) -> str:
    """sha256 fingerprint of a local model folder (see the module docstring)."""
    folder = Path(folder)
    if model_file(folder, "config.json") is None:
        raise SafeswapError(f"{folder} has no config.json; is it a model folder?")
    return fingerprint_of(folder_identity(folder))


def fingerprint_adapter(folder: str | Path, base_fingerprint: str) -> str:
    """sha256 fingerprint of a LoRA adapter on its base: the adapter's files, and the base's fingerprint."""
    folder = Path(folder)
    if model_file(folder, "adapter_model.safetensors") is None:
        raise SafeswapError(f"{folder} has no adapter_model.safetensors")
    return fingerprint_of(folder_identity(folder), base_fingerprint)


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
