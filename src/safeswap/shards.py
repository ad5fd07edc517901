"""Which files hold a model folder's weights, found without importing torch.

Kept apart from checkpoint.py so that the CLI can list (and start hashing) the
input files while torch is still being imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safeswap.errors import SafeswapError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_NAME = "model.safetensors.index.json"


def _allowed_roots(folder: Path) -> list[Path]:
    """Where a model folder's files may really live.

    The folder itself, and for a Hugging Face cache snapshot (…/models--org--name/
    snapshots/<rev>/, whose files are symlinks into ../../blobs) that repo's blobs.
    """
    roots = [folder.resolve()]
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        roots.append((folder.parent.parent / "blobs").resolve())
    return roots


def _inside(folder: Path, target: Path) -> bool:
    resolved = target.resolve()
    for root in _allowed_roots(folder):
        if resolved == root or root in resolved.parents:
            return True
    return False


def list_shards(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, from the index when there is one."""
    index_path = folder / INDEX_NAME
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SafeswapError(f"{index_path}: malformed index (needs a 'weight_map' object)") from None
        shards = []
        for name in names:
            if not isinstance(name, str) or os.path.isabs(name) or ".." in Path(name).parts:
                raise SafeswapError(f"{index_path}: shard path {name!r} points outside the model folder; refused")
            path = folder / name
            if not _inside(folder, path):
                raise SafeswapError(f"{index_path}: shard {name!r} resolves outside the model folder; refused")
            if not path.is_file():
                raise SafeswapError(f"{index_path}: names shard {name!r}, which is missing")
            shards.append(path)
        return shards
    shards = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    for path in shards:
        if not _inside(folder, path):
            raise SafeswapError(f"{path}: symlink leads outside the model folder; refused")
    if not shards:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise SafeswapError(
                f"{folder}: only pickle weights ({', '.join(pickles[:3])}); safeswap never unpickles them, "
                "because loading a pickle runs arbitrary code. Convert them once in a trusted environment: "
                "AutoModelForCausalLM.from_pretrained(path).save_pretrained(out, safe_serialization=True)"
            )
        raise SafeswapError(f"{folder}: no *.safetensors weights found")
    return shards
