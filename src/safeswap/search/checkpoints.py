"""A candidate's merged checkpoint, written under DIR/work/ for the stages that need a folder, removed afterwards.

The generation stage and the final evaluation hand a folder to the evaluation backends
(transformers or vLLM load checkpoints, not state dicts), so they write the candidate
with the merge pipeline; `keep_weights: true` keeps the folder.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from safeswap.search.candidates import Candidate
from safeswap.search.runner import SearchContext, plan_of


@contextlib.contextmanager
def written(context: SearchContext, candidate: Candidate, name: str) -> Iterator[Path]:
    """DIR/work/<name>: the candidate merged by the pipeline from its plan; deleted on exit unless kept."""
    from safeswap.write.pipeline import WriteSettings, merge

    folder = Path(context.out) / "work" / name
    try:
        settings = WriteSettings(out=folder, force=True, input_sha256=context.input_sha256)
        merge(context.base, context.safety, {None: context.language}, settings, plan=plan_of(context, candidate))
        yield folder
    finally:
        if not context.keep_weights and folder.exists():
            shutil.rmtree(folder)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # DIR/work, once nothing else is written there
