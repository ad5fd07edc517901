"""What the mergekit comparisons share: where mergekit-yaml is, running it on exported plans, the one-ulp bound.

mergekit 0.1.5 runs from its own virtualenv (its pins may clash with ours), as a subprocess:

    python -m venv .venv-mergekit
    .venv-mergekit/bin/pip install torch==2.13.0 && .venv-mergekit/bin/pip install mergekit==0.1.5

(SAFESWAP_MERGEKIT_YAML may point at another mergekit-yaml.)
"""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from safeswap.decide.mergekit_export import export_mergekit
from safeswap.read.checkpoint import Checkpoint

REPO = Path(__file__).resolve().parents[1]
MERGEKIT = Path(os.environ.get("SAFESWAP_MERGEKIT_YAML", REPO / ".venv-mergekit" / "bin" / "mergekit-yaml"))

needs_mergekit = pytest.mark.skipif(
    not MERGEKIT.exists(),
    reason=f"mergekit-yaml not found at {MERGEKIT}; install mergekit==0.1.5 into .venv-mergekit (see tests/mergekit_helpers.py)",
)


def run_mergekit(merges: dict[str, tuple[Path, tuple]], root: Path) -> dict[str, tuple[Path, Path, tuple]]:
    """{case: (safeswap folder, inputs)} -> {case: (safeswap folder, mergekit folder, inputs)}.

    Each case's plan is exported and merged by mergekit-yaml; all runs start together,
    so a module costs about one mergekit start-up per core.
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = {}
    for case, (ours, folders) in merges.items():
        config = root / case / "mergekit.yaml"
        export_mergekit(ours / "safeswap-plan.yaml", config)
        theirs = root / case / "mergekit"
        process = subprocess.Popen([str(MERGEKIT), str(config), str(theirs)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env)
        runs[case] = (ours, theirs, folders, process)
    out = {}
    for case, (ours, theirs, folders, process) in runs.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"mergekit failed on {case}: {err.decode(errors='replace')[-2000:]}"
        out[case] = (ours, theirs, folders)
    return out


def tensors(folder):
    with Checkpoint(folder) as ckpt:
        return {name: ckpt.read(name).float() for name in ckpt.ordered_names()}


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of bfloat16 numbers at |x| (8 significand bits)."""
    _, exponent = torch.frexp(x.abs())  # |x| = m * 2^e, m in [0.5, 1)
    return torch.ldexp(torch.ones_like(x), exponent - 8).clamp_min(2.0 ** -133)


def within_one_ulp(ours, theirs, inputs) -> torch.Tensor:
    """|ours - theirs| <= one bf16 ulp of the result.

    Where the experts cancel (a result near 0), float32 rounding of the terms
    (mergekit fuses multiply-add, safeswap rounds each product) is the honest
    bound instead: one float32 epsilon of the summed input magnitudes.
    """
    ulp = bf16_ulp(torch.maximum(ours.abs(), theirs.abs()))
    cancellation = 2.0 ** -23 * sum(x.abs() for x in inputs)
    return (ours - theirs).abs() <= torch.maximum(ulp, cancellation)
