"""Several language experts in one run give the same models as separate runs."""

import hashlib
import sys

import pytest
import yaml

import safeswap
import tiny
from safeswap import cli
from safeswap.errors import SafeswapError
from safeswap.cli import parse_language_args


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    base, safety, ko = tiny.make_triple(root, "qwen2", layers=4)
    sw = tiny.perturb(base, root / "sw", {"layers.0.mlp.": 0.4, "layers.3.self_attn.": 0.3}, seed=7)
    return base, safety, {"ko": ko, "sw": sw}


def _shards(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_multi_language_run_equals_separate_runs(experts, tmp_path, monkeypatch, capsys):
    base, safety, langs = experts
    monkeypatch.setattr(sys, "argv", ["safeswap", "merge", "--base", str(base), "--safety", str(safety),
                                      "--language", f"ko={langs['ko']}", "--language", f"sw={langs['sw']}",
                                      "--out", str(tmp_path / "multi"), "--shard-size", "100KB"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    for code, folder in langs.items():
        single = safeswap.merge(base, safety, folder, out=tmp_path / f"single-{code}", shard_size="100KB")
        multi = tmp_path / "multi" / code
        assert _shards(multi) == _shards(single)
        plan_multi = yaml.safe_load((multi / "safeswap-plan.yaml").read_text())
        plan_single = yaml.safe_load((single / "safeswap-plan.yaml").read_text())
        assert plan_multi["units"] == plan_single["units"]
        assert plan_multi["models"]["language"]["code"] == code
        assert f"- {code}" in (multi / "README.md").read_text()
        # the plan written for one language replays on its own
        replay = safeswap.merge(plan=multi / "safeswap-plan.yaml", out=tmp_path / f"replay-{code}", shard_size="100KB")
        assert _shards(replay) == _shards(multi)
    decisions = {code: {u["unit"]: u["decision"] for u in yaml.safe_load(
        (tmp_path / "multi" / code / "safeswap-plan.yaml").read_text())["units"]} for code in langs}
    assert decisions["ko"] != decisions["sw"]  # each language is decided on its own statistics


def test_language_arguments():
    assert parse_language_args(["ko=/a", "sw=b/c"]) == {"ko": "/a", "sw": "b/c"}
    with pytest.raises(SafeswapError, match="write CODE=PATH"):
        parse_language_args(["ko=/a", "/b"])
    with pytest.raises(SafeswapError, match="given twice"):
        parse_language_args(["ko=/a", "ko=/b"])
