"""The inputs' sha256 for the manifest and the plan, computed in a child process while the merge reads the same files.

Each file's sha256 is its content identity (safeswap.read.content_id): taken from a hub
blob name or the user's sha256 cache when known, else hashed by the child, which fills the
cache, so a second merge of the same inputs hashes nothing (and starts no child).

The CLI starts it before torch is imported (start_hashing_early), so the second
core hashes while the first imports; the merge then adopts that hasher when it
covers exactly its input folders. A caller that merges the same inputs many times
(`safeswap search`) hashes them once (hash_folders) and hands the result to each
merge (known_hashes), which writes the same manifest without hashing again.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.read.content_id import cached_sha256, file_sha256, identity_files


class InputHasher:
    """Hashes every input file in a child process while the merge reads the same files.

    A process, not a thread: a hashing thread trades the GIL with the main work (the
    torch import, the chunk dispatch) after every block and got well under a core.
    The child shares the page cache, so the hashes cost no extra pass over the disk.
    """

    def __init__(self, folders: dict[str, Path]):
        self.folders = {role: Path(folder) for role, folder in folders.items()}
        self._files = [(role, f) for role, folder in self.folders.items() for f in identity_files(folder)]
        # Files whose sha256 is known without reading them (hub blobs, cached) need no child.
        self._known = [[f.stat().st_size, cached_sha256(f)] for _, f in self._files]
        unknown = [str(f) for (_, f), (_, digest) in zip(self._files, self._known) if digest is None]
        self._proc = None
        if unknown:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "safeswap.write.hasher", *unknown],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            atexit.register(self.cancel)

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        computed = iter([])
        if self._proc is not None:
            out, err = self._proc.communicate()
            atexit.unregister(self.cancel)
            lines = err.decode(errors="replace").strip().splitlines()
            if self._proc.returncode != 0:
                raise SafeswapError(f"could not hash the input files: {lines[-1] if lines else 'hasher failed'}")
            computed = iter(json.loads(out))
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for (role, path), (size, digest) in zip(self._files, self._known, strict=True):
            if digest is None:
                size, digest = next(computed)
            result.setdefault(role, {})[path.name] = {"size": size, "sha256": digest}
        return result

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


_early: list[InputHasher] = []


def start_hashing_early(folders: dict[str, str | Path | None]) -> None:
    """Start hashing local input folders before the heavy imports (the CLI calls this
    before torch loads, so that the second core hashes while the first imports).

    Anything unusual (a hub id, a folder that will be refused) is left to the merge
    itself, which validates the inputs and reports the problem.
    """
    try:
        paths = {role: Path(folder) for role, folder in folders.items() if folder is not None}
        if len(paths) == len(folders) and all(p.is_dir() for p in paths.values()):
            _early.append(InputHasher(paths))
    except (SafeswapError, OSError):
        pass


def input_hasher(folders: dict[str, Path]) -> InputHasher:
    """A hasher for these input folders: one started early when it covers exactly them, else a new one."""
    wanted = {role: Path(folder).absolute() for role, folder in folders.items()}
    while _early:
        early = _early.pop()
        if {role: f.absolute() for role, f in early.folders.items()} == wanted:
            return early
        early.cancel()
    return InputHasher(folders)


def hash_folders(folders: dict[str, Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """{role: {file name: {size, sha256}}} of every file a manifest records, as a merge of these folders hashes them."""
    return input_hasher(folders).result()


class KnownHashes:
    """Input hashes computed earlier, behind the hasher's interface (result, cancel)."""

    def __init__(self, hashes: dict[str, dict[str, dict[str, Any]]]):
        self._hashes = hashes

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._hashes

    def cancel(self) -> None:
        pass


def known_hashes(hashes: dict, folders: dict[str, Path]) -> KnownHashes:
    """Precomputed hashes (hash_folders' shape) checked against the folders: the same roles, files and sizes.

    They are rebuilt in the order the hasher gives, so the manifest is byte-identical to the one
    a merge that hashed would write, whatever order the dict came in (a JSON round trip, say)."""
    if not isinstance(hashes, dict) or set(hashes) != set(folders):
        got = sorted(hashes) if isinstance(hashes, dict) else type(hashes).__name__
        raise SafeswapError(f"the precomputed input sha256 are for {got}, the merge reads {sorted(folders)}")
    ordered: dict[str, dict[str, dict[str, Any]]] = {}
    for role, folder in folders.items():
        files = identity_files(Path(folder))
        given = hashes[role]
        if not isinstance(given, dict) or set(given) != {f.name for f in files}:
            raise SafeswapError(f"the precomputed input sha256 do not list the files of the {role} model {folder}")
        ordered[role] = {}
        for f in files:
            entry = given[f.name]
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                raise SafeswapError(f"the precomputed input sha256 of {f} is not {{size, sha256}}")
            if entry.get("size") != f.stat().st_size:
                raise SafeswapError(f"{f} changed size since its sha256 was computed; hash the inputs again")
            ordered[role][f.name] = {"size": entry["size"], "sha256": entry["sha256"]}
    return KnownHashes(ordered)


def _hash_files_main(paths: list[str]) -> None:
    """The hasher child: prints [[size, sha256], ...] for the given files, in order, filling the sha256 cache."""
    try:
        digests = [[Path(p).stat().st_size, file_sha256(Path(p))] for p in paths]
    except OSError as e:
        sys.exit(f"{e.filename}: {e.strerror}")
    print(json.dumps(digests))


if __name__ == "__main__":
    _hash_files_main(sys.argv[1:])
