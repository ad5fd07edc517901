"""Reading one language's scores out of lm-eval's output (`simple_evaluate`'s results dict).

Each benchmark has a headline metric, read under one lm-eval filter; its
standard error, the companion scores (acc_norm, strict-match exact match) and
the number of documents scored are read beside it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.evaluation.general_tasks import TaskChoice

# The headline metric of each benchmark and the lm-eval filter it is read from.
HEADLINE = {
    "belebele": ("acc", "none"),
    "mmmlu": ("acc", "none"),
    "mgsm": ("exact_match", "flexible-extract"),
}


def _metric(entry: dict[str, Any], name: str, filt: str) -> float | None:
    value = entry.get(f"{name},{filt}")
    return float(value) if isinstance(value, (int, float)) else None


def _stderr(entry: dict[str, Any], name: str, filt: str) -> float | None:
    # lm-eval writes "N/A" for a stderr it could not compute (e.g. one sample).
    return _metric(entry, f"{name}_stderr", filt)


def language_scores(benchmark: str, choice: TaskChoice, lm_results: dict[str, Any]) -> dict[str, Any]:
    """One language's entry in the result file, read from lm-eval's `results` for its task."""
    entry = lm_results["results"].get(choice.task) or lm_results.get("groups", {}).get(choice.task)
    if entry is None:
        raise SafeswapError(f"lm-eval returned no score for task {choice.task}")
    metric, filt = HEADLINE[benchmark]
    value = _metric(entry, metric, filt)
    if value is None:
        raise SafeswapError(f"lm-eval task {choice.task} reported no {metric} under filter {filt!r}")
    scores: dict[str, Any] = {"task": choice.task, metric: value, f"{metric}_stderr": _stderr(entry, metric, filt)}
    if metric == "acc":
        scores["acc_norm"] = _metric(entry, "acc_norm", "none")
        scores["acc_norm_stderr"] = _stderr(entry, "acc_norm", "none")
    else:
        scores["filter"] = filt
        strict = _metric(entry, "exact_match", "strict-match")
        if strict is not None:
            scores["exact_match_strict"] = strict
    scores["n"] = int(entry.get("sample_len") or _leaf_count(choice.task, lm_results))
    scores["stand_in"] = choice.stand_in
    return scores


def _leaf_count(task: str, lm_results: dict[str, Any]) -> int:
    """Documents scored for a task or, for a group, summed over its subtasks."""
    counts = lm_results.get("n-samples", {})
    if task in counts:
        return int(counts[task]["effective"])
    return sum(_leaf_count(sub, lm_results) for sub in lm_results.get("group_subtasks", {}).get(task, []))


def samples_sha256(samples: dict[str, list[dict[str, Any]]]) -> str:
    """Identity of the evaluated documents: lm-eval's per-document hashes, in task and doc order."""
    digest = hashlib.sha256()
    for task in sorted(samples):
        for sample in sorted(samples[task], key=lambda s: s["doc_id"]):
            digest.update(f"{task}:{sample['doc_id']}:{sample.get('doc_hash', '')}\n".encode())
    return digest.hexdigest()
