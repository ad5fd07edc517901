"""The comparison report: every model's safety and general ability, side by side.

    from safeswap.report import build_report
    build_report("runs/", "report/")   # report.md, report.html, figures/, models/

Imported on first use, so that the CLI (which mounts `safeswap report`) starts
without loading matplotlib.
"""

__all__ = ["build_report", "collect"]


def build_report(*args, **kwargs):
    from safeswap.report.build import build_report as _build_report

    return _build_report(*args, **kwargs)


def collect(*args, **kwargs):
    from safeswap.report.collect import collect as _collect

    return _collect(*args, **kwargs)


build_report.__doc__ = "See safeswap.report.build.build_report."
collect.__doc__ = "See safeswap.report.collect.collect."
