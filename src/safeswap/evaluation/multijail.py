"""MultiJail data: loading (file, hub or shipped copy), harm tags, the seeded subset, scenarios, benign prompts.

MultiJail (Deng et al., ICLR 2024) holds 315 harmful prompts, each written in
English and translated into nine languages. The CSV has the columns
`id, source, tags, en, zh, it, vi, ar, ko, th, bn, sw, jv`, begins with a
UTF-8 byte-order mark, and stores `tags` as a Python-list string such as
"['Violence & incitement', 'Weapons']".

safeswap ships a copy of the CSV (MIT licence, beside it in data/multijail/),
pinned by sha256: without a file given, the hub copy is used when the hub
answers, else the shipped one, and every result records which.
"""

from __future__ import annotations

import ast
import csv
import functools
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES
from safeswap.files import sha256_file

logger = logging.getLogger(__name__)
HUB_DATASET = "DAMO-NLP-SG/MultiJail"
# The copy shipped inside the package, and the sha256 it must have.
BUNDLED_PATH = Path(__file__).parent / "data" / "multijail" / "MultiJail.csv"
BUNDLED_SOURCE = "bundled:safeswap/evaluation/data/multijail/MultiJail.csv"
BUNDLED_SHA256 = "2798ed6fe470b80b1f486976e0fb3baa3ce008e62b6ca0abbf2e1ed5b1dfb355"
# Seconds to wait for the hub before using the shipped copy (datasets itself retries for ~25 s).
HUB_PROBE_TIMEOUT = 3.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
LANGUAGES = MULTIJAIL_LANGUAGES  # MultiJail's language columns, in its order
SCENARIOS = ("unintentional", "intentional")
TEMPLATE_SLOT = "{prompt}"


@dataclass(frozen=True)
class Prompt:
    """One prompt, with its text in every language the source file has."""

    id: str
    texts: dict[str, str]
    tags: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class PromptSet:
    """Prompts plus where they came from (recorded in every result)."""

    prompts: list[Prompt]
    source: str
    sha256: str
    languages: tuple[str, ...]


