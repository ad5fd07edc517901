"""Which files of a model folder may be read, found without importing torch.

One containment rule for every file read from an input folder (weights, index,
config, generation config, tokenizer files, chat templates): it must resolve inside
the folder, or inside the hub cache's own blobs/ for a hub snapshot. A symlink to
anything else is refused, so a downloaded model cannot make safeswap read (and copy
into a merged folder) a private file. Kept apart from checkpoint.py so that the CLI
can list (and start hashing) the input files while torch is still being imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.files import load_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_NAME = "model.safetensors.index.json"
# Files a merged folder takes from an input besides config.json and the weights. Nothing
# else is ever read or copied: no remote code, no pickles, no READMEs of the inputs.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
SIDE_FILES = ("generation_config.json", *TOKENIZER_FILES)


def _hub_repo(folder: Path) -> Path | None:
    """The cached repo (…/models--org--name/) of a Hugging Face cache snapshot (…/snapshots/<rev>/), else None."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return None


def _allowed_roots(folder: Path) -> list[Path]:
    """Where a model folder's files may really live: the folder, and for a hub snapshot (whose
    files are symlinks into ../../blobs) that repo's blobs."""
    repo = _hub_repo(folder)
    return [folder.resolve()] + ([(repo / "blobs").resolve()] if repo else [])


def _inside(folder: Path, target: Path) -> bool:
    resolved = target.resolve()
    return any(resolved == root or root in resolved.parents for root in _allowed_roots(folder))


def owned_roots(folder: Path) -> list[Path]:
    """Every folder whose contents belong to this input: the folder, and for a hub snapshot
    the whole cached repo (snapshots and blobs). An output may never touch any of them."""
    folder = Path(folder)
    repo = _hub_repo(folder)
    return [folder.resolve()] + ([repo.resolve()] if repo else [])


def model_file(folder: Path, name: str) -> Path | None:
    """folder/name when it is a regular file that resolves inside the model folder; None when absent.

    A file that resolves elsewhere (a symlink out of the folder, dangling or not) is refused in one line.
    """
    path = Path(folder) / name
    if not (path.is_file() or path.is_symlink()):
        return None
    if not _inside(folder, path):
        raise SafeswapError(f"{path}: symlink leads outside the model folder; refused")
    return path if path.is_file() else None


def list_shards(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, from the index when there is one."""
    index_path = model_file(folder, INDEX_NAME)
    if index_path is not None:
        try:
            weight_map = load_json(index_path.read_text())["weight_map"]
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
