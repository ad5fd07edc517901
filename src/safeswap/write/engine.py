"""The merge engine: executes one operation per output tensor (never a plan), tensor by tensor, with bounded memory.

Work is cut into chunks of rows. Two worker threads read and compute chunks
ahead (reads and torch kernels release the GIL) while the main thread appends
finished chunks, in order, to the pre-planned shards. At most WINDOW chunks are
in flight, so memory is a few chunks whatever the model size.

- Take: the source's stored bytes are copied unchanged (no decode/re-encode); into shards
  file to file by the kernel (write.file_copy), read only for the output's sha256.
- Linear and other elementwise operations: inputs decoded to float32 chunk by
  chunk, combined, rounded once to the output dtype.
- Whole-tensor operations (e.g. TIES's magnitude threshold) get the full tensor.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from safeswap.read.checkpoint import DTYPES, FLOAT_DTYPES, TORCH_TO_SAFETENSORS
from safeswap.read.chunks import Workspace, all_finite, row_chunks
from safeswap.errors import SafeswapError
from safeswap.read.inputs import Inputs
from safeswap.decide.operations import Take
from safeswap.stage_times import mark
from safeswap.threads import worker_pool
from safeswap.write.in_memory import TensorWriter
from safeswap.write.writer import OutputTensor, ShardedWriter

# 1M elements per chunk: a chunk's float32 copies stay in the CPU cache, which made
# the whole merge 1.8x faster than 8M-element chunks; small enough tensors are one chunk.
CHUNK_ELEMENTS = 1 << 20
WINDOW = 4


def output_dtype(source_dtype: str, override: str | None) -> str:
    """The stored dtype of an output tensor: the source's unless --dtype asks otherwise (floats only)."""
    if override is None or source_dtype not in FLOAT_DTYPES:
        return source_dtype
    return override


def dtype_name(dtype: str | torch.dtype | None) -> str | None:
    """Accept 'bfloat16', 'bf16', 'BF16', torch.bfloat16 ... -> safetensors name."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        return TORCH_TO_SAFETENSORS[dtype]
    aliases = {"bfloat16": "BF16", "bf16": "BF16", "float16": "F16", "fp16": "F16", "half": "F16",
               "float32": "F32", "fp32": "F32", "float": "F32"}
    key = str(dtype).strip()
    name = aliases.get(key.lower(), key.upper())
    if name not in FLOAT_DTYPES:
        raise SafeswapError(f"unsupported --dtype {dtype!r}; choose bfloat16, float16 or float32")
    return name


@dataclass
class OutputJob:
    """One merged model to write: its folder, per-tensor operations, and which input
    model each operation role reads (several jobs share the base and safety reads).

    With `into` (a dict), the tensors go there (name -> tensor) instead of shards in folder."""

    folder: Path | None
    ops: dict
    models: dict[str, str] = field(default_factory=lambda: {"base": "base", "safety": "safety", "language": "language"})
    into: dict | None = None


def _elementwise(op) -> bool:
    return isinstance(op, Take) or getattr(op, "elementwise", False)


def _work_items(inputs: Inputs, names: list[str], jobs: list[OutputJob]) -> list[tuple[str, int, int | None]]:
    items = []
    for name in names:
        info = inputs.receiver.tensors[name]
        if all(_elementwise(job.ops[name]) for job in jobs):
            items.extend((name, first, rows) for first, rows in row_chunks(info, CHUNK_ELEMENTS))
        else:
            items.append((name, 0, None))
    return items


def _buffer_bytes(inputs: Inputs, name: str, rows: int | None, out_dtype: str) -> int:
    """Buffer size for one work item: what it writes, or what a take reads into the same buffer."""
    info = inputs.receiver.tensors[name]
    itemsize = max(info.itemsize, DTYPES[out_dtype][1])
    return info.chunk_bytes(rows) // info.itemsize * itemsize


_workspace = Workspace()


class _ChunkReader:
    """Reads each input model's part of one chunk at most once, whatever number of jobs use it."""

    def __init__(self, inputs: Inputs, name: str, first: int, rows: int | None):
        self.inputs, self.name, self.first, self.rows = inputs, name, first, rows
        self.stored: dict[str, torch.Tensor] = {}

    def raw(self, key: str, into: torch.Tensor | None = None) -> torch.Tensor:
        """Stored bytes of model `key`; read into `into` (then kept there) when not read yet."""
        if key not in self.stored:
            info = self.inputs.models[key].tensors[self.name]
            buffer = into if into is not None else _workspace.get(f"raw:{key}", info.chunk_bytes(self.rows))
            self.stored[key] = self.inputs.models[key].read_raw(self.name, self.first, self.rows, out=buffer)
        return self.stored[key]

    def values(self, key: str) -> torch.Tensor:
        info = self.inputs.models[key].tensors[self.name]
        flat = self.raw(key).view(DTYPES[info.dtype][0])
        return flat.reshape((-1,) + info.shape[1:]) if info.shape else flat.reshape(())

    def whole(self, key: str) -> torch.Tensor:
        return self.inputs.models[key].read(self.name, self.first, self.rows)

    def stored_range(self, key: str) -> tuple[int, int] | None:
        """(fd, offset) of the chunk's stored bytes in model `key`'s file; None where they are computed (an adapter)."""
        model = self.inputs.models[key]
        return model.stored_range(self.name, self.first) if hasattr(model, "stored_range") else None


