"""safeswap: safety-aware layer swapping for multilingual LLMs.

The public API is three functions, one per pipeline stage:

    stats = safeswap.analyze(base, safety, language, out="stats/")
    plan = safeswap.plan(base, safety, language, granularity="module")
    safeswap.merge(plan=plan, out="merged/")

Imports are lazy so that `import safeswap` stays cheap (no torch import).
"""

__version__ = "0.1.0"

__all__ = ["analyze", "plan", "merge", "__version__"]


def __getattr__(name):
    if name in ("analyze", "plan", "merge"):
        from safeswap import api

        return getattr(api, name)
    raise AttributeError(f"module 'safeswap' has no attribute {name!r}")
