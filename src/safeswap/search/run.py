"""`safeswap search` as a function: split, measure once, evaluate references and trials, write the results.

Stages: the probe scores every candidate (references and Optuna trials) on the search split;
the generation stage judges the probe's best (screening.py) and the recommendation is made
from the judged numbers; the final evaluation (final.py) measures the recommended candidate,
the references and the models on the held-out split.

Every check that can fail (the extras, the Ray address, the inputs and their tokenizers, the
prompt files, the judge settings, the destination, a resume's settings) runs before DIR is made;
the folder rules, the lock and what a resume accepts are in folder.py.

Layout of DIR: search.lock (held while a search runs), inputs.json (what a resume must match),
search.db (the Optuna study), statistics/ (measured once), splits.json, models.json (base and
experts' probe scores), candidates/<key>.json (one per evaluated candidate), generation/
(judged answers of the generation stage), final/ and final.json (the held-out evaluation),
candidates.csv, pareto.png, recommended-plan.yaml (a candidate met every constraint) or best-plan.yaml
(none did: the closest one), search.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from safeswap.decide.statistics import load_statistics, save_statistics
from safeswap.errors import SafeswapError
from safeswap.evaluation.multijail import (PromptSet, check_languages_present, load_benign, load_bundled,
                                          load_multijail)
from safeswap.files import atomic_write
from safeswap.progress import StageProgress
from safeswap.read.sources import resolve_model
from safeswap.read.tokenizer_source import VOCABULARY_FILES, holds_tokenizer, tokenizer_source
from safeswap.search.adapters import adapter_experts, check_exact_methods
from safeswap.search.candidates import Candidate, references
from safeswap.search.executors import RAY_TIMEOUT, make_executor
from safeswap.search.folder import check_resume, check_search_destination, search_folder, settings_record
from safeswap.search.final import run_final
from safeswap.search.judged import JudgeSettings, PromptChoice, check_judge_settings
from safeswap.search.objectives import Scores, feasible, pareto_front, recommend, with_gain
from safeswap.search.outputs import write_candidates_csv, write_pareto_figure, write_summary
from safeswap.search.runner import (SearchContext, hash_inputs, measure_statistics, plan_of, reference_models,
                                    release_held_model)
from safeswap.search.screening import run_generation_stage
from safeswap.search.space import SearchSpace
from safeswap.search.splits import load_benign_asset, pick, split_record
from safeswap.search.study import open_study, require_optuna, run_trials, trial_records


class PromptSets:
    """The prompt files a search reads, and their seeded search / held-out split."""

    def __init__(self, space: SearchSpace, multijail: str | Path | None, benign: str | Path | None):
        self.harmful: PromptSet = load_multijail(multijail) if multijail else load_bundled()
        check_languages_present(self.harmful, space.languages)
        self.benign: PromptSet = load_benign(benign) if benign else load_benign_asset()
        self.target = space.languages[0]
        check_languages_present(self.benign, [self.target])
        self.splits = split_record(self.harmful, self.benign, space.search_fraction, space.split_seed)
        self.seed = space.seed

    def choice(self, half: str, languages: tuple[str, ...], harmful: int, benign: int) -> PromptChoice:
        """Prompts of one half ("search" or "held_out"): harmful ones with text in every language asked, benign
        ones with text in the target language (asked in English too when the held-out table wants it)."""
        eligible = [p for p in self.harmful.prompts if all(p.texts.get(c) for c in languages)]
        h = pick(eligible, self.splits["multijail"][half], harmful, self.seed)
        b = pick([p for p in self.benign.prompts if p.texts.get(self.target)], self.splits["benign"][half], benign,
                 self.seed)
        if not h or not b:
            raise SafeswapError(f"the {half.replace('_', '-')} split holds no harmful or no benign prompt; give more "
                                "prompts or move split.search_fraction toward 0.5")
        benign_languages = tuple(c for c in languages if c in self.benign.languages and (c == "en" or c == self.target))
        chosen = PromptSet(b, self.benign.source, self.benign.sha256, self.benign.languages)
        return PromptChoice(self.harmful, tuple(h), languages, chosen, benign_languages or (self.target,), self.target)


@dataclass(frozen=True)
class Checked:
    """What the checks before the folder found: the prompt sets, the inputs' sha256 and the resume record."""

    sets: PromptSets
    input_sha256: dict
    record: dict[str, Any]


