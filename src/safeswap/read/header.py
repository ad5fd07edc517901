"""The one safetensors header parser: every check the format requires, without torch.

A shard from a stranger is read here before a single tensor byte is trusted. The
format (huggingface/safetensors) requires: an 8-byte little-endian header length, a
JSON object of {name: {dtype, shape, data_offsets}} plus an optional __metadata__
of strings, each byte range exactly shape x item size, and the ranges, sorted,
tiling the data section with no overlap and no gap. A file breaking any of these
would otherwise be read wrongly (two tensors sharing bytes) or crash deep inside a
library, so each is refused here in one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.files import StrictJsonError, load_json

# safetensors dtype name -> bytes per element
ITEM_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


@dataclass(frozen=True)
class HeaderEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the data section
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, HeaderEntry]  # in the file's storage order
    data_start: int  # absolute offset of the data section
    raw: bytes  # the JSON bytes, as stored


def read_header(path: str | Path) -> Header:
    """Parse and validate one shard's header (see the module docstring for every rule)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafeswapError(f"{path}: not a safetensors file (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise SafeswapError(f"{path}: header claims {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit")
        if 8 + header_len > size:
            raise SafeswapError(f"{path}: truncated (header claims {header_len} bytes, file has {size})")
        raw = f.read(header_len)
    try:
        parsed = load_json(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafeswapError(f"{path}: corrupt safetensors header ({e.__class__.__name__})") from None
    except StrictJsonError as e:
        raise SafeswapError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(parsed, dict):
        raise SafeswapError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = parsed.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise SafeswapError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    entries = sorted((_entry(path, name, value) for name, value in parsed.items()), key=lambda e: (e.begin, e.end))
    data_start = 8 + header_len
    _check_tiling(path, entries, size - data_start)
    return Header({e.name: e for e in entries}, data_start, raw)


def _entry(path: Path, name: str, value: object) -> HeaderEntry:
    try:
        dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]  # type: ignore[index]
        begin, end = offsets
    except (KeyError, TypeError, ValueError):
        raise SafeswapError(f"{path}: corrupt header entry for tensor {name!r}") from None
    if dtype not in ITEM_SIZES:
        raise SafeswapError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise SafeswapError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if not (_is_count(begin) and _is_count(end)) or begin > end:
        raise SafeswapError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
    numel = 1
    for s in shape:
        numel *= s
    if end - begin != numel * ITEM_SIZES[dtype]:
        raise SafeswapError(f"{path}: tensor {name!r} byte range does not match its shape {shape}")
    return HeaderEntry(name, dtype, tuple(shape), begin, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tiling(path: Path, entries: list[HeaderEntry], data_len: int) -> None:
    """Sorted byte ranges must follow each other exactly from 0 to the end of the file.

    A range past the end is reported first: it is the root cause (a truncated file, or a header
    that lies about its sizes), and the gap it leaves behind it is only a symptom."""
    overrun = max(entries, key=lambda e: e.end, default=None)
    if overrun is not None and overrun.end > data_len:
        raise SafeswapError(
            f"{path}: truncated: tensor {overrun.name!r} (bytes {overrun.begin}-{overrun.end}) runs "
            f"{overrun.end - data_len} bytes past the end of the {data_len}-byte data section"
        )
    position, previous = 0, None
    for e in entries:
        if e.begin < position:
            raise SafeswapError(
                f"{path}: tensor {e.name!r} overlaps tensor {previous!r} (bytes {e.begin}-{e.end}); "
                "two tensors may not share bytes"
            )
        if e.begin > position:
            raise SafeswapError(f"{path}: {e.begin - position} unused bytes before tensor {e.name!r}; the data section must have no gap")
        position, previous = e.end, e.name
    if position != data_len:
        raise SafeswapError(f"{path}: {data_len - position} bytes after the last tensor; the data section must end there")
