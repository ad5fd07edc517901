"""Writing a safety result: the result JSON and a CSV of the same rates beside it."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from safeswap.evaluation.results import NOT_AVAILABLE, RESULT_SUFFIX, ResultPayload, result_filename, write_result
from safeswap.files import atomic_write

BENCHMARK = "multijail"


def result_paths(out: str | os.PathLike, label: str, judge: str) -> tuple[Path, Path]:
    """(result JSON, CSV) paths that evaluate_safety writes for a model label and judge."""
    json_path = Path(out) / result_filename(label, BENCHMARK, judge)
    return json_path, json_path.with_name(json_path.name[: -len(RESULT_SUFFIX)] + ".csv")


def csv_text(payload: ResultPayload) -> str:
    """The result's rates in long form: one row per (table, language, category, metric)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "language", "category", "metric", "value", "low", "high", "k", "n"])

    def rows(table: str, language: str, category: str, entry: Any) -> None:
        if not isinstance(entry, dict):
            writer.writerow([table, language, category, "", NOT_AVAILABLE, "", "", "", ""])
            return
        for metric, value in entry.items():
            if isinstance(value, dict) and "value" in value:
                writer.writerow([table, language, category, metric, value["value"], value["low"], value["high"],
                                 value["k"], value["n"]])

    for language, entry in payload["languages"].items():
        rows("language", language, "", entry)
    rows("overall", "all", "", payload["overall"])
    for category, entry in (payload["categories"] or {}).items():
        rows("category", "all", category, entry)
    benign = payload["extra"].get("benign")
    if benign:
        for language, entry in benign["languages"].items():
            rows("benign", language, "", entry)
    return buffer.getvalue()


def write_safety_result(out: str | os.PathLike, payload: ResultPayload) -> tuple[Path, Path]:
    """Write the CSV, then the result JSON; returns both paths."""
    json_path, csv_path = result_paths(out, payload["model"]["label"], payload["judge"]["name"])
    # CSV first: the JSON, written last, is what marks a complete result.
    atomic_write(csv_path, csv_text(payload))
    write_result(out, payload)
    return json_path, csv_path