def parse_languages(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """'ko,sw' or ['ko', 'sw'] -> ('ko', 'sw'); None -> all ten MultiJail languages."""
    if value is None:
        return LANGUAGES
    items = value.split(",") if isinstance(value, str) else list(value)
    languages = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    if not languages:
        raise SafeswapError("no language given; use codes such as --languages ko,sw")
    unknown = [code for code in languages if code not in LANGUAGES]
    if unknown:
        raise SafeswapError(f"unknown MultiJail language {', '.join(unknown)}; choose from {','.join(LANGUAGES)}")
    return languages


def parse_tags(value: Any, where: str = "") -> tuple[str, ...]:
    """Harm categories from a Python-list string ("['Theft']"), a list, or an empty cell."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(tag).strip() for tag in value if str(tag).strip())
    text = str(value).strip()
    if not text:
        return ()
    if not text.startswith("["):
        return (text,)  # a single bare category
    try:
        # literal_eval, not eval: the cell is data and must never run code.
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise SafeswapError(f"cannot read the tags {text[:60]!r}{where}: expected a list such as ['Theft']") from None
    if not isinstance(parsed, (list, tuple)):
        raise SafeswapError(f"cannot read the tags {text[:60]!r}{where}: expected a list")
    return tuple(str(tag).strip() for tag in parsed if str(tag).strip())


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV (BOM tolerated) or JSONL file, as dicts."""
    if not path.is_file():
        raise SafeswapError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            rows = []
            with open(path, encoding="utf-8-sig") as f:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SafeswapError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise SafeswapError(f"{path}: line {number} is not a JSON object")
                    rows.append(row)
            return rows
        if suffix in (".csv", ".tsv"):
            # utf-8-sig strips the byte-order mark that MultiJail.csv starts with;
            # without it the first column would be named '\ufeffid'.
            with open(path, encoding="utf-8-sig", newline="") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    except UnicodeDecodeError:
        raise SafeswapError(f"{path} is not UTF-8 text") from None
    raise SafeswapError(f"{path}: unsupported data format {suffix or '(none)'}; use .csv or .jsonl")


def _prompts_from_rows(rows: list[dict[str, Any]], where: str) -> tuple[list[Prompt], tuple[str, ...]]:
    if not rows:
        raise SafeswapError(f"{where} holds no prompts")
    columns = set(rows[0])
    if "id" not in columns:
        raise SafeswapError(f"{where} has no 'id' column (columns: {', '.join(sorted(columns))})")
    languages = tuple(code for code in LANGUAGES if code in columns)
    if not languages:
        raise SafeswapError(f"{where} has no language column; expected some of {','.join(LANGUAGES)}")
    prompts, seen = [], set()
    for number, row in enumerate(rows, start=1):
        prompt_id = str(row.get("id", "")).strip()
        if not prompt_id:
            raise SafeswapError(f"{where}: row {number} has an empty id")
        if prompt_id in seen:
            raise SafeswapError(f"{where}: id {prompt_id} appears twice")
        seen.add(prompt_id)
        texts = {code: str(row.get(code) or "").strip() for code in languages}
        tags = parse_tags(row.get("tags"), where=f" in {where} row {number}")
        prompts.append(Prompt(id=prompt_id, texts=texts, tags=tags, source=str(row.get("source") or "")))
    return prompts, languages


def load_multijail(data: str | Path | None = None, revision: str | None = None) -> PromptSet:
    """MultiJail from a local CSV/JSONL file; without one, from the hub, else the copy shipped with safeswap.

    A hub revision names hub data, so with `revision` a hub failure is an error, not a fallback.
    """
    if data is not None:
        path = Path(data).expanduser()
        prompts, languages = _prompts_from_rows(_read_rows(path), str(path))
        return PromptSet(prompts, source=str(path), sha256=sha256_file(path), languages=languages)
    try:
        return _load_from_hub(revision)
    except SafeswapError as exc:
        if revision is not None:
            raise SafeswapError(f"{exc}; pass --data PATH to a local MultiJail.csv") from None
        _note_once(f"{exc}; using the copy shipped with safeswap ({BUNDLED_SOURCE})")
        return load_bundled()


def load_bundled() -> PromptSet:
    """The MultiJail CSV shipped inside the package, refused unless its sha256 is the pinned one."""
    path = BUNDLED_PATH
    if not path.is_file():
        raise SafeswapError(f"the MultiJail copy shipped with safeswap is missing ({path}); reinstall safeswap or pass --data PATH")
    digest = sha256_file(path)
    if digest != BUNDLED_SHA256:
        raise SafeswapError(
            f"the MultiJail copy shipped with safeswap ({path}) has sha256 {digest}, not the pinned "
            f"{BUNDLED_SHA256}: it was modified; reinstall safeswap or pass --data PATH"
        )
    prompts, languages = _prompts_from_rows(_read_rows(path), BUNDLED_SOURCE)
    return PromptSet(prompts, source=BUNDLED_SOURCE, sha256=digest, languages=languages)


_NOTED: set[str] = set()


def _note_once(message: str) -> None:
    """Warn about a fallback once per process (the demo loads MultiJail once per model)."""
    if message not in _NOTED:
        _NOTED.add(message)
        logger.warning(message)


def _offline() -> bool:
    """True when the environment asks huggingface_hub or datasets to stay off the network."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=None)
def _hub_unreachable(endpoint: str, timeout: float) -> str | None:
    """Why the hub did not answer within `timeout` seconds, or None when it did (any HTTP status)."""
    import httpx

    try:
        httpx.head(f"{endpoint}/api/datasets/{HUB_DATASET}", timeout=timeout)
    except Exception as exc:  # DNS, refused, timeout, bad proxy: all mean "not reachable now"
        return f"{endpoint} is unreachable ({type(exc).__name__}: {' '.join(str(exc).split()) or 'no answer'})"
    return None


def _load_from_hub(revision: str | None) -> PromptSet:
    where = f"cannot load {HUB_DATASET} from the Hugging Face hub"
    try:
        import datasets
    except ImportError:
        raise SafeswapError(f"{where}: the datasets package is not installed (pip install 'safeswap[eval]')") from None
    if not _offline():  # offline, datasets reads only its local cache, and fails at once without it
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        reason = _hub_unreachable(endpoint, HUB_PROBE_TIMEOUT)
        if reason is not None:
            raise SafeswapError(f"{where}: {reason}")
    try:
        table = datasets.load_dataset(HUB_DATASET, split="train", revision=revision)
    except Exception as exc:  # network, auth, offline mode: all fixable by the user
        raise SafeswapError(f"{where} ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    rows = [dict(row) for row in table]
    # A hub dataset has no single file to hash, so hash its rows in a canonical form.
    canonical = json.dumps(rows, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
    source = f"hf://{HUB_DATASET}" + (f"@{revision}" if revision else "")
    prompts, languages = _prompts_from_rows(rows, source)
    return PromptSet(prompts, source=source, sha256=hashlib.sha256(canonical).hexdigest(), languages=languages)


def select_subset(prompt_set: PromptSet, limit: int | None, seed: int = 0) -> list[Prompt]:
    """A fixed, seeded subset of prompts, the same ids for every language.

    Only prompts that have text in every language of the file are eligible, so
    the subset does not depend on which languages a run asks for and results
    for different languages (and different runs) cover the same prompts.
    The subset keeps the file's order.
    """
    eligible = [p for p in prompt_set.prompts if all(p.texts.get(code) for code in prompt_set.languages)]
    if not eligible:
        raise SafeswapError(f"{prompt_set.source}: no prompt has text in every language column")
    if limit is None or limit >= len(eligible):
        return eligible
    if limit < 1:
        raise SafeswapError(f"--limit must be at least 1, got {limit}")
    chosen = set(random.Random(seed).sample([p.id for p in eligible], limit))
    return [p for p in eligible if p.id in chosen]


def check_languages_present(prompt_set: PromptSet, languages: Iterable[str]) -> None:
    missing = [code for code in languages if code not in prompt_set.languages]
    if missing:
        raise SafeswapError(f"{prompt_set.source} has no column for {', '.join(missing)}")


@dataclass(frozen=True)
class Scenario:
    """How a prompt is put to the model: as is, or wrapped in a jailbreak template."""

    name: str
    template: str | None = None

    @property
    def key(self) -> str:
        """Identity used in cache keys: a changed template must not reuse old generations."""
        if self.template is None:
            return self.name
        return f"{self.name}:{hashlib.sha256(self.template.encode('utf-8')).hexdigest()[:16]}"

    @property
    def template_sha256(self) -> str | None:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest() if self.template is not None else None

    def apply(self, text: str) -> str:
        if self.template is None:
            return text
        # str.replace, not str.format: jailbreak texts are full of other braces.
        return self.template.replace(TEMPLATE_SLOT, text)


def make_scenario(name: str, template_path: str | Path | None = None) -> Scenario:
    """The unintentional scenario, or the intentional one with a user-given jailbreak template."""
    if name not in SCENARIOS:
        raise SafeswapError(f"unknown scenario {name!r}; choose unintentional or intentional")
    if name == "unintentional":
        if template_path is not None:
            raise SafeswapError("--jailbreak-template is only used with --scenario intentional")
        return Scenario(name)
    if template_path is None:
        raise SafeswapError(
            "--scenario intentional needs --jailbreak-template FILE, a text file containing {prompt} "
            "(safeswap ships no jailbreak text)"
        )
    path = Path(template_path).expanduser()
    if not path.is_file():
        raise SafeswapError(f"jailbreak template not found: {path}")
    template = path.read_text(encoding="utf-8-sig")
    if TEMPLATE_SLOT not in template:
        raise SafeswapError(f"jailbreak template {path} does not contain {TEMPLATE_SLOT}")
    return Scenario(name, template)


def load_benign(path: str | Path) -> PromptSet:
    """Harmless prompts for over-refusal: CSV/JSONL with one column per language, optional id."""
    path = Path(path).expanduser()
    rows = _read_rows(path)
    if not rows:
        raise SafeswapError(f"{path} holds no prompts")
    languages = tuple(code for code in LANGUAGES if code in rows[0])
    if not languages:
        raise SafeswapError(f"{path} has no language column; expected some of {','.join(LANGUAGES)}")
    prompts = []
    for number, row in enumerate(rows, start=1):
        prompt_id = str(row.get("id") or f"benign-{number}").strip()
        texts = {code: str(row.get(code) or "").strip() for code in languages}
        prompts.append(Prompt(id=prompt_id, texts=texts))
    if len({p.id for p in prompts}) != len(prompts):
        raise SafeswapError(f"{path}: prompt ids are not unique")
    return PromptSet(prompts, source=str(path), sha256=sha256_file(path), languages=languages)