def _check_finite(reader: _ChunkReader, keys: list[str], values: torch.Tensor) -> None:
    """Refuse NaN/Inf, naming the tensor and the model that holds it (looked up only on failure)."""
    if not all_finite(values):
        for key in keys:
            if not all_finite(reader.whole(key)):
                raise SafeswapError(f"tensor {reader.name} holds NaN or Inf values in the {key} model "
                                    "(use --allow-nonfinite to merge anyway)")
        raise SafeswapError(f"merging tensor {reader.name} produced NaN or Inf values (use --allow-nonfinite to merge anyway)")


def _produce_one(reader: _ChunkReader, job: OutputJob, out_dtype: str, out: torch.Tensor, check: bool,
                 inputs_checked: bool) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """Fill `out` (a uint8 buffer) with one job's output bytes for the chunk; returns the filled part and,
    for a take into shards, where an input file stores the same bytes (the writer copies them from there)."""
    op = job.ops[reader.name]
    keys = [job.models[r] for r in op.roles]
    itemsize, torch_dtype = DTYPES[out_dtype][1], DTYPES[out_dtype][0]
    if check and inputs_checked and getattr(op, "keeps_finite", False) and all(
            reader.inputs.models[k].tensors[reader.name].dtype == out_dtype for k in keys):
        check = False  # finite inputs, an operation that stays within their range, no narrowing cast
    if isinstance(op, Take):
        key = keys[0]
        if reader.inputs.models[key].tensors[reader.name].dtype == out_dtype:
            raw = reader.raw(key, into=out)
            if raw.data_ptr() != out.data_ptr():  # already read for another job: copy its bytes
                raw = out[: raw.numel()].copy_(raw)
            if check:
                _check_finite(reader, keys, raw.view(torch_dtype))
            return raw, reader.stored_range(key) if job.into is None else None
        values = reader.values(key)
    elif getattr(op, "elementwise", False):
        # Decode each input into a reused float32 buffer; the operation may work in place.
        tensors = {}
        for i, (role, key) in enumerate(zip(op.roles, keys)):
            stored = reader.values(key)
            tensors[role] = _workspace.floats(f"f{i}", stored.numel()).view(stored.shape).copy_(stored)
        values = op.compute(tensors, reader.name)
    else:
        values = op.compute({r: reader.whole(k).float() for r, k in zip(op.roles, keys)}, reader.name)
    result = out[: values.numel() * itemsize].view(torch_dtype).view(values.shape)
    result.copy_(values)
    if check:  # after the cast: a narrower output dtype can overflow
        _check_finite(reader, keys, result)
    return out[: result.numel() * itemsize], None


def _produce(inputs: Inputs, jobs: list[OutputJob], name: str, first: int, rows: int | None, out_dtype: str,
             buffers: list[torch.Tensor], check: bool, inputs_checked: bool) -> list[tuple[torch.Tensor, tuple | None]]:
    reader = _ChunkReader(inputs, name, first, rows)
    return [_produce_one(reader, job, out_dtype, buf, check, inputs_checked) for job, buf in zip(jobs, buffers)]


def execute(
    inputs: Inputs,
    jobs: list[OutputJob],
    shard_size: int,
    dtype: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    allow_nonfinite: bool = False,
    inputs_checked: bool = False,
) -> list[dict[str, str]]:
    """Write every tensor of the receiver, per each job's operations, as shards in each job's folder
    (or into its dict: the same bytes).

    Every input chunk is read once for all jobs. Returns, per job, {shard filename: sha256} ({} for a dict).
    Output chunks are checked for NaN/Inf unless allow_nonfinite; with inputs_checked (the
    analysis already checked every input tensor), only what an operation could make non-finite.
    """
    names = inputs.tensor_names()
    outputs = [OutputTensor(n, output_dtype(inputs.receiver.tensors[n].dtype, dtype), inputs.receiver.tensors[n].shape)
               for n in names]
    out_dtypes = {t.name: t.dtype for t in outputs}
    writers = [ShardedWriter(job.folder, outputs, shard_size) if job.into is None else TensorWriter(outputs, job.into)
               for job in jobs]
    items = _work_items(inputs, names, jobs)
    # A fixed pool of output buffer sets: a chunk's buffers return to the pool once written and hashed.
    largest = max((_buffer_bytes(inputs, name, rows, out_dtypes[name]) for name, _, rows in items), default=1)
    free: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(WINDOW):
        free.put([torch.empty(largest, dtype=torch.uint8) for _ in jobs])
    pending: deque = deque()
    with worker_pool() as pool:
        it = iter(items)

        def submit_next() -> None:
            item = next(it, None)
            if item is not None:
                name, first, rows = item
                buffers = free.get()
                future = pool.submit(_produce, inputs, jobs, name, first, rows, out_dtypes[name], buffers,
                                     not allow_nonfinite, inputs_checked)
                pending.append((name, buffers, future))

        for _ in range(WINDOW):
            submit_next()
        while pending:
            name, buffers, future = pending.popleft()
            produced = future.result()
            hashed = [writer.write(name, memoryview(chunk.numpy()), *([source] if source else []))
                      for writer, (chunk, source) in zip(writers, produced)]
            if on_bytes:
                on_bytes(sum(chunk.numel() for chunk, _ in produced))
            _when_all_done(hashed, lambda buffers=buffers: free.put(buffers))
            submit_next()
    mark("write")
    hashes = [writer.close() for writer in writers]
    mark("output hash (wait)")
    return hashes


def _when_all_done(futures: list, callback: Callable[[], None]) -> None:
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_):
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            callback()

    for f in futures:
        f.add_done_callback(done)
