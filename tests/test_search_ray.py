"""Candidates as Ray tasks on a local Ray (num_cpus=2): the same candidates and scores as in-process, same seed."""

import json

import pytest

pytest.importorskip("optuna")
pytest.importorskip("ray")
pytest.importorskip("torch")

from tiny import make_triple  # noqa: E402

from safeswap.search.space import parse_space  # noqa: E402

SPACE = {
    "seed": 5, "trials": 2, "parallel": 2, "languages": ["ko"],
    "probe": {"harmful": 2, "benign": 2, "max_length": 64},
    "generation": {"top": 0}, "final": False,  # the stages after the trials run here, whoever ran the trials
    "methods": {"adaptive": {"tau": {"low": 0.0001, "high": 0.05, "log": True}}, "slerp": {"t": {"low": 0, "high": 1}}},
}


def outcome(out):
    records = [json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))]
    return {r["candidate"]["key"]: (r["candidate"], r.get("scores")) for r in records}


def test_ray_and_in_process_give_the_same_candidates_and_scores(tmp_path):
    from safeswap.search.run import search

    triple = [str(p) for p in make_triple(tmp_path / "models")]
    space = parse_space(SPACE)
    local = search(*triple, space, tmp_path / "local")
    remote = search(*triple, space, tmp_path / "ray", ray_address="local")
    a, b = outcome(tmp_path / "local"), outcome(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) >= 3
    for key in a:
        assert a[key][0] == b[key][0]
        assert a[key][1] == pytest.approx(b[key][1], rel=1e-5, nan_ok=True)
    assert local["pareto_front"] == remote["pareto_front"]
