"""`safeswap search` as a function: split, measure once, evaluate references and trials, write the results.

Layout of DIR: search.db (the Optuna study), statistics/ (measured once), splits.json,
models.json (base and experts' probe scores), candidates/<key>.json (one per evaluated
candidate), candidates.csv, pareto.png, recommended-plan.yaml, search.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safeswap.decide.statistics import load_statistics, save_statistics
from safeswap.errors import SafeswapError
from safeswap.evaluation.multijail import check_languages_present, load_benign, load_bundled, load_multijail
from safeswap.files import atomic_write
from safeswap.read.adapter import is_adapter_folder
from safeswap.search.candidates import Candidate, references
from safeswap.search.executors import make_executor
from safeswap.search.objectives import Scores, feasible, pareto_front, recommend, with_gain
from safeswap.search.outputs import write_candidates_csv, write_pareto_figure, write_summary
from safeswap.search.runner import SearchContext, measure_statistics, plan_of, reference_models
from safeswap.search.space import SearchSpace
from safeswap.search.splits import load_benign_asset, pick, split_record
from safeswap.search.study import open_study, require_optuna, run_trials, trial_records


def _inputs_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a search folder made for other models, prompts or scoring settings (cached scores
    would not compare); the budget, the methods and the constraints may change between runs."""
    path = out / "inputs.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        if before != record:
            changed = next(k for k in record if before.get(k) != record[k])
            raise SafeswapError(f"{out} holds a search made with another {changed} ({before.get(changed)}); "
                                "use another --out")
    else:
        atomic_write(path, json.dumps(record, indent=1))


def prepare(base: str, safety: str, language: str, space: SearchSpace, out: str | Path,
            multijail: str | Path | None = None, benign: str | Path | None = None,
            ability: list[str] | None = None, device: str | None = None) -> SearchContext:
    """The search context: prompts of the search split, statistics measured once (or read back on resume)."""
    for role, ref in (("safety", safety), ("language", language)):
        if Path(ref).expanduser().is_dir() and is_adapter_folder(Path(ref).expanduser()):
            # The probe loads each expert with transformers, which cannot load an adapter folder alone.
            raise SafeswapError(f"{role} expert {ref} is a LoRA adapter; safeswap search takes full checkpoints "
                                "for now: merge the adapter into its base first (PEFT's merge_and_unload)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _inputs_record(out, {"base": str(base), "safety": str(safety), "language": str(language),
                         "multijail": str(multijail) if multijail else None, "benign": str(benign) if benign else None,
                         "ability": list(ability) if ability else None, "languages": list(space.languages),
                         "probe": [space.probe_harmful, space.probe_benign, space.batch_size, space.max_length],
                         "split": [space.search_fraction, space.split_seed], "seed": space.seed})
    harmful = load_multijail(multijail) if multijail else load_bundled()
    check_languages_present(harmful, space.languages)
    benign_set = load_benign(benign) if benign else load_benign_asset()
    target = space.languages[0]
    check_languages_present(benign_set, [target])
    splits = split_record(harmful, benign_set, space.search_fraction, space.split_seed)
    atomic_write(out / "splits.json", json.dumps(splits, indent=1))
    eligible = [p for p in harmful.prompts if all(p.texts.get(c) for c in space.languages)]
    h_prompts = pick(eligible, splits["multijail"]["search"], space.probe_harmful, space.seed)
    b_prompts = pick([p for p in benign_set.prompts if p.texts.get(target)], splits["benign"]["search"],
                     space.probe_benign, space.seed)
    if not h_prompts or not b_prompts:
        raise SafeswapError("the search split holds no harmful or no benign prompt; give more prompts or move "
                            "split.search_fraction toward 0.5")
    stats_dir = out / "statistics"
    if (stats_dir / "statistics.json").is_file():
        stats = load_statistics(stats_dir)
    else:
        stats = measure_statistics(base, safety, language)
        save_statistics(stats, stats_dir, [], {})
    benign_texts = tuple(p.texts[target] for p in b_prompts)
    return SearchContext(
        base=str(base), safety=str(safety), language=str(language), out=str(out.resolve()), statistics=stats,
        harmful={c: tuple(p.texts[c] for p in h_prompts) for c in space.languages},
        benign=benign_texts, benign_language=target, ability_texts=tuple(ability) if ability else benign_texts,
        batch_size=space.batch_size, max_length=space.max_length, keep_weights=space.keep_weights, device=device,
    )


