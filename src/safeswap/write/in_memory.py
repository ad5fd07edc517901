"""The engine's in-memory destination: each output tensor in a dict (name -> tensor) instead of in shards.

The engine hands it the same chunks, in the same order, that a ShardedWriter appends to
the shards, so a tensor here holds exactly the bytes the on-disk merge writes for it.
`safeswap search` uses it to probe a candidate without writing its checkpoint.
"""

from __future__ import annotations

from concurrent.futures import Future

import torch

from safeswap.read.checkpoint import DTYPES
from safeswap.write.writer import OutputTensor, check_all_written, check_tensor_written


def _done() -> Future:
    future: Future = Future()
    future.set_result(None)
    return future


class TensorWriter:
    """ShardedWriter's interface (write in the announced order, close) filling one preallocated tensor per output."""

    def __init__(self, tensors: list[OutputTensor], into: dict):
        self.order = list(tensors)
        self.into = into
        self._buffers = {t.name: torch.empty(t.nbytes, dtype=torch.uint8) for t in self.order}
        self._position = -1
        self._written = 0

    def write(self, name: str, data) -> Future:
        """Copy bytes (a chunk or all) of tensor `name`; tensors must come in order.

        The copy is done before returning, so the caller may reuse its buffer at once."""
        if self._position < 0 or self.order[self._position].name != name:
            self._finish_tensor()
            self._position += 1
            if self._position >= len(self.order) or self.order[self._position].name != name:
                expected = self.order[self._position].name if self._position < len(self.order) else "nothing"
                raise RuntimeError(f"writer expected tensor {expected}, got {name}")
        size = len(data)
        end = self._written + size
        if end > self.order[self._position].nbytes:
            raise RuntimeError(f"too many bytes for tensor {name}")
        memoryview(self._buffers[name].numpy())[self._written:end] = data
        self._written = end
        return _done()

    def _finish_tensor(self) -> None:
        check_tensor_written(self.order[self._position] if self._position >= 0 else None, self._written)
        self._written = 0

    def close(self) -> dict[str, str]:
        """Put every tensor, in its dtype and shape, into the dict; returns no shard hashes (there are no shards)."""
        self._finish_tensor()
        check_all_written(self._position, len(self.order))
        for t in self.order:
            self.into[t.name] = self._buffers.pop(t.name).view(DTYPES[t.dtype][0]).reshape(t.shape)
        return {}
