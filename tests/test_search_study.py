"""A search on tiny models end to end: outputs, a replayable recommended plan, resume without re-evaluation."""

import csv
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("torch")

from tiny import make_triple  # noqa: E402

from safeswap.search.space import parse_space  # noqa: E402

SPACE = {
    "seed": 0, "trials": 4, "parallel": 2, "languages": ["ko"],
    "probe": {"harmful": 2, "benign": 2, "max_length": 64},
    "constraints": {"max_benign_refusal_over_language": 0.05, "min_kept_language_gain": None},
    "methods": {
        "adaptive": {"tau": {"low": 0.0001, "high": 0.05, "log": True}, "alpha": {"low": 0.0, "high": 1.0},
                     "granularity": ["layer", "module"]},
        "linear": {"weight": {"low": 0.0, "high": 1.0}},
        "layer-swap": {"bottom": {"low": 0, "high": 2}, "top": {"low": 0, "high": 2}},
    },
}


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tuple(str(p) for p in make_triple(tmp_path_factory.mktemp("search")))


@pytest.fixture
def merges(monkeypatch):
    """Counts the merges (one per evaluated candidate) by output folder name (the candidate's key)."""
    import safeswap.write.pipeline as pipeline

    seen = Counter()
    real = pipeline.merge

    def counting(*args, **kwargs):
        seen[Path(args[3].out).name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "merge", counting)
    return seen


def run(triple, out, **kw):
    from safeswap.search.run import search

    space = parse_space({**SPACE, **kw.pop("space", {})})
    return search(*triple, space, out, **kw)


def test_search_end_to_end_and_resume(triple, tmp_path, merges):
    out = tmp_path / "s"
    first = run(triple, out, trials=4)
    assert first["trials"] == 4 and first["evaluated_this_run"] >= 1
    for name in ("candidates.csv", "pareto.png", "search.json", "splits.json", "search.db", "models.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "candidates.csv").open()))
    labels = {r["label"] for r in rows if r["kind"] == "reference"}
    assert labels == {"paper-default", "linear", "layer-swap"}
    assert all(r["harmful"] and 0 <= float(r["harmful"]) <= 1 for r in rows if not r["error"])
    assert any(r["pareto"] == "True" for r in rows)
    assert not (out / "work").exists(), "candidate weights are deleted unless kept"
    assert merges and max(merges.values()) == 1
    study = optuna.load_study(study_name="safeswap-search", storage=f"sqlite:///{out / 'search.db'}")
    before = [(t.number, t.params, t.values) for t in study.trials]

    merges.clear()
    again = run(triple, out, trials=4)  # nothing left to do
    assert again["evaluated_this_run"] == 0 and not merges and again["trials"] == 4

    more = run(triple, out, trials=7)
    study = optuna.load_study(study_name="safeswap-search", storage=f"sqlite:///{out / 'search.db'}")
    assert len(study.trials) == 7 and more["trials"] == 7
    assert [(t.number, t.params, t.values) for t in study.trials[:4]] == before
    assert max(merges.values(), default=1) == 1
    earlier = {json.loads(p.read_text())["candidate"]["key"] for p in (out / "candidates").glob("*.json")}
    assert len(earlier) == len(list((out / "candidates").glob("*.json")))

    if more["plan"]:
        from safeswap.decide.methods import load_plan
        from safeswap.write.pipeline import WriteSettings, merge

        plan = load_plan(more["plan"])
        merge(triple[0], triple[1], {None: triple[2]}, WriteSettings(out=tmp_path / "replayed"), plan=plan)
        assert (tmp_path / "replayed" / "safeswap-plan.yaml").is_file()
    else:
        assert more["statement"].startswith("no candidate met")


def test_a_trial_left_running_by_a_kill_is_finished_once(triple, tmp_path, merges):
    from safeswap.search.candidates import suggest
    from safeswap.search.study import open_study

    out = tmp_path / "k"
    run(triple, out, trials=2)
    space = parse_space(SPACE)
    study = open_study(out, space)
    orphan = study.ask()  # what a kill between ask and tell leaves behind
    candidate = suggest(orphan, space)
    orphan.set_user_attr("candidate", candidate.to_dict())
    merges.clear()
    run(triple, out, trials=4)
    study = optuna.load_study(study_name="safeswap-search", storage=f"sqlite:///{out / 'search.db'}")
    states = Counter(t.state.name for t in study.trials)
    assert states["RUNNING"] == 0
    assert merges[candidate.key] <= 1 and max(merges.values()) == 1
    assert (out / "candidates" / f"{candidate.key}.json").is_file()


def test_a_killed_search_process_resumes(triple, tmp_path):
    """SIGKILL a search process mid-run; the next run finishes the budget and no candidate is evaluated twice."""
    out = tmp_path / "p"
    script = (
        "import sys, json\n"
        "from safeswap.search.space import parse_space\n"
        "from safeswap.search.run import search\n"
        f"space = parse_space(json.loads({json.dumps(json.dumps(SPACE))}))\n"
        f"search({triple[0]!r}, {triple[1]!r}, {triple[2]!r}, space, {str(out)!r}, trials=12)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "candidates").glob("*.json"))) < 5:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert len(list((out / "candidates").glob("*.json"))) >= 5, "the search did not get going"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("*.json")}
    summary = run(triple, out, trials=12)
    assert summary["trials"] == 12
    for name, stamp in stamps.items():  # nothing evaluated before the kill was evaluated (written) again
        assert (out / "candidates" / name).stat().st_mtime_ns == stamp


def test_a_search_folder_of_other_models_or_settings_is_refused(triple, tmp_path):
    from safeswap.errors import SafeswapError
    from safeswap.search.run import prepare

    out = tmp_path / "o"
    space = parse_space(SPACE)
    prepare(*triple, space, out)
    with pytest.raises(SafeswapError, match="made with another base"):
        prepare(triple[1], triple[1], triple[2], space, out)
    with pytest.raises(SafeswapError, match="made with another probe"):
        prepare(*triple, parse_space({**SPACE, "probe": {"harmful": 3}}), out)
    prepare(*triple, parse_space({**SPACE, "trials": 9}), out)  # a larger budget resumes
