"""The merge engine: executes a plan tensor by tensor with bounded memory.

Work is cut into chunks of rows. Two worker threads read and compute chunks
ahead (reads and torch kernels release the GIL) while the main thread appends
finished chunks, in order, to the pre-planned shards. At most WINDOW chunks are
in flight, so memory is a few chunks whatever the model size.

- Take: the source's stored bytes are copied unchanged (no decode/re-encode).
- Linear and other elementwise operations: inputs decoded to float32 chunk by
  chunk, combined, rounded once to the output dtype.
- Whole-tensor operations (e.g. TIES's magnitude threshold) get the full tensor.
"""

from __future__ import annotations

import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from safeswap.checkpoint import DTYPES, FLOAT_DTYPES, TORCH_TO_SAFETENSORS, Workspace, row_chunks
from safeswap.errors import SafeswapError
from safeswap.inputs import Inputs
from safeswap.operations import Take
from safeswap.writer import OutputTensor, ShardedWriter

CHUNK_ELEMENTS = 8 << 20
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


def _work_items(inputs: Inputs, names: list[str], ops: dict) -> list[tuple[str, int, int | None]]:
    items = []
    for name in names:
        op = ops[name]
        info = inputs.receiver.tensors[name]
        if isinstance(op, Take) or getattr(op, "elementwise", False):
            items.extend((name, first, rows) for first, rows in row_chunks(info, CHUNK_ELEMENTS))
        else:
            items.append((name, 0, None))
    return items


_workspace = Workspace()


def _check_finite(inputs: Inputs, op, name: str, first: int, rows: int | None, values: torch.Tensor) -> None:
    """Refuse NaN/Inf, naming the tensor and the model that holds it (looked up only on failure)."""
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        for role in op.roles:
            if not bool(torch.isfinite(inputs.models[role].read(name, first, rows)).all()):
                raise SafeswapError(
                    f"tensor {name} holds NaN or Inf values in the {role} model (use --allow-nonfinite to merge anyway)"
                )
        raise SafeswapError(f"merging tensor {name} produced NaN or Inf values (use --allow-nonfinite to merge anyway)")


def _produce(inputs: Inputs, op, name: str, first: int, rows: int | None, out_dtype: str, out: torch.Tensor,
             check_finite: bool) -> torch.Tensor:
    """Fill `out` (a uint8 buffer) with the output bytes of one chunk; returns the filled part."""
    ws = _workspace
    if isinstance(op, Take):
        model = inputs.models[op.role]
        if model.tensors[name].dtype == out_dtype:
            raw = model.read_raw(name, first, rows, out=out)
            if check_finite:
                _check_finite(inputs, op, name, first, rows, raw.view(DTYPES[out_dtype][0]))
            return raw
        values = model.read(name, first, rows, out=ws.get("raw", out.numel()))
    elif getattr(op, "elementwise", False):
        # Decode each input into a reused float32 buffer; the operation may work in place.
        tensors = {}
        for i, role in enumerate(op.roles):
            stored = inputs.models[role].read(name, first, rows, out=ws.get("raw", CHUNK_ELEMENTS * 8))
            tensors[role] = ws.floats(f"f{i}", stored.numel()).view(stored.shape).copy_(stored)
        values = op.compute(tensors, name)
    else:
        tensors = {r: inputs.models[r].read(name, first, rows).float() for r in op.roles}
        values = op.compute(tensors, name)
    if check_finite:
        _check_finite(inputs, op, name, first, rows, values)
    result = out[: values.numel() * DTYPES[out_dtype][1]].view(DTYPES[out_dtype][0]).view(values.shape)
    result.copy_(values)
    return out[: result.numel() * DTYPES[out_dtype][1]]


def execute(
    inputs: Inputs,
    ops: dict,
    folder,
    shard_size: int,
    dtype: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    allow_nonfinite: bool = False,
) -> tuple[list[OutputTensor], dict[str, str]]:
    """Write every tensor of the receiver, per its operation, as shards in folder.

    Returns the output tensors and {shard filename: sha256}.
    """
    names = inputs.tensor_names()
    outputs = []
    for name in names:
        info = inputs.receiver.tensors[name]
        outputs.append(OutputTensor(name, output_dtype(info.dtype, dtype), info.shape))
    out_dtypes = {t.name: t.dtype for t in outputs}
    writer = ShardedWriter(folder, outputs, shard_size)
    items = _work_items(inputs, names, ops)
    # A fixed pool of output buffers: a chunk's buffer returns to the pool once written.
    largest = max((t.nbytes for t in outputs if not getattr(ops[t.name], "elementwise", True)), default=0)
    free: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(WINDOW):
        free.put(torch.empty(max(CHUNK_ELEMENTS * 8, largest), dtype=torch.uint8))
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=2) as pool:
        it = iter(items)

        def submit_next() -> None:
            item = next(it, None)
            if item is not None:
                name, first, rows = item
                buf = free.get()
                future = pool.submit(_produce, inputs, ops[name], name, first, rows, out_dtypes[name], buf,
                                     not allow_nonfinite)
                pending.append((name, buf, future))

        for _ in range(WINDOW):
            submit_next()
        while pending:
            name, buf, future = pending.popleft()
            chunk = future.result()
            hashed = writer.write(name, memoryview(chunk.numpy()))
            if on_bytes:
                on_bytes(chunk.numel())
            hashed.add_done_callback(lambda _, buf=buf: free.put(buf))
            submit_next()
    return outputs, writer.close()