def search(base: str, safety: str, language: str, space: SearchSpace, out: str | Path, *, trials: int | None = None,
           ray_address: str | None = None, gpus_per_candidate: float = 0, cpus_per_candidate: float = 1,
           workers: int = 1,
           storage: str | None = None, multijail: str | Path | None = None, benign: str | Path | None = None,
           ability: list[str] | None = None, device: str | None = None, on_batch=None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary written to DIR/search.json."""
    require_optuna()
    out = Path(out)
    context = prepare(base, safety, language, space, out, multijail, benign, ability, device)
    executor = make_executor(ray_address, workers, gpus_per_candidate, cpus_per_candidate)
    try:
        models = reference_models(context)
        refs = references(space, context.statistics.num_layers)
        ref_records = executor.map(context, refs)
        study = open_study(out, space, storage)
        evaluated = run_trials(study, space, context, executor, models, trials or space.trials, on_batch)
    finally:
        executor.close()
    return summarise(context, space, models, refs, ref_records, trial_records(study), evaluated)


def summarise(context: SearchContext, space: SearchSpace, models: dict[str, Scores], refs: list[Candidate],
              ref_records: list[dict], trials: list[dict], evaluated: int) -> dict[str, Any]:
    """Front, recommendation and the files under DIR, from every distinct candidate's cached result."""
    out = Path(context.out)
    rows: dict[str, dict[str, Any]] = {}
    scores: dict[str, Scores] = {}
    for kind, records in (("reference", ref_records), ("trial", [{"candidate": t["candidate"]} for t in trials])):
        for record in records:
            cand = Candidate.from_dict(record["candidate"])
            row = rows.setdefault(cand.key, {"key": cand.key, "kind": kind, "label": cand.label, "method": cand.method,
                                             "outside_layers": cand.outside_layers, "trials": 0,
                                             "values": json.dumps(cand.values, sort_keys=True)})
            row["trials"] += kind == "trial"
            full = json.loads((out / "candidates" / f"{cand.key}.json").read_text(encoding="utf-8"))
            if "error" in full:
                row["error"] = full["error"]
                continue
            s = with_gain(Scores(**full["scores"]), models["base"], models["language"])
            scores[cand.key] = s
            row.update(s.row(), feasible=feasible(s, space.constraints, models["language"]))
    front = pareto_front({k: s.objectives() for k, s in scores.items()})
    for k in front:
        rows[k]["pareto"] = True
    choice = recommend(scores, space.constraints, models["language"])
    write_candidates_csv(out / "candidates.csv", list(rows.values()))
    labels = {k: r["label"] for k, r in rows.items() if r["kind"] == "reference"}
    write_pareto_figure(out / "pareto.png", scores, front, labels, choice.key)
    plan_file = None
    if choice.key is not None:
        cand = Candidate.from_dict({"method": rows[choice.key]["method"], "label": rows[choice.key]["label"],
                                    "values": json.loads(rows[choice.key]["values"]),
                                    "outside_layers": rows[choice.key]["outside_layers"]})
        plan_file = str(plan_of(context, cand).save(out / "recommended-plan.yaml"))
    summary = {
        "recommended": rows.get(choice.key), "statement": choice.statement, "plan": plan_file,
        "pareto_front": front, "candidates": len(rows), "trials": len(trials), "evaluated_this_run": evaluated,
        "models": {role: asdict(s) for role, s in models.items()},
        "constraints": asdict(space.constraints), "split": "search (probe scores only; no held-out evaluation yet)",
        "probe_judge_rank_correlation": None,
    }
    write_summary(out / "search.json", summary)
    return summary
