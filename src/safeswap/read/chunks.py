"""Compute helpers shared by the analysis and the engine: row chunks, reused buffers, the finite test.

Both stages stream a tensor in row chunks small enough for their float32 copies to
stay in the CPU cache, into per-thread buffers that are reused rather than
reallocated, and test each chunk for NaN/Inf on its exponent bits.
"""

from __future__ import annotations

import threading
from typing import Iterator

import torch

from safeswap.read.checkpoint import TensorInfo

# A float is NaN or Inf exactly when its exponent field is all ones. Testing those bits
# on an integer view is one fast pass; torch.isfinite on bfloat16 is fifteen times slower.
_EXPONENT_BITS = {
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float16: (torch.int16, 0x7C00),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}

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
