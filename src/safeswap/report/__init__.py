"""The comparison report: every model's safety and general ability, side by side.

    from safeswap.report import build_report
    build_report("runs/", "report/")   # report.md, report.html, figures/, models/

build_report is imported on first use, so that the CLI (which mounts
`safeswap report`) starts without loading matplotlib.
"""

from safeswap.report.collect import collect

__all__ = ["build_report", "collect"]


def build_report(*args, **kwargs):
    from safeswap.report.build import build_report as _build_report

    return _build_report(*args, **kwargs)


build_report.__doc__ = "See safeswap.report.build.build_report."
