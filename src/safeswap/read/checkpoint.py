"""Lazy, validated reads of safetensors checkpoints.

A Checkpoint parses only the shard headers up front; tensor bytes are read on
demand with pread into one buffer, so memory stays at one tensor (or one chunk
of one) no matter how large the model is. Files are never memory-mapped, so the
page cache does not show up as our resident memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from safeswap.errors import SafeswapError
from safeswap.files import StrictJsonError, load_json
from safeswap.read.header import ITEM_SIZES, read_header
from safeswap.read.shards import list_shards, model_file

_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {name: (_TORCH_DTYPES[name], size) for name, size in ITEM_SIZES.items()}
TORCH_TO_SAFETENSORS = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}

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


class Checkpoint:
    """A model folder: its config, tokenizer files and lazily read tensors."""

    def __init__(self, folder: str | os.PathLike, role: str = "model"):
        self.folder = Path(folder)
        self.role = role
        if not self.folder.is_dir():
            raise SafeswapError(f"{role} model: {self.folder} is not a folder")
        self.config = self._read_json("config.json", required=True)
        self._read_json("tokenizer_config.json")  # parsed when a merge copies it: checked now, before any write
        self.shards = list_shards(self.folder)
        self.tensors: dict[str, TensorInfo] = {}
        for shard in self.shards:
            header = read_header(shard)
            for name, e in header.entries.items():
                if name in self.tensors:
                    raise SafeswapError(f"{role} model: tensor {name!r} appears in two shards")
                self.tensors[name] = TensorInfo(
                    name, e.dtype, e.shape, shard, header.data_start + e.begin, header.data_start + e.end
                )
        self._fds: dict[Path, int] = {}

    def _read_json(self, name: str, required: bool = False) -> dict | None:
        """A JSON side file read strictly (a key twice, NaN or Infinity refused): one JSON object, or None when absent."""
        path = model_file(self.folder, name)
        if path is None:
            if required:
                raise SafeswapError(f"{self.role} model: {self.folder} has no {name}")
            return None
        try:
            data = load_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            detail = str(e) if isinstance(e, StrictJsonError) else e.__class__.__name__
            raise SafeswapError(f"{self.role} model: {path} is unreadable ({detail})") from None
        if not isinstance(data, dict):
            raise SafeswapError(f"{self.role} model: {path} is not a JSON object")
        return data

    def side_file(self, name: str) -> Path | None:
        """A config, tokenizer or chat-template file of this model (None when absent), through the containment rule."""
        return model_file(self.folder, name)

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

    def stored_range(self, name: str, first_row: int = 0) -> tuple[int, int]:
        """(open file descriptor, byte offset) where rows of a tensor from `first_row` on are stored: a
        writer can copy them file to file (os.copy_file_range) without reading them into Python."""
        info = self.tensors[name]
        return self._fd(info.file), info.start + first_row * info.row_bytes

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
