"""safeswap: safety-aware layer swapping for multilingual LLMs.

The public API is four functions, one per stage and a check (safeswap.api):

    stats = safeswap.analyze(base, safety, language, out="stats/")
    plan = safeswap.plan(base, safety, language, granularity="module", out="plan.yaml")
    safeswap.merge(plan="plan.yaml", out="merged/")
    safeswap.verify("merged/", inputs=True)

They are imported on first use so that `import safeswap` stays cheap (no torch).
Modules inside the package never import this face; they import what they need
from the module that defines it.
"""

from safeswap.version import __version__

__all__ = ["analyze", "plan", "merge", "verify", "__version__"]


def analyze(*args, **kwargs):
    from safeswap.api import analyze as _analyze

    return _analyze(*args, **kwargs)


def plan(*args, **kwargs):
    from safeswap.api import plan as _plan

    return _plan(*args, **kwargs)


def merge(*args, **kwargs):
    from safeswap.api import merge as _merge

    return _merge(*args, **kwargs)


def verify(*args, **kwargs):
    from safeswap.api import verify as _verify

    return _verify(*args, **kwargs)


for _f in (analyze, plan, merge, verify):
    _f.__doc__ = f"See safeswap.api.{_f.__name__}."
