"""Stage timestamps of a run, for `benchmarks/merge_speed.py --profile`: where a merge's wall time goes.

Off unless $SAFESWAP_PROFILE names a file; then each mark appends one JSON line
["stage", unix time] to it (the benchmark subtracts its own launch time and the
previous mark). A mark costs nothing when off: one check of a module constant.
"""

from __future__ import annotations

import json
import os
import time

PROFILE_ENV = "SAFESWAP_PROFILE"
_path = os.environ.get(PROFILE_ENV)


def mark(stage: str) -> None:
    """Record that `stage` ended now (when profiling)."""
    if _path:
        with open(_path, "a", encoding="utf-8") as f:
            f.write(json.dumps([stage, time.time()]) + "\n")
