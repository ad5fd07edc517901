"""Where a merged folder may be written, and what --force may replace.

The rules keep a merge from destroying anything the user gave: an output never is,
contains or lies inside an input (after resolving symlinks, hub cache repos
included), and --force replaces only an empty folder or one that safeswap wrote
itself (its manifest is there and every entry is a file safeswap writes). The
free-space check before a merge starts lives here too. A search folder (marked by its lock
file, search/lock.py) is never a merge's destination: a merge into it would meet the search.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

from safeswap.errors import SafeswapError
from safeswap.merged_folder import MANIFEST_FILENAME, is_output_file
from safeswap.read.shards import owned_roots

SEARCH_LOCK_FILENAME = "search.lock"  # in every search folder (search/lock.py); named here for the rule below


def _relation(out: Path, root: Path) -> str | None:
    if out == root:
        return "is"
    if root in out.parents:
        return "lies inside"
    if out in root.parents:
        return "contains"
    return None


def check_clear_of_inputs(out: str | Path, inputs: Iterable[tuple[str, Path]], what: str = "output folder") -> None:
    """Refuse an output path that is, contains or lies inside any input (role, folder)."""
    resolved = Path(out).expanduser().resolve()
    for role, folder in inputs:
        for root in owned_roots(Path(folder)):
            relation = _relation(resolved, root)
            if relation:
                raise SafeswapError(
                    f"{what} {resolved} {relation} the {role} model's folder {root}; "
                    "an output may never touch an input: choose another place"
                )


def _written_by_safeswap(folder: Path) -> str | None:
    """None when folder is a single merged folder safeswap wrote, else why not."""
    try:
        manifest = json.loads((folder / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {MANIFEST_FILENAME}"
    except (OSError, ValueError):
        return f"its {MANIFEST_FILENAME} is unreadable"
    if not isinstance(manifest, dict) or manifest.get("format") != "safeswap.manifest/1":
        return f"its {MANIFEST_FILENAME} is not a safeswap manifest"
    for entry in folder.iterdir():
        if entry.is_symlink() or not entry.is_file():
            return f"it holds {entry.name!r}, which is not a file safeswap writes"
        if not is_output_file(entry.name):
            return f"it holds {entry.name!r}, which safeswap does not write"
    return None


def replaceable_reason(folder: Path) -> str | None:
    """None when --force may replace folder: a merged folder, or a folder of merged folders
    (one per language, as `merge --language ko=... --language sw=...` writes); else why not."""
    single = _written_by_safeswap(folder)
    if single is None:
        return None
    entries = list(folder.iterdir())
    if entries and all(e.is_dir() and not e.is_symlink() and _written_by_safeswap(e) is None for e in entries):
        return None
    return single


def check_destination(destination: str | Path, force: bool, inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Refuse a destination the merge must not write: see the module docstring."""
    destination = Path(destination).expanduser()
    check_clear_of_inputs(destination, inputs)
    resolved = destination.resolve()
    if not destination.exists():
        return
    if not destination.is_dir():
        raise SafeswapError(f"output path {resolved} exists and is a file; choose a folder name")
    if (destination / SEARCH_LOCK_FILENAME).exists():
        raise SafeswapError(f"output folder {resolved} is a safeswap search folder; a merge never writes into one "
                            "(--force neither): choose another --out")
    if not any(destination.iterdir()):
        return
    if not force:
        raise SafeswapError(f"output folder {resolved} exists and is not empty; use --force to replace it")
    reason = replaceable_reason(destination)
    if reason:
        raise SafeswapError(
            f"--force replaces only an empty folder or one safeswap wrote, and {resolved} is neither ({reason}); "
            "remove it yourself or choose another --out"
        )


def check_free_space(out: Path, needed: int) -> None:
    """Refuse to start a merge whose shards would not fit on the destination's file system."""
    parent = Path(out).absolute().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < needed * 1.02 + (64 << 20):  # shards plus a little for configs, figures, file-system slack
        raise SafeswapError(
            f"not enough disk space at {parent}: the merge needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB is free"
        )
