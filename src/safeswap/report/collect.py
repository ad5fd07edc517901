"""Gathering every result file under a runs folder into one view per model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.evaluation.languages import ALL_LANGUAGES
from safeswap.evaluation.results import RESULT_SUFFIX, ResultPayload, iter_results
from safeswap.report.merges import MergeInfo, find_merge, model_folder

GENERAL_BENCHMARKS = ("mmmlu", "belebele", "mgsm")
BENCHMARK_NAMES = {"mmmlu": "MMMLU", "belebele": "Belebele", "mgsm": "MGSM", "multijail": "MultiJail"}
ROLE_NAMES = {"base": "base", "safety": "safety expert", "language": "language expert"}


@dataclass
class Result:
    """One result file and its content."""

    path: Path
    data: ResultPayload

    @property
    def judge(self) -> str | None:
        return (self.data.get("judge") or {}).get("name")


@dataclass
class ModelResults:
    label: str
    path: str | None = None
    fingerprints: set[str] = field(default_factory=set)
    safety: list[Result] = field(default_factory=list)
    general: dict[str, Result] = field(default_factory=dict)
    merge: MergeInfo | None = None
    role: str | None = None

    def safety_result(self, judge: str | None, metric: str | None) -> Result | None:
        for result in self.safety:
            if result.judge == judge and result.data.get("metric") == metric:
                return result
        return None


@dataclass
class ReportData:
    runs_dir: Path
    models: list[ModelResults]
    languages: list[str]
    safety_judge: str | None  # judge whose results fill the main table and figures
    safety_metric: str | None  # "unsafe_rate" or "refusal_rate"
    general_benchmarks: list[str]
    warnings: list[str] = field(default_factory=list)

    def headline_safety(self, model: ModelResults) -> Result | None:
        return model.safety_result(self.safety_judge, self.safety_metric)


def _load_all(runs_dir: Path) -> list[Result]:
    try:
        return [Result(path, data) for path, data in iter_results(runs_dir)]
    except (json.JSONDecodeError, UnicodeDecodeError):
        # iter_results stops at the first bad file without naming it: find it for the user.
        for path in sorted(runs_dir.rglob("*" + RESULT_SUFFIX)):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SafeswapError(f"{path} is not valid JSON ({e})") from None
        raise


def _language_key(lang: str) -> tuple[int, str]:
    return (ALL_LANGUAGES.index(lang) if lang in ALL_LANGUAGES else len(ALL_LANGUAGES), lang)


def _choose_safety(models: list[ModelResults], judge: str | None) -> tuple[str | None, str | None]:
    """The (judge, metric) for the main table: a harm judge over a refusal judge, then the widest coverage."""
    coverage: dict[tuple[str | None, str], int] = {}
    for model in models:
        for result in model.safety:
            key = (result.judge, result.data.get("metric"))
            coverage[key] = coverage.get(key, 0) + 1
    if judge is not None:
        coverage = {k: v for k, v in coverage.items() if k[0] == judge}
        if not coverage:
            raise SafeswapError(f"no safety result was judged by {judge!r}")
    if not coverage:
        return None, None
    (best_judge, best_metric), _ = min(
        coverage.items(), key=lambda kv: (kv[0][1] != "unsafe_rate", -kv[1], str(kv[0][0]))
    )
    return best_judge, best_metric


def _assign_roles(models: list[ModelResults], runs_dir: Path) -> None:
    """Name the base and experts a merge's plan lists as its inputs, when they are among the models."""
    by_place: dict[str, ModelResults] = {}
    for model in models:
        folder = model_folder(model.path, runs_dir)
        # A local folder is matched by where it is, a hub id by its name.
        by_place[str(folder) if folder else str(model.path)] = model
    for model in models:
        if model.merge is None:
            continue
        model.role = "merge"
        for role, path in model.merge.inputs.items():
            folder = model_folder(path, runs_dir)
            match = by_place.get(str(folder) if folder else path)
            if match is not None and match.role is None:
                match.role = ROLE_NAMES.get(role, role)


def collect(
    runs_dir: str | Path,
    models: list[str] | None = None,
    languages: list[str] | None = None,
    judge: str | None = None,
    allow_empty: bool = False,
) -> ReportData:
    """Every result under runs_dir, grouped by model label; `models` picks and orders the rows.

    allow_empty: a runs folder without results gives data with no models (a report of searches alone)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise SafeswapError(f"runs folder {runs_dir} does not exist")
    results = _load_all(runs_dir)
    if not results and not allow_empty:
        raise SafeswapError(f"no result files (*{RESULT_SUFFIX}) under {runs_dir}")

    by_label: dict[str, ModelResults] = {}
    seen: dict[tuple[str, str, str | None], Path] = {}
    for result in results:
        info = result.data.get("model") or {}
        label = str(info.get("label") or result.path.parent.name)
        key = (label, result.data.get("benchmark"), result.judge)
        if key in seen:
            raise SafeswapError(
                f"two results for model {label}, benchmark {key[1]}, judge {key[2]}: {seen[key]} and {result.path};"
                " remove one or evaluate under another --label"
            )
        seen[key] = result.path
        model = by_label.setdefault(label, ModelResults(label))
        model.path = model.path or info.get("path")
        if info.get("fingerprint"):
            model.fingerprints.add(str(info["fingerprint"]))
        if result.data.get("kind") == "safety":
            model.safety.append(result)
        elif result.data.get("kind") == "general":
            model.general[result.data["benchmark"]] = result

    warnings: list[str] = []
    for model in by_label.values():
        if len(model.fingerprints) > 1:
            warnings.append(f"Results for {model.label} come from {len(model.fingerprints)} different checkpoints (fingerprints differ).")
        model.merge = find_merge(model.path, runs_dir, warnings)

    if models:
        unknown = [m for m in models if m not in by_label]
        if unknown:
            raise SafeswapError(f"no results for model(s) {', '.join(unknown)}; found {', '.join(sorted(by_label))}")
        chosen = [by_label[m] for m in models]
    else:
        # Base and experts first, merges after them, each group by label.
        chosen = sorted(by_label.values(), key=lambda m: (m.merge is not None, m.label))
    _assign_roles(chosen, runs_dir)

    found_languages = set()
    for model in chosen:
        for result in model.safety + list(model.general.values()):
            found_languages.update(result.data.get("languages") or {})
    if languages:
        missing = [lang for lang in languages if lang not in found_languages]
        if missing:
            raise SafeswapError(f"no results in language(s) {', '.join(missing)}")
        chosen_languages = list(languages)
    else:
        chosen_languages = sorted(found_languages, key=_language_key)

    safety_judge, safety_metric = _choose_safety(chosen, judge)
    benchmarks = [b for b in GENERAL_BENCHMARKS if any(b in m.general for m in chosen)]
    return ReportData(runs_dir, chosen, chosen_languages, safety_judge, safety_metric, benchmarks, warnings)
