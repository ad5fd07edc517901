"""The comparison report: every model's safety and general ability, side by side.

    from safeswap.report import build_report
    build_report("runs/", "report/")   # report.md, report.html, figures/, models/
"""

from safeswap.report.build import build_report
from safeswap.report.collect import collect

__all__ = ["build_report", "collect"]
