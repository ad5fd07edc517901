"""The inputs' sha256 for the manifest, computed in a child process while the merge reads the same files.

The CLI starts it before torch is imported (start_hashing_early), so the second
core hashes while the first imports; the merge then adopts that hasher when it
covers exactly its input folders.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.files import sha256_file
from safeswap.write.manifest import model_files


class InputHasher:
    """Hashes every input file in a child process while the merge reads the same files.

    A process, not a thread: a hashing thread trades the GIL with the main work (the
    torch import, the chunk dispatch) after every block and got well under a core.
    The child shares the page cache, so the hashes cost no extra pass over the disk.
    """

    def __init__(self, folders: dict[str, Path]):
        self.folders = {role: Path(folder) for role, folder in folders.items()}
        self._files = [(role, f) for role, folder in self.folders.items() for f in model_files(folder)]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "safeswap.write.hasher", *(str(f) for _, f in self._files)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        atexit.register(self.cancel)

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        out, err = self._proc.communicate()
        atexit.unregister(self.cancel)
        lines = err.decode(errors="replace").strip().splitlines()
        if self._proc.returncode != 0:
            raise SafeswapError(f"could not hash the input files: {lines[-1] if lines else 'hasher failed'}")
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for (role, path), (size, digest) in zip(self._files, json.loads(out), strict=True):
            result.setdefault(role, {})[path.name] = {"size": size, "sha256": digest}
        return result

    def cancel(self) -> None:
        if self._proc.poll() is None:
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


def _hash_files_main(paths: list[str]) -> None:
    """The hasher child: prints [[size, sha256], ...] for the given files, in order."""
    try:
        digests = [[Path(p).stat().st_size, sha256_file(Path(p))] for p in paths]
    except OSError as e:
        sys.exit(f"{e.filename}: {e.strerror}")
    print(json.dumps(digests))


if __name__ == "__main__":
    _hash_files_main(sys.argv[1:])
