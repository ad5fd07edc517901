"""One content identity for every input file: its full sha256, and a model's fingerprint built from them.

Plans, statistics, manifests, `safeswap verify --inputs`, a search's resume record and
evaluation results all name an input by this identity, so any changed byte of any input
file is seen by all of them alike. The sha256 is never computed twice for the same bytes:

- a hub snapshot file is a symlink to .../blobs/<sha256> for LFS files (the weights): the
  blob's name is the file's sha256, read without reading the file (a 40-hex blob name is a
  git sha1 of a small file, not usable: that file is hashed like any other);
- any other file is hashed once and its sha256 kept in the user's cache folder
  ($SAFESWAP_CACHE or ~/.cache/safeswap, under sha256/), keyed by (device, inode, size,
  mtime_ns). One entry per (device, inode), replaced atomically, so the cache holds at most
  one entry per file ever seen; an entry that does not parse or whose check digest does not
  match is ignored and rewritten, never trusted. A file modified within the last
  RECENT_SECONDS is hashed but not cached: a write landing in the same mtime tick as the hash
  would otherwise leave a stale entry behind.

A model's fingerprint is "sha256:" + the sha256 of its identity files' names, sizes and
sha256 (weights, every JSON file, the non-JSON tokenizer and chat-template files); an
adapter's also covers its base's fingerprint. A hub id not yet downloaded is named
"hub:<id>@<revision>" (evaluation only: a merge always reads a local folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.files import atomic_write, sha256_file, user_cache_folder
from safeswap.read.shards import TOKENIZER_FILES, list_shards, model_file

CACHE_SUBFOLDER = "sha256"
RECENT_SECONDS = 2.0
OTHER_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.gguf")  # fingerprinted (for evaluation), never read by a merge
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def identity_files(folder: Path) -> list[Path]:
    """The files that make up a model folder's identity, in a fixed order: the safetensors shards
    (from the index when there is one), every JSON file, and the tokenizer files that are not JSON.

    A folder with pickle weights only (never merged, but evaluated) is identified by those."""
    folder = Path(folder)
    try:
        weights = list_shards(folder)
    except SafeswapError:
        weights = sorted(p for pattern in OTHER_WEIGHTS for p in folder.glob(pattern) if p.is_file())
        if not weights:
            raise
    names = sorted({p.name for p in folder.glob("*.json")} | {n for n in TOKENIZER_FILES if not n.endswith(".json")})
    side = [p for p in (model_file(folder, name) for name in names) if p is not None]
    return weights + side


def hub_blob_sha256(path: Path) -> str | None:
    """The sha256 a hub cache's blob name gives (snapshot symlink -> models--org--name/blobs/<64 hex>), else None."""
    if not Path(path).is_symlink():
        return None
    target = Path(path).resolve()
    # Only the hub cache's own layout (models--org--name/blobs/<sha256>) is trusted to name its bytes.
    if target.parent.name == "blobs" and target.parent.parent.name.startswith("models--") and _SHA256.match(target.name):
        return target.name
    return None


def _cache_entry(stat: os.stat_result) -> Path:
    return user_cache_folder() / CACHE_SUBFOLDER / f"{stat.st_dev:x}-{stat.st_ino:x}.json"


def _key(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _check(key: list[int], digest: str) -> str:
    """The entry's own check digest: a flipped or truncated entry fails it and is ignored."""
    return hashlib.sha256(json.dumps([key, digest]).encode()).hexdigest()


def cached_sha256(path: Path, stat: os.stat_result | None = None) -> str | None:
    """The file's sha256 from its blob name or the cache, without reading the file; None when unknown."""
    blob = hub_blob_sha256(path)
    if blob is not None:
        return blob
    stat = stat or os.stat(path)
    try:
        entry = json.loads(_cache_entry(stat).read_text(encoding="utf-8"))
        key, digest = entry["key"], entry["sha256"]
        if key == _key(stat) and isinstance(digest, str) and _SHA256.match(digest) and entry["check"] == _check(key, digest):
            return digest
    except (OSError, ValueError, TypeError, KeyError):
        pass  # no entry, or a corrupt one: hashed again and rewritten
    return None


def store_sha256(stat: os.stat_result, digest: str) -> None:
    """Keep a file's sha256 for its (device, inode, size, mtime_ns); a cache that cannot be written is skipped."""
    key = _key(stat)
    entry = json.dumps({"key": key, "sha256": digest, "check": _check(key, digest)})
    try:
        atomic_write(_cache_entry(stat), entry + "\n")
    except OSError:
        pass  # a read-only or full cache folder costs a rehash next time, nothing else


def file_sha256(path: str | os.PathLike) -> str:
    """A file's full sha256: from its hub blob name, the cache, or (then cached) its bytes."""
    path = Path(path)
    stat = os.stat(path)
    known = cached_sha256(path, stat)
    if known is not None:
        return known
    digest = sha256_file(path)
    after = os.stat(path)
    # Cache only bytes that held still: unchanged while read, and not written in the last moments.
    if _key(after) == _key(stat) and time.time() - stat.st_mtime_ns / 1e9 > RECENT_SECONDS:
        store_sha256(stat, digest)
    return digest


def folder_identity(folder: Path, compute: bool = True) -> dict[str, dict[str, Any]]:
    """{file name: {size, sha256}} of a folder's identity files; with compute=False a file not
    known without reading it has sha256 None."""
    files = {}
    for path in identity_files(Path(folder)):
        stat = os.stat(path)
        digest = file_sha256(path) if compute else cached_sha256(path, stat)
        files[path.name] = {"size": stat.st_size, "sha256": digest}
    return files


def fingerprint_of(files: dict[str, dict[str, Any]], base_fingerprint: str | None = None) -> str | None:
    """The fingerprint of a model from its identity files ({name: {size, sha256}}), an adapter's with
    its base's fingerprint; None when a sha256 (or the base's fingerprint) is not known yet."""
    if any(entry.get("sha256") is None for entry in files.values()):
        return None
    digest = hashlib.sha256()
    if base_fingerprint is not None:
        digest.update(f"base\0{base_fingerprint}\0".encode())
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['size']}\0{files[name]['sha256']}\0".encode())
    return "sha256:" + digest.hexdigest()
