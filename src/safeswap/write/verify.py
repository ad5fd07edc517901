"""`safeswap verify`: a merged folder against its manifest, and every taken tensor against its source."""

from __future__ import annotations

from pathlib import Path

import torch

from safeswap.decide.methods import load_plan
from safeswap.decide.methods.replay import check_replay
from safeswap.decide.operations import Take
from safeswap.decide.planning import operations
from safeswap.errors import SafeswapError
from safeswap.merged_folder import PLAN_FILENAME
from safeswap.progress import task
from safeswap.read.adapter import is_adapter_folder
from safeswap.read.checkpoint import Checkpoint
from safeswap.read.inputs import open_inputs
from safeswap.write.manifest import verify_outputs


def verify_folder(folder: Path, inputs: bool = False, show_progress: bool = False) -> dict[str, int]:
    """Re-hash the shards; with inputs, re-read every taken tensor from the model the plan took it from.

    Raises SafeswapError naming the first shard or tensor that differs. Returns the counts checked.
    """
    counts = {"shards": verify_outputs(folder), "tensors": 0}
    if not inputs:
        return counts
    plan = load_plan(folder / PLAN_FILENAME)
    opened = open_inputs({r: m["path"] for r, m in plan.models.items()})
    try:
        check_replay(plan, opened)
        ops = operations(plan, opened)
        if is_adapter_folder(folder):
            return {**counts, "modules": _verify_adapter(folder, opened, ops, show_progress)}
        takes = [n for n, op in ops.items() if isinstance(op, Take)]
        with Checkpoint(folder, "merged") as merged, task("verifying", len(takes), show_progress, unit="tensors") as advance:
            for name in takes:
                source = opened.models[ops[name].role]
                if merged.tensors[name].dtype != source.tensors[name].dtype:
                    continue  # converted by --dtype: not a byte copy
                if not torch.equal(merged.read_raw(name), source.read_raw(name)):
                    raise SafeswapError(f"tensor {name} differs from the {ops[name].role} model it was taken from")
                counts["tensors"] += 1
                advance(1)
    finally:
        opened.close()
    return counts


def _verify_adapter(folder: Path, opened, ops: dict, show_progress: bool) -> int:
    """An adapter output (merge --output adapter): every module's factors against those its inputs give."""
    from safeswap.write.adapter_output import verify_adapter

    with task("verifying", 1, show_progress, unit="adapters") as advance:
        modules = verify_adapter(folder, opened, ops)
        advance(1)
    return modules
