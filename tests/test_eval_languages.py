"""The one languages table: MultiJail's columns, names, and the benchmark tasks read from it."""

from __future__ import annotations

import csv

from conftest import MULTIJAIL_CSV

from safeswap.evaluation.general_tasks import BELEBELE_TASKS, MGSM_LANGUAGES, MMMLU_TASKS
from safeswap.evaluation.languages import ALL_LANGUAGES, LANGUAGE_NAMES, MULTIJAIL_LANGUAGES, TABLE, language_name


def test_multijail_languages_are_the_shipped_files_columns_in_order():
    with open(MULTIJAIL_CSV, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header[3:]) == MULTIJAIL_LANGUAGES


def test_every_language_has_one_row_a_name_and_a_belebele_task():
    assert len({row.code for row in TABLE}) == len(TABLE) == len(ALL_LANGUAGES)
    assert ALL_LANGUAGES[: len(MULTIJAIL_LANGUAGES)] == MULTIJAIL_LANGUAGES  # MultiJail's order, then the rest
    assert set(LANGUAGE_NAMES) == set(BELEBELE_TASKS) == set(ALL_LANGUAGES)
    assert language_name("te") == "Telugu" and language_name("xx") == "xx"
    assert set(MMMLU_TASKS) | set(MGSM_LANGUAGES) <= set(ALL_LANGUAGES)
