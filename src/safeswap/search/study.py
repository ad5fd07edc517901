"""The Optuna study: seeded multi-objective sampler with constraints, SQLite storage under DIR, resumable ask/tell loop.

Trials are asked in batches of `parallel`, evaluated by an executor (in-process, a process
pool or Ray: the same batches in the same order, so the same seed gives the same candidates
whatever runs them) and told back in order. Each batch is asked of a sampler seeded with the
seed plus the trials the study holds, so a batch depends only on the seed and the trials before
it, never on how many runs made them. A search killed mid-batch resumes by finishing that
batch: a trial left RUNNING is told its candidate's cached result, or the candidate is
evaluated now (a trial killed before its candidate was recorded is failed and its parameters
enqueued again). So a killed and resumed search ends with the trials and results of an
uninterrupted one, and no candidate is evaluated twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.search.candidates import Candidate, suggest
from safeswap.search.objectives import DIRECTIONS, Scores, violations, with_gain
from safeswap.search.runner import SearchContext, cached
from safeswap.search.space import SearchSpace

STUDY_NAME = "safeswap-search"
STORAGE_FILE = "search.db"


def require_optuna():
    """Optuna, or one line saying which extra brings it."""
    try:
        import optuna
    except ImportError:
        raise SafeswapError("safeswap search needs Optuna: pip install 'safeswap[search]'") from None
    return optuna


def _constraints(trial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [1.0]))


def _native_constraints() -> bool:
    """Optuna 5 stores constraints on the trial (Trial.set_constraint); Optuna 4 asks the sampler's constraints_func."""
    return hasattr(require_optuna().trial.Trial, "set_constraint")


def make_sampler(space: SearchSpace, seed: int):
    optuna = require_optuna()
    extra = {} if _native_constraints() else {"constraints_func": _constraints}
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, space.parallel), **extra)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, space.parallel), **extra)


def open_study(out: str | Path, space: SearchSpace, storage: str | None = None):
    """The study stored under DIR (an embedded SQLite file unless a storage URL is given), created or resumed.

    A resumed study's sampler is seeded with the seed plus the trials it already holds, so it does not
    replay the random draws of the first run (which would only suggest cached candidates again)."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or f"sqlite:///{Path(out).resolve() / STORAGE_FILE}"
    return optuna.create_study(study_name=STUDY_NAME, storage=url, load_if_exists=True,
                               directions=list(DIRECTIONS), sampler=make_sampler(space, space.seed))


def _tell(study, trial, candidate: Candidate, record: dict[str, Any], space: SearchSpace,
          models: dict[str, Scores]) -> None:
    optuna = require_optuna()
    trial.set_user_attr("candidate", candidate.to_dict())
    if "error" in record:
        trial.set_user_attr("error", record["error"])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    scores = with_gain(Scores(**record["scores"]), models["base"], models["language"])
    limits = violations(scores, space.constraints, models["language"]) or {"none": 0.0}
    if _native_constraints():
        for name, value in limits.items():
            trial.set_constraint(name, value)
    trial.set_user_attr("constraints", list(limits.values()))
    study.tell(trial, list(scores.objectives()))


def recover(study, space: SearchSpace, context: SearchContext, models: dict[str, Scores], executor=None) -> int:
    """Finish the batch a killed search left RUNNING (see the module docstring); returns how many candidates
    were evaluated. Without an executor, only cached candidates are told."""
    optuna = require_optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    known = {f.number: Candidate.from_dict(f.user_attrs["candidate"]) for f in running if "candidate" in f.user_attrs}
    todo = {c.key: c for c in known.values() if cached(context, c) is None} if executor else {}
    results = dict(zip(todo, executor.map(context, list(todo.values())))) if todo else {}
    for frozen in running:
        candidate = known.get(frozen.number)
        record = (results.get(candidate.key) or cached(context, candidate)) if candidate else None
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if record is not None:
            _tell(study, trial, candidate, record, space, models)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
    return len(todo)


def _retried(study) -> set[int]:
    return {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)} - {None}


def finished(study) -> int:
    """Trials counted against the budget: complete ones and failed ones that were not retried."""
    optuna = require_optuna()
    retried = _retried(study)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE
               or (t.state == optuna.trial.TrialState.FAIL and t.number not in retried))


def run_trials(study, space: SearchSpace, context: SearchContext, executor, models: dict[str, Scores],
               n_trials: int, on_batch=None) -> int:
    """Ask, evaluate and tell until n_trials are finished (resumed studies count what they already hold);
    returns the number of candidates evaluated in this call (cache hits not counted)."""
    evaluated = recover(study, space, context, models, executor)
    while (left := n_trials - finished(study)) > 0:
        study.sampler = make_sampler(space, space.seed + len(study.get_trials(deepcopy=False)))
        trials = [study.ask() for _ in range(min(space.parallel, left))]
        candidates = [suggest(t, space) for t in trials]
        for trial, candidate in zip(trials, candidates):
            trial.set_user_attr("candidate", candidate.to_dict())
        todo = {c.key: c for c in candidates if cached(context, c) is None}
        evaluated += len(todo)
        results = dict(zip(todo, executor.map(context, list(todo.values())))) if todo else {}
        for trial, candidate in zip(trials, candidates):
            record = results.get(candidate.key) or cached(context, candidate)
            _tell(study, trial, candidate, record, space, models)
        if on_batch:
            on_batch(finished(study))
    return evaluated


def trial_records(study) -> list[dict[str, Any]]:
    """Every finished trial's number, state, candidate and (complete ones) objective values; a trial a kill
    interrupted and that was retried is left out (its retry is there)."""
    out, retried = [], _retried(study)
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and "candidate" in t.user_attrs and t.number not in retried:
            out.append({"number": t.number, "state": t.state.name, "candidate": t.user_attrs["candidate"],
                        "values": t.values, "params": dict(t.params), "error": t.user_attrs.get("error")})
    return out
