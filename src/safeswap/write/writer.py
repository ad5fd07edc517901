"""Atomic output folders and a streaming sharded safetensors writer.

Every shape and dtype is known before any data exists (the receiver's headers,
and --dtype where given), so each shard's header is computed up front and tensor bytes are appended in order:
no shard is ever held in memory. The output is written into a hidden temporary
folder beside the destination and renamed only once complete, so the
destination holds either nothing or a whole model.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from safeswap.read.checkpoint import DTYPES
from safeswap.write.destination import check_destination
from safeswap.write.file_copy import append_range
from safeswap.merged_folder import shard_filenames
from safeswap.read.shards import INDEX_NAME
from safeswap.errors import SafeswapError

TMP_MARKER = ".safeswap-tmp-"


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype][1]
        for s in self.shape:
            n *= s
        return n


def parse_size(text: str | int, flag: str = "size") -> int:
    """'5GB', '500MB', '2GiB' or a plain byte count -> bytes; errors name `flag`."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise SafeswapError(f"{flag} must be positive, got {text}")
        return text
    s = str(text).strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    for suffix, mult in units.items():
        if s.endswith(suffix):
            number = s[: -len(suffix)]
            break
    else:
        number, mult = s, 1
    try:
        value = int(float(number) * mult)
    except ValueError:
        raise SafeswapError(f"{flag}: cannot read size {text!r}; write e.g. 5GB, 500MB or 2GiB") from None
    if value <= 0:
        raise SafeswapError(f"{flag} must be positive, got {text!r}")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(destination: Path) -> None:
    """Remove temporary folders left beside destination by killed runs (dead pids only)."""
    parent = destination.parent
    if not parent.is_dir():
        return
    prefix = f".{destination.name}{TMP_MARKER}"
    for entry in parent.iterdir():
        if entry.name.startswith(prefix):
            pid = entry.name[len(prefix):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(destination: str | os.PathLike, force: bool = False, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces destination, on any failure it is removed.

    SIGTERM is turned into an exception so that the cleanup runs; SIGKILL leaves
    the temporary folder, which the next run beside it removes.
    """
    destination = Path(destination).absolute()
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(destination)
    tmp = destination.parent / f".{destination.name}{TMP_MARKER}{os.getpid()}-{os.urandom(3).hex()}"
    tmp.mkdir()
    previous = _raise_on_sigterm()
    try:
        yield tmp
        if destination.exists():
            check_destination(destination, force)  # again: something may have appeared while merging
            old = destination.parent / f".{destination.name}{TMP_MARKER}{os.getpid()}-old"
            destination.rename(old)
            tmp.rename(destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(destination)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            need = f"; the merge needs {needed_bytes / 1e9:.2f} GB" if needed_bytes else ""
            raise SafeswapError(f"disk full while writing {destination}; the partial output was removed{need}") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _restore_sigterm(previous)


def _raise_on_sigterm():
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def plan_shards(tensors: list[OutputTensor], shard_size: int) -> list[list[OutputTensor]]:
    """Greedy, order-preserving split into shards of at most shard_size data bytes.

    A tensor larger than shard_size gets a shard of its own.
    """
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header_bytes(tensors: list[OutputTensor]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes, as the safetensors library does
    return len(raw).to_bytes(8, "little") + raw


def check_tensor_written(tensor: OutputTensor | None, written: int) -> None:
    """A writer moves to the next tensor (or closes) only once the current one has all its bytes."""
    if tensor is not None and written != tensor.nbytes:
        raise RuntimeError(f"tensor {tensor.name}: wrote {written} of {tensor.nbytes} bytes")


def check_all_written(position: int, count: int) -> None:
    if position != count - 1:
        raise RuntimeError("writer closed before every tensor was written")


class ShardedWriter:
    """Append tensors, in the announced order, to pre-planned safetensors shards."""

    def __init__(self, folder: Path, tensors: list[OutputTensor], shard_size: int):
        self.folder = Path(folder)
        self.shards = plan_shards(tensors, shard_size)
        self.filenames = shard_filenames(len(self.shards))
        self.order = [(i, t) for i, shard in enumerate(self.shards) for t in shard]
        self.sha256: dict[str, str] = {}
        self._position = -1  # index into self.order of the tensor being written
        self._written = 0  # bytes of that tensor written so far
        self._file = None
        self._shard = -1
        self._hash = None
        # sha256 runs on its own thread (hashlib releases the GIL), in write order.
        self._hasher = ThreadPoolExecutor(max_workers=1)
        self._last_hash = None

    def _open_shard(self, index: int) -> None:
        self._close_shard()
        self._shard = index
        self._file = open(self.folder / self.filenames[index], "wb")
        self._hash = hashlib.sha256()
        self._emit(_header_bytes(self.shards[index]))

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            digest = self._hash
            self.sha256[self.filenames[self._shard]] = self._hasher.submit(digest.hexdigest)
            self._file = None

    def _emit(self, data) -> Future:
        self._file.write(data)
        return self._hash_next(data)

    def _copy(self, data, source: tuple[int, int]) -> Future:
        """Append the bytes an input file stores at source (fd, offset), which `data` holds too (for the hash)."""
        self._file.flush()  # the buffered header and small tensors go first
        append_range(source[0], source[1], self._file.fileno(), data)
        return self._hash_next(data)

    def _hash_next(self, data) -> Future:
        self._last_hash = self._hasher.submit(self._hash.update, data)
        return self._last_hash

    def write(self, name: str, data, source: tuple[int, int] | None = None) -> Future:
        """Append bytes (a chunk or all) of tensor `name`; tensors must come in order.

        With `source` (file descriptor, offset) where an input stores these same bytes, they
        are copied file to file in the kernel (write.file_copy); `data` is still hashed.
        Returns a future that completes once `data` is hashed: the caller must not
        reuse the buffer before then.
        """
        if self._position < 0 or self.order[self._position][1].name != name:
            self._finish_tensor()
            self._position += 1
            if self._position >= len(self.order) or self.order[self._position][1].name != name:
                expected = self.order[self._position][1].name if self._position < len(self.order) else "nothing"
                raise RuntimeError(f"writer expected tensor {expected}, got {name}")
            shard = self.order[self._position][0]
            if shard != self._shard:
                self._open_shard(shard)
        self._written += len(data)
        if self._written > self.order[self._position][1].nbytes:
            raise RuntimeError(f"too many bytes for tensor {name}")
        return self._emit(data) if source is None else self._copy(data, source)

    def _finish_tensor(self) -> None:
        check_tensor_written(self.order[self._position][1] if self._position >= 0 else None, self._written)
        self._written = 0

    def close(self) -> dict[str, str]:
        """Finish the last shard, write the index when sharded; returns {filename: sha256}."""
        self._finish_tensor()
        check_all_written(self._position, len(self.order))
        self._close_shard()
        self.sha256 = {name: future.result() for name, future in self.sha256.items()}
        self._hasher.shutdown()
        if len(self.shards) > 1:
            weight_map = {t.name: self.filenames[i] for i, t in self.order}
            total = sum(t.nbytes for _, t in self.order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return self.sha256