def check_search(base: str, safety: str, language: str, space: SearchSpace, out: str | Path,
                 multijail: str | Path | None = None, benign: str | Path | None = None,
                 ability: list[str] | None = None, device: str | None = None, storage: str | None = None,
                 sets: PromptSets | None = None) -> Checked:
    """Every check on the inputs, prompts and destination, before DIR is made: a failed start leaves nothing."""
    if adapter_experts(safety, language):  # candidates are adapters: only methods whose merge is one
        check_exact_methods([m.method for m in space.methods])
    sets = sets or PromptSets(space, multijail, benign)
    sets.choice("search", tuple(space.languages), space.probe_harmful, space.probe_benign)  # each split holds prompts
    if space.generation.top:
        sets.choice("search", tuple(space.languages), space.generation.harmful, space.generation.benign)
    if space.final is not None:
        sets.choice("held_out", ("en",) + tuple(c for c in space.languages if c != "en"), space.final.harmful,
                    space.final.benign)
    input_sha256 = hash_inputs(base, safety, language)  # once per search: every written candidate reuses them
    folders = [(role, resolve_model(ref, role)) for role, ref in (("base", base), ("safety", safety),
                                                                   ("language", language))]
    if folders[0][1].is_dir() and not holds_tokenizer(folders[0][1]):
        raise SafeswapError(f"base model {folders[0][1]} has no tokenizer ({', '.join(VOCABULARY_FILES)}); the "
                            "search's probe and generation need one")
    for role, ref in (("safety", safety), ("language", language)):  # experts saved without one take the base's
        tokenizer_source(ref, base, f"{role} expert")
    check_search_destination(out, folders)
    record = settings_record(base, safety, language, space, multijail=multijail, benign=benign,
                             prompts_sha256=[sets.harmful.sha256, sets.benign.sha256], ability=ability,
                             device=device, storage=storage, input_sha256=input_sha256)
    check_resume(Path(out).expanduser(), record)
    return Checked(sets, input_sha256, record)


def prepare(base: str, safety: str, language: str, space: SearchSpace, out: str | Path,
            multijail: str | Path | None = None, benign: str | Path | None = None,
            ability: list[str] | None = None, device: str | None = None,
            sets: PromptSets | None = None) -> SearchContext:
    """check_search, then the folder made and filled (fill): for callers that hold no lock past it."""
    checked = check_search(base, safety, language, space, out, multijail, benign, ability, device, None, sets)
    with search_folder(out, checked.record) as folder:
        return fill(base, safety, language, space, folder, checked, ability, device)


def fill(base: str, safety: str, language: str, space: SearchSpace, out: Path, checked: Checked,
         ability: list[str] | None = None, device: str | None = None) -> SearchContext:
    """The search context: prompts of the search split, statistics measured once (or read back on resume)."""
    sets, input_sha256 = checked.sets, checked.input_sha256
    atomic_write(out / "splits.json", json.dumps(sets.splits, indent=1))
    probe = sets.choice("search", tuple(space.languages), space.probe_harmful, space.probe_benign)
    stats_dir = out / "statistics"
    if (stats_dir / "statistics.json").is_file():
        stats = load_statistics(stats_dir)
    else:
        stats = measure_statistics(base, safety, language)
        save_statistics(stats, stats_dir, [], {})
    benign_texts = tuple(p.texts[sets.target] for p in probe.benign.prompts)
    return SearchContext(
        base=str(base), safety=str(safety), language=str(language), out=str(out.resolve()), statistics=stats,
        harmful={c: tuple(p.texts[c] for p in probe.harmful) for c in space.languages},
        benign=benign_texts, benign_language=sets.target, ability_texts=tuple(ability) if ability else benign_texts,
        batch_size=space.batch_size, max_length=space.max_length, keep_weights=space.keep_weights, device=device,
        input_sha256=input_sha256, adapters=adapter_experts(safety, language),
    )


