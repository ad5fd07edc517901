"""The languages safeswap evaluates, as one table: code, name, MultiJail membership, benchmark tasks.

Every list of languages in the package (MultiJail's columns, the lm-eval task
tables, the report's column order and names, the demo's languages) is read
from TABLE. The row order is MultiJail's column order, then languages beyond
MultiJail (Telugu: a low-resource target with MGSM and Belebele).

Task names are lm-eval 0.4.13's. Belebele is keyed by FLORES-200 code and
covers every language here. MMMLU is OpenAI's human translation of MMLU into
14 locales (English is MMLU itself); Global-MMLU (machine-translated with
post-edits) stands in for two of its gaps when asked. MGSM has ten languages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language and what measures it."""

    code: str  # ISO 639-1
    name: str  # English name, as reports write it
    multijail: bool  # a column of MultiJail
    flores: str  # FLORES-200 code: Belebele's task is belebele_<flores>
    mmmlu: str | None  # the lm-eval task of MMMLU, None where MMMLU has no locale
    mmmlu_stand_in: str | None  # Global-MMLU task used for MMMLU with --stand-ins
    mgsm: bool  # MGSM has the language


TABLE: tuple[Language, ...] = (
    Language("en", "English", True, "eng_Latn", "mmlu", None, True),
    Language("zh", "Chinese", True, "zho_Hans", "mmmlu_zh_cn", None, True),
    Language("it", "Italian", True, "ita_Latn", "mmmlu_it_it", None, False),
    Language("vi", "Vietnamese", True, "vie_Latn", None, "global_mmlu_full_vi", False),
    Language("ar", "Arabic", True, "arb_Arab", "mmmlu_ar_xy", None, False),
    Language("ko", "Korean", True, "kor_Hang", "mmmlu_ko_kr", None, False),
    Language("th", "Thai", True, "tha_Thai", None, None, True),
    Language("bn", "Bengali", True, "ben_Beng", "mmmlu_bn_bd", None, True),
    Language("sw", "Swahili", True, "swh_Latn", "mmmlu_sw_ke", None, True),
    Language("jv", "Javanese", True, "jav_Latn", None, None, False),
    Language("te", "Telugu", False, "tel_Telu", None, "global_mmlu_full_te", True),
)

ALL_LANGUAGES: tuple[str, ...] = tuple(row.code for row in TABLE)
MULTIJAIL_LANGUAGES: tuple[str, ...] = tuple(row.code for row in TABLE if row.multijail)
LANGUAGE_NAMES: dict[str, str] = {row.code: row.name for row in TABLE}


def language_name(code: str) -> str:
    """The English name of a language code, or the code itself when the table lacks it."""
    return LANGUAGE_NAMES.get(code, code)
