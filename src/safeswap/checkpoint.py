"""Lazy, validated reads of safetensors checkpoints.

A Checkpoint parses only the shard headers up front; tensor bytes are read on
demand with pread into one buffer, so memory stays at one tensor (or one chunk
of one) no matter how large the model is. Files are never memory-mapped, so the
page cache does not show up as our resident memory.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from safeswap.errors import SafeswapError
from safeswap.shards import list_shards

# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
TORCH_TO_SAFETENSORS = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}

# A float is NaN or Inf exactly when its exponent field is all ones. Testing those bits
# on an integer view is one fast pass; torch.isfinite on bfloat16 is fifteen times slower.
_EXPONENT_BITS = {
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float16: (torch.int16, 0x7C00),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes live: file and absolute byte range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][1]

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (of the first dimension); a scalar or empty tensor is one row."""
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes

    def chunk_bytes(self, rows: int | None) -> int:
        """Bytes of `rows` rows, or of the whole tensor when rows is None (see row_chunks)."""
        return self.nbytes if rows is None else rows * self.row_bytes


def read_header(path: Path) -> tuple[dict, int, bytes]:
    """Parse and validate one shard's header.

    Returns (header dict without __metadata__, offset of the data section, raw header bytes).
    Every check here exists because a truncated or hostile file would otherwise
    crash deep inside a library or make us read past the end of the file.
    """
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
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafeswapError(f"{path}: corrupt safetensors header ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise SafeswapError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    data_len = size - data_start
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafeswapError(f"{path}: corrupt header entry for tensor {name!r}") from None
        if dtype not in DTYPES:
            raise SafeswapError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        numel = 1
        for s in shape:
            numel *= int(s)
        if not (0 <= begin <= end) or end - begin != numel * DTYPES[dtype][1]:
            raise SafeswapError(f"{path}: tensor {name!r} byte range does not match its shape {list(shape)}")
        if end > data_len:
            raise SafeswapError(
                f"{path}: truncated: tensor {name!r} ends at byte {data_start + end}, file has {size} bytes"
            )
        spans.append((begin, end))
    return header, data_start, raw


class Checkpoint:
    """A model folder: its config, tokenizer files and lazily read tensors."""

    def __init__(self, folder: str | os.PathLike, role: str = "model"):
        self.folder = Path(folder)
        self.role = role
        if not self.folder.is_dir():
            raise SafeswapError(f"{role} model: {self.folder} is not a folder")
        self.config = self._read_config()
        self.shards = list_shards(self.folder)
        self.tensors: dict[str, TensorInfo] = {}
        self.headers: dict[Path, bytes] = {}
        for shard in self.shards:
            header, data_start, raw = read_header(shard)
            self.headers[shard] = raw
            for name, entry in header.items():
                if name in self.tensors:
                    raise SafeswapError(f"{role} model: tensor {name!r} appears in two shards")
                begin, end = entry["data_offsets"]
                self.tensors[name] = TensorInfo(
                    name, entry["dtype"], tuple(int(s) for s in entry["shape"]), shard, data_start + begin, data_start + end
                )
        self._fds: dict[Path, int] = {}

    def _read_config(self) -> dict:
        path = self.folder / "config.json"
        if not path.is_file():
            raise SafeswapError(f"{self.role} model: {self.folder} has no config.json")
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafeswapError(f"{self.role} model: {path} is unreadable ({e.__class__.__name__})") from None
        if not isinstance(config, dict):
            raise SafeswapError(f"{self.role} model: {path} is not a JSON object")
        return config

    @property
    def architecture(self) -> str | None:
        archs = self.config.get("architectures")
        return archs[0] if isinstance(archs, list) and archs else None

    def ordered_names(self) -> list[str]:
        """Tensor names in storage order (shard, then offset): sequential reads."""
        return [t.name for t in sorted(self.tensors.values(), key=lambda t: (str(t.file), t.start))]

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def read_into(self, info: TensorInfo, buffer: memoryview, offset: int = 0) -> None:
        """Fill buffer with info's bytes starting at byte `offset` within the tensor."""
        fd = self._fd(info.file)
        pos, view = info.start + offset, buffer
        while len(view):
            n = os.preadv(fd, [view], pos)
            if n <= 0:
                raise SafeswapError(f"{self.role} model: {info.file} ended early while reading {info.name!r}")
            view, pos = view[n:], pos + n

    def read_raw(self, name: str, first_row: int = 0, rows: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The stored bytes of whole rows of a tensor, as a flat uint8 tensor (no decoding).

        `out`, a uint8 buffer of at least that many bytes, is filled instead of a new
        allocation: the engine reuses buffers so that large merges never page-fault
        through fresh memory.
        """
        info = self.tensors[name]
        if rows is None:
            rows = (info.shape[0] - first_row) if info.shape else 1
        nbytes = rows * info.row_bytes
        if out is not None and out.numel() < nbytes:
            raise ValueError(f"buffer of {out.numel()} bytes is too small for {nbytes} bytes of {name}")
        buf = torch.empty(nbytes, dtype=torch.uint8) if out is None else out[:nbytes]
        self.read_into(info, memoryview(buf.numpy()), first_row * info.row_bytes)
        return buf

    def read(self, name: str, first_row: int = 0, rows: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows [first_row, first_row+rows) of a tensor, in its stored dtype."""
        info = self.tensors[name]
        tensor = self.read_raw(name, first_row, rows, out).view(DTYPES[info.dtype][0])
        if info.shape:
            return tensor.reshape((-1,) + info.shape[1:])
        return tensor.reshape(())

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def all_finite(values: torch.Tensor) -> bool:
    """True when no element is NaN or Inf (always true for integer tensors)."""
    if not values.is_floating_point() or values.numel() == 0:
        return True
    spec = _EXPONENT_BITS.get(values.dtype)
    if spec is None:  # float8 and other rare types
        return bool(torch.isfinite(values).all())
    int_dtype, mask = spec
    exponents = torch.bitwise_and(values.contiguous().view(int_dtype), mask)
    return int(exponents.max()) != mask


def row_chunks(info: TensorInfo, max_elements: int) -> Iterator[tuple[int, int | None]]:
    """Split a tensor into (first_row, rows) chunks of at most max_elements (at least one row)."""
    if not info.shape or info.shape[0] == 0:
        yield (0, None)
        return
    row_elements = max(1, info.numel // info.shape[0])
    rows_per_chunk = max(1, max_elements // row_elements)
    for first in range(0, info.shape[0], rows_per_chunk):
        yield first, min(rows_per_chunk, info.shape[0] - first)


class Workspace(threading.local):
    """Per-thread reusable buffers, grown on demand and never freed.

    Fresh 64 MB allocations cost a page fault per 4 KiB page and fragment the heap
    across threads; reusing a few buffers per thread keeps both time and resident
    memory flat.
    """

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str, nbytes: int) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < nbytes:
            buf = self.buffers[key] = torch.empty(max(nbytes, 1), dtype=torch.uint8)
        return buf[:nbytes]

    def floats(self, key: str, numel: int) -> torch.Tensor:
        return self.get(key, numel * 4).view(torch.float32)