def search(base: str, safety: str, language: str, space: SearchSpace, out: str | Path, *, trials: int | None = None,
           ray_address: str | None = None, gpus_per_candidate: float = 0, cpus_per_candidate: float = 1,
           workers: int = 1, ray_timeout: float = RAY_TIMEOUT,
           storage: str | None = None, multijail: str | Path | None = None, benign: str | Path | None = None,
           ability: list[str] | None = None, device: str | None = None, on_batch=None,
           judge: JudgeSettings | None = None, progress: StageProgress | None = None,
           notify: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary written to DIR/search.json."""
    require_optuna()
    if space.generation.top:
        require_scipy()
    judge = judge or JudgeSettings()
    if space.generation.top or space.final:
        check_judge_settings(judge, adapter_experts(safety, language))
    out = Path(out).expanduser()
    clock = StageTimes()
    checked = check_search(base, safety, language, space, out, multijail, benign, ability, device, storage)
    # Ray answers (or the pool starts) before the folder is made, and is let go before the generation stage.
    executor = make_executor(ray_address, workers, gpus_per_candidate, cpus_per_candidate, ray_timeout)
    try:
        with search_folder(out, checked.record):
            context = fill(base, safety, language, space, out, checked, ability, device)
            clock.lap("statistics and input hashes")
            models = reference_models(context)
            refs = references(space, context.statistics.num_layers)
            ref_records = executor.map(context, refs)
            study = open_study(out, space, storage)
            evaluated = run_trials(study, space, context, executor, models, trials or space.trials, on_batch)
            executor.close()
            release_held_model()  # the probe's model: the generation stage loads its own
            clock.lap("probe stage")
            summary = summarise(context, space, models, refs, ref_records, trial_records(study), evaluated,
                                checked.sets, judge, progress, notify, clock)
            atomic_write(out / "timings.json", json.dumps(clock.seconds, indent=1))
    finally:
        executor.close()
        release_held_model()
    return summary


def require_scipy():
    """scipy (the generation stage's rank correlation), or one line saying which extra brings it, before any work."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        raise SafeswapError("the search's generation stage needs scipy: pip install 'safeswap[search]' "
                            "(or set generation.top: 0)") from None


class StageTimes:
    """Wall seconds of each stage of this run, written to DIR/timings.json (apart from search.json, which the
    same inputs make byte-identical; times are not)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.last, 3)
        self.last = now


def _probe_rows(context: SearchContext, models: dict[str, Scores], ref_records: list[dict], trials: list[dict]):
    """Every distinct candidate's CSV row, Candidate and probe Scores, from its cached result."""
    out = Path(context.out)
    rows: dict[str, dict[str, Any]] = {}
    cands: dict[str, Candidate] = {}
    scores: dict[str, Scores] = {}
    for kind, records in (("reference", ref_records), ("trial", [{"candidate": t["candidate"]} for t in trials])):
        for record in records:
            cand = Candidate.from_dict(record["candidate"])
            cands.setdefault(cand.key, cand)
            row = rows.setdefault(cand.key, {"key": cand.key, "kind": kind, "label": cand.label, "method": cand.method,
                                             "outside_layers": cand.outside_layers, "trials": 0,
                                             "values": json.dumps(cand.values, sort_keys=True)})
            row["trials"] += kind == "trial"
            full = json.loads((out / "candidates" / f"{cand.key}.json").read_text(encoding="utf-8"))
            if "error" in full:
                row["error"] = full["error"]
                continue
            scores[cand.key] = with_gain(Scores(**full["scores"]), models["base"], models["language"])
    return rows, cands, scores


RECOMMENDED_PLAN, BEST_PLAN = "recommended-plan.yaml", "best-plan.yaml"


def hand_back_plans(context: SearchContext, out: Path, recommended: Candidate | None, best: Candidate | None
                    ) -> tuple[str | None, str | None]:
    """(recommended-plan.yaml, best-plan.yaml) as written: the recommended plan when a candidate qualifies, else
    the best one's (the candidate that misses its constraints by least). The other file is removed, so a resumed
    search never leaves a plan its summary no longer names."""
    for name in (RECOMMENDED_PLAN, BEST_PLAN):
        (out / name).unlink(missing_ok=True)
    if recommended is not None:
        return str(plan_of(context, recommended).save(out / RECOMMENDED_PLAN)), None
    if best is not None:
        return None, str(plan_of(context, best).save(out / BEST_PLAN))
    return None, None


def replay_command(context: SearchContext, plan_file: str | None) -> str | None:
    """How the handed-back plan is merged: as an adapter when the experts are adapters (every candidate was one)."""
    if plan_file is None:
        return None
    return f"safeswap merge --plan {plan_file}{' --output adapter' if context.adapters else ''} --out DIR"


def summarise(context: SearchContext, space: SearchSpace, models: dict[str, Scores], refs: list[Candidate],
              ref_records: list[dict], trials: list[dict], evaluated: int, sets: PromptSets, judge: JudgeSettings,
              progress: StageProgress | None, notify: Callable[[str], None], clock: StageTimes) -> dict[str, Any]:
    """Front, generation stage, recommendation, final evaluation and the files under DIR."""
    out = Path(context.out)
    rows, cands, scores = _probe_rows(context, models, ref_records, trials)
    for key, s in scores.items():
        rows[key].update(s.row(), feasible=feasible(s, space.constraints, models["language"]))
    front = pareto_front({k: s.objectives() for k, s in scores.items()})
    for k in front:
        rows[k]["pareto"] = True
    names = {k: f"{c.label} ({c.describe()})" if c.label else c.describe() for k, c in cands.items()}
    stage, correlation = None, None
    if space.generation.top and scores:
        prompts = sets.choice("search", tuple(space.languages), space.generation.harmful, space.generation.benign)
        stage = run_generation_stage(context, space, judge, cands, scores, models, prompts, progress, notify)
        correlation = stage["correlation"]
        for key, s in stage["scores"].items():
            rows[key].update(judged_feasible=feasible(s, space.constraints, stage["models"]["language"]),
                             judge_harmful=s.harmful, judge_benign=s.benign, judge_in_language=s.in_language)
        choice = recommend(stage["scores"], space.constraints, stage["models"]["language"], names)
        clock.lap("generation stage")
    else:
        choice = recommend(scores, space.constraints, models["language"], names)
    write_candidates_csv(out / "candidates.csv", list(rows.values()))
    labels = {k: r["label"] for k, r in rows.items() if r["kind"] == "reference"}
    judged_labels = {c["key"]: c["label"] or f"probe #{c['probe_rank']}"
                     for c in stage["summary"]["candidates"]} if stage else None
    write_pareto_figure(out / "pareto.png", scores, front, labels, choice.key, models,
                        stage["scores"] if stage else None, stage["models"] if stage else None, judged_labels)
    recommended = cands.get(choice.key) if choice.key else None
    plan_file, best_file = hand_back_plans(context, out, recommended, cands.get(choice.best) if choice.best else None)
    final = None
    if space.final is not None:
        targets = tuple(space.languages)
        held_out = sets.choice("held_out", ("en",) + tuple(c for c in targets if c != "en"), space.final.harmful,
                               space.final.benign)
        ability = tuple(p.texts[sets.target] for p in held_out.benign.prompts)
        run_final(context, space, judge, held_out, ability, recommended,
                  [cands[c.key] for c in refs if c.key in scores], progress, notify)
        final = "final.json"
        clock.lap("final evaluation")
    summary = {
        "recommended": rows.get(choice.key), "statement": choice.statement, "plan": plan_file,
        # The plan a search always hands back: the recommended one, else the closest miss with its misses.
        "best": rows.get(choice.best) if choice.best else None, "best_plan": best_file,
        "best_misses": choice.misses, "replay": replay_command(context, plan_file or best_file),
        "recommended_by": "judge" if stage else "probe",
        "pareto_front": front, "candidates": len(rows), "trials": len(trials), "evaluated_this_run": evaluated,
        "models": {role: asdict(s) for role, s in models.items()},
        "constraints": asdict(space.constraints),
        "split": "search split (probe and generation stage); the final evaluation is on the held-out split",
        "probe_judge_rank_correlation": correlation,
        "generation": stage["summary"] if stage else None,
        "final": final,
    }
    write_summary(out / "search.json", summary)
    return summary
