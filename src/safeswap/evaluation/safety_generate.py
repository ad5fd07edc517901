"""Generating the answers a safety run lacks, each stored in the cache as soon as it exists."""

from __future__ import annotations

from typing import Callable, Sequence

from safeswap.evaluation.backends import Backend
from safeswap.evaluation.cache import JsonlCache
from safeswap.evaluation.safety_prompts import Request
from safeswap.progress import StageProgress


def generate_missing(
    requests: Sequence[Request], cache: JsonlCache, make: Callable[[], Backend], progress: StageProgress | None
) -> int:
    """Generate what the cache lacks; the model is loaded (make()) only when something is missing.

    Returns how many answers were generated.
    """
    missing = [r for r in requests if r.key not in cache]
    if not missing:
        return 0
    if progress:
        progress("generate", 0, len(missing))  # show the bar while the model loads
    backend = make()
    try:
        for done, (index, generation) in enumerate(backend.generate([r.conversation for r in missing]), start=1):
            request = missing[index]
            cache.put(
                {
                    "key": request.key,
                    "dataset": request.dataset,
                    "language": request.language,
                    "prompt_id": request.prompt.id,
                    "response": generation.text,
                    "n_tokens": generation.n_tokens,
                    "finish_reason": generation.finish_reason,
                }
            )
            if progress:
                progress("generate", done, len(missing))
    finally:
        backend.close()
    return len(missing)
