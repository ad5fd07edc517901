"""safeswap-manifest.json: what a merged folder was made from, and a way to check it.

The manifest records the safeswap version, the plan's sha256, every input
file's size and sha256 (its content identity, safeswap.read.content_id: the files
read.content_id.identity_files lists), and every output shard's sha256. `safeswap verify`
re-hashes the shards against it and, with --inputs, re-reads every tensor the
plan took whole from an expert and checks it is byte-identical to its source.
"""

from __future__ import annotations

import json
from pathlib import Path

from safeswap.version import __version__
from safeswap.errors import SafeswapError
from safeswap.files import StrictJsonError, atomic_write, load_json, sha256_file
from safeswap.merged_folder import MANIFEST_FILENAME


def write_manifest(folder: Path, plan_sha256: str, inputs: dict, outputs: dict[str, str]) -> Path:
    manifest = {
        "format": "safeswap.manifest/1",
        "safeswap_version": __version__,
        "plan_sha256": plan_sha256,
        "inputs": inputs,
        "outputs": {name: {"sha256": digest} for name, digest in sorted(outputs.items())},
    }
    return atomic_write(folder / MANIFEST_FILENAME, json.dumps(manifest, indent=2) + "\n")


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILENAME
    try:
        manifest = load_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafeswapError(f"{folder} has no {MANIFEST_FILENAME}; it was not written by safeswap merge") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        detail = str(e) if isinstance(e, StrictJsonError) else e.__class__.__name__
        raise SafeswapError(f"{path} is malformed ({detail})") from None
    outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        raise SafeswapError(f"{path} is malformed (no 'outputs' listing the shards)")
    for name, entry in outputs.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise SafeswapError(f"{path} is malformed (output {name!r} is not a file name in the folder)")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
            raise SafeswapError(f"{path} is malformed (output {name} has no 64-digit sha256)")
    return manifest


def verify_outputs(folder: Path) -> int:
    """Re-hash every output shard; raise on the first difference. Returns the shard count."""
    manifest = load_manifest(folder)
    for name, entry in manifest["outputs"].items():
        path = folder / name
        if not path.is_file():
            raise SafeswapError(f"shard {name} listed in the manifest is missing")
        if sha256_file(path) != entry["sha256"]:
            raise SafeswapError(f"shard {name} does not match its sha256 in the manifest")
    return len(manifest["outputs"])
