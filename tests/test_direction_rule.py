"""The direction criterion of `adaptive`: per-unit cosines and decisions against a by-hand computation.

The experts are written by hand over a tiny base, with updates whose direction is known:
per (layer, module) the language update L - B is the safety update S - B reversed, scaled,
orthogonal to it, or a mix that only the concatenated cosine gets right.
"""

import csv
import json
import math
import re
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import safeswap
import tiny
from safeswap.decide import specialization
from safeswap.decide.methods.adaptive import decide_direction
from safeswap.decide.plan_figures import unit_figures
from safeswap.decide.planning import analysis_units
from safeswap.decide.statistics import load_statistics
from safeswap.errors import SafeswapError

SCORED = re.compile(r"model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight$")
BAND = 0.05  # tau, the half-width of the blend band around the threshold
EXPECTED = {  # (layer, module) -> the direction rule's decision at threshold 0, band 0.05
    (0, "attention"): "safety",  # L - B = -(S - B): cos -1
    (0, "mlp"): "language",  # L - B = 2 (S - B): cos +1
    (1, "attention"): "blend",  # L - B orthogonal to S - B: cos 0
    (1, "mlp"): "safety",  # gate reversed (x3), up parallel, down orthogonal: cos about -0.35
    (2, "attention"): "language",  # L - B = (S - B) / 2
    (2, "mlp"): "safety",  # reversed
}


def _orthogonal(delta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random tensor of delta's norm, orthogonal to it (float64)."""
    r = torch.randn(delta.shape, generator=gen, dtype=torch.float64)
    d = delta.double()
    r -= (r * d).sum() / (d * d).sum() * d
    return r * (d.norm() / r.norm())


def _language_update(layer: int, module: str, proj: str, ds: torch.Tensor, gen, flip: bool) -> torch.Tensor:
    kind = {(0, "attention"): "reverse", (0, "mlp"): "double", (1, "attention"): "orthogonal",
            (2, "attention"): "half", (2, "mlp"): "reverse"}.get((layer, module))
    if (layer, module) == (1, "mlp"):
        kind = {"gate_proj": "reverse3", "up_proj": "same", "down_proj": "orthogonal"}[proj]
    if flip and kind in ("reverse", "double"):  # a second language expert with other directions
        kind = "double" if kind == "reverse" else "reverse"
    ds = ds.double()
    return {"reverse": -ds, "double": 2 * ds, "half": ds / 2, "same": ds, "reverse3": -3 * ds,
            "orthogonal": _orthogonal(ds, gen)}[kind]


def _write_expert(base, folder, tensors):
    shutil.copytree(base, folder)
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base, safety and two language experts (float32), with updates of known direction."""
    root = tmp_path_factory.mktemp("direction")
    base = tiny.make_model(root / "base", "llama", layers=3, seed=0, dtype=torch.float32)
    b = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(11)
    safety, langs = {}, {"ko": {}, "sw": {}}
    for name, w in b.items():
        rms = w.norm() / math.sqrt(w.numel())
        ds = 0.05 * rms * torch.randn(w.shape, generator=gen)
        safety[name] = w + ds
        m = SCORED.match(name)
        for code, out in langs.items():
            if m:
                layer, module = int(m[1]), "attention" if m[2] == "self_attn" else "mlp"
                dl = _language_update(layer, module, m[3], ds, gen, flip=code == "sw").float()
            else:  # norms, embeddings, LM head: an unrelated small change
                dl = 0.01 * rms * torch.randn(w.shape, generator=gen)
            out[name] = w + dl
    s = _write_expert(base, root / "safety", safety)
    return base, s, {code: _write_expert(base, root / code, t) for code, t in langs.items()}


def _unit(granularity, name):
    m = SCORED.match(name)
    layer, module = int(m[1]), "attention" if m[2] == "self_attn" else "mlp"
    return {"layer": f"layer.{layer}", "module": f"layer.{layer}.{module}", "projection": name}[granularity]


def by_hand(base, safety, language, granularity):
    """Per unit: the cosine of the concatenated updates, from the stored tensors in float64."""
    b, s, l_ = (load_file(str(f / "model.safetensors")) for f in (base, safety, language))
    sums = {}
    for name in b:
        if not SCORED.match(name):
            continue
        ds, dl = s[name].double() - b[name].double(), l_[name].double() - b[name].double()
        acc = sums.setdefault(_unit(granularity, name), [0.0, 0.0, 0.0])
        acc[0] += float((ds * dl).sum())
        acc[1] += float((ds * ds).sum())
        acc[2] += float((dl * dl).sum())
    return {u: dot / math.sqrt(ss * sl) for u, (dot, ss, sl) in sums.items()}


def by_hand_tensors(base, safety, language):
    b, s, l_ = (load_file(str(f / "model.safetensors")) for f in (base, safety, language))
    out = {}
    for name in b:
        if SCORED.match(name):
            ds, dl = s[name].double() - b[name].double(), l_[name].double() - b[name].double()
            scale = float(ds.norm() * dl.norm())
            out[name] = (float((ds * dl).sum()), float((ds * dl).sum()) / scale, scale)
    return out


@pytest.fixture(scope="module")
def analysed(models, tmp_path_factory):
    base, safety, langs = models
    out = tmp_path_factory.mktemp("analysis") / "stats"
    safeswap.analyze(base, safety, langs["ko"], out)
    return out


def test_tensor_dots_and_cosines_match_by_hand(models, analysed):
    base, safety, langs = models
    expected = by_hand_tensors(base, safety, langs["ko"])
    with open(analysed / "tensor_stats.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(expected)
    for name, (dot, cos, scale) in expected.items():
        assert float(rows[name]["dot"]) == pytest.approx(dot, rel=1e-5, abs=1e-6 * scale), name
        assert float(rows[name]["cos"]) == pytest.approx(cos, abs=1e-6), name
    stats = json.loads((analysed / "statistics.json").read_text())
    assert {t["name"]: t["cos"] for t in stats["tensors"]} == {n: float(r["cos"]) for n, r in rows.items()}


@pytest.mark.parametrize("granularity", ["layer", "module", "projection"])
def test_unit_cosines_and_decisions_match_by_hand(models, analysed, granularity):
    base, safety, langs = models
    expected = by_hand(base, safety, langs["ko"], granularity)
    plan = safeswap.plan(statistics=analysed, granularity=granularity, tau=BAND, parameters={"criterion": "direction"})
    assert plan.parameters == {"granularity": granularity, "tau": BAND, "alpha": 0.5, "criterion": "direction",
                               "threshold": 0.0}
    units = {u["unit"]: u for u in plan.units}
    assert set(units) == set(expected)
    for uid, cos in expected.items():
        assert units[uid]["cos"] == pytest.approx(cos, abs=1e-6), uid
        assert units[uid]["decision"] == decide_direction(cos, 0.0, BAND), uid
        assert set(units[uid]) >= {"d", "p_safety", "p_language", "cos"}
    if granularity == "module":
        assert {uid: u["decision"] for uid, u in units.items()} == {
            f"layer.{layer}.{module}": decision for (layer, module), decision in EXPECTED.items()}
        # Concatenation, not the mean of the tensors' cosines (which is about 0 for layer 1's MLP: a blend).
        tensors = by_hand(base, safety, langs["ko"], "projection")
        mean = sum(c for n, c in tensors.items() if ".layers.1.mlp." in n) / 3
        assert decide_direction(mean, 0.0, BAND) == "blend" and units["layer.1.mlp"]["cos"] < -0.2


def test_threshold_moves_the_cut(models, analysed):
    base, safety, langs = models
    expected = by_hand(base, safety, langs["ko"], "module")
    plan = safeswap.plan(statistics=analysed, tau=BAND, parameters={"criterion": "direction", "threshold": -0.5})
    for u in plan.units:
        assert u["decision"] == decide_direction(expected[u["unit"]], -0.5, BAND)
    assert {u["unit"]: u["decision"] for u in plan.units}["layer.1.mlp"] == "language"  # cos -0.35 > -0.45
    zero_band = safeswap.plan(statistics=analysed, tau=0, parameters={"criterion": "direction"})
    assert "blend" not in {u["decision"] for u in zero_band.units if u["unit"] != "layer.1.attention"}


def test_merged_tensors_follow_the_direction_decisions(models, tmp_path):
    base, safety, langs = models
    out = safeswap.merge(base, safety, langs["ko"], out=tmp_path / "m", tau=BAND, parameters={"criterion": "direction"})
    plan = yaml.safe_load((out / "safeswap-plan.yaml").read_text())
    decisions = {u["unit"]: u["decision"] for u in plan["units"]}
    assert decisions == {f"layer.{layer}.{module}": d for (layer, module), d in EXPECTED.items()}
    merged, s, l_ = (load_file(str(f / "model.safetensors")) for f in (out, safety, langs["ko"]))
    assert set(merged) == set(l_)
    bits = lambda t: t.view(torch.int32)  # noqa: E731  byte-identical, not merely equal
    for name, tensor in merged.items():
        if SCORED.match(name):
            decision = decisions[_unit("module", name)]
        elif ".layers." in name:
            decision = "language"  # the layer's norms stay with the language expert at module granularity
        else:
            decision = "blend"  # embeddings, final norm, LM head
        if decision == "blend":
            assert torch.equal(tensor, 0.5 * s[name] + 0.5 * l_[name]), name
        else:
            assert torch.equal(bits(tensor), bits({"safety": s, "language": l_}[decision][name])), name
    for figure in ("specialization.png", "direction.png", "decisions.png"):
        assert (out / figure).stat().st_size > 0
    # The strict replay accepts the cos field, and gives the same bytes.
    replay = safeswap.merge(plan=out / "safeswap-plan.yaml", out=tmp_path / "replay")
    assert (replay / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    # --force may replace a merged folder holding direction.png.
    safeswap.merge(base, safety, langs["ko"], out=out, force=True, parameters={"criterion": "direction"})


def test_norm_plans_are_unchanged_by_the_criterion(models, tmp_path):
    base, safety, langs = models
    for granularity in ("layer", "module", "projection"):
        omitted = safeswap.plan(base, safety, langs["ko"], granularity=granularity,
                                out=tmp_path / f"a-{granularity}.yaml")
        named = safeswap.plan(base, safety, langs["ko"], granularity=granularity, parameters={"criterion": "norm"},
                              out=tmp_path / f"b-{granularity}.yaml")
        assert (tmp_path / f"a-{granularity}.yaml").read_bytes() == (tmp_path / f"b-{granularity}.yaml").read_bytes()
        # What the norm rule has always recorded: no criterion, no threshold, no cos.
        assert list(omitted.parameters) == ["granularity", "tau", "alpha"] == list(named.parameters)
        assert all(list(u)[-3:] == ["d", "p_safety", "p_language"] for u in omitted.units)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"criterion": "angle"}, "unknown criterion 'angle'; choose one of norm, direction"),
        ({"criterion": "direction", "threshold": "x"}, "threshold must be a number"),
        ({"criterion": "direction", "threshold": 1.5}, "threshold must lie in [-1, 1]"),
        ({"criterion": "direction", "threshold": float("nan")}, "threshold must be finite"),
        ({"threshold": 0.2}, "the norm criterion does not take it"),
        ({"criterion": "direction", "tau": -1}, "tau must be >= 0"),
    ],
)
def test_bad_criterion_and_threshold_are_one_line_errors(models, parameters, message):
    base, safety, langs = models
    with pytest.raises(SafeswapError, match=re.escape(message)) as e:
        safeswap.plan(base, safety, langs["ko"], parameters=parameters)
    assert "\n" not in str(e.value)


def test_other_methods_refuse_the_criterion(models):
    base, safety, langs = models
    with pytest.raises(SafeswapError, match="method linear does not take criterion"):
        safeswap.plan(base, safety, langs["ko"], method="linear", parameters={"criterion": "direction"})


def test_several_languages_get_their_own_cosines(models, tmp_path):
    base, safety, langs = models
    multi = safeswap.merge(base, safety, dict(langs), out=tmp_path / "multi", tau=BAND,
                           parameters={"criterion": "direction"})
    decisions = {}
    for code, language in langs.items():
        units = yaml.safe_load((multi / code / "safeswap-plan.yaml").read_text())["units"]
        single = safeswap.plan(base, safety, language, tau=BAND, parameters={"criterion": "direction"})
        assert units == single.units  # cosines and decisions equal a separate run
        expected = by_hand(base, safety, language, "module")
        for u in units:
            assert u["cos"] == pytest.approx(expected[u["unit"]], abs=1e-6)
        decisions[code] = {u["unit"]: u["decision"] for u in units}
    assert decisions["ko"]["layer.0.attention"] == "safety" and decisions["sw"]["layer.0.attention"] == "language"
    assert decisions["ko"]["layer.0.mlp"] == "language" and decisions["sw"]["layer.0.mlp"] == "safety"


def test_cosines_do_not_depend_on_the_chunk_size(models, analysed, monkeypatch):
    base, safety, langs = models
    reference = {u["unit"]: u["cos"] for u in
                 safeswap.plan(statistics=analysed, parameters={"criterion": "direction"}).units}
    monkeypatch.setattr(specialization, "CHUNK_ELEMENTS", 7)
    small = safeswap.plan(base, safety, langs["ko"], parameters={"criterion": "direction"})
    for u in small.units:
        assert u["cos"] == pytest.approx(reference[u["unit"]], abs=1e-6)


def test_statistics_without_dots_still_plan_by_norm_but_not_by_direction(analysed, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(analysed, old)
    data = json.loads((old / "statistics.json").read_text())
    for t in data["tensors"]:
        del t["dot"], t["cos"]
    (old / "statistics.json").write_text(json.dumps(data))
    assert all(t.dot is None and t.cos is None for t in load_statistics(old).tensors)
    norm = safeswap.plan(statistics=old)
    assert norm.units == safeswap.plan(statistics=analysed).units
    with pytest.raises(SafeswapError, match="hold no dot products"):
        safeswap.plan(statistics=old, parameters={"criterion": "direction"})


def test_analysis_shows_both_criteria(models, analysed, tmp_path):
    """analyze's unit rows carry cos under either criterion, and both figures are drawn beside them."""
    stats = load_statistics(analysed)
    base, safety, langs = models
    expected = by_hand(base, safety, langs["ko"], "module")
    params = {"granularity": "module", "tau": BAND, "alpha": 0.5}
    units = analysis_units(stats, params)
    assert {u["unit"]: u["cos"] for u in units} == pytest.approx(expected, abs=1e-6)
    drawn = unit_figures(units, stats.num_layers, tmp_path, params)
    assert sorted(p.name for p in drawn) == ["decisions.png", "direction.png", "specialization.png"]
    assert all(p.stat().st_size > 0 for p in drawn)


def test_the_norm_pass_without_dots_measures_the_same_norms(models):
    from safeswap.decide.planning import needs_dots
    from safeswap.read.inputs import open_inputs

    base, safety, langs = models
    inputs = open_inputs({"base": base, "safety": safety, "language:ko": langs["ko"], "language:sw": langs["sw"]},
                         None, receiver="language:ko")
    try:
        with_dots = specialization.measure_many(inputs, ["language:ko", "language:sw"])
        without = specialization.measure_many(inputs, ["language:ko", "language:sw"], dots=False)
    finally:
        inputs.close()
    for key in with_dots:
        assert [(t.base_norm, t.delta_safety, t.delta_language) for t in with_dots[key]] == [
            (t.base_norm, t.delta_safety, t.delta_language) for t in without[key]]
        assert all(t.dot is not None for t in with_dots[key]) and all(t.dot is None for t in without[key])
    assert needs_dots("adaptive", {"criterion": "direction"})
    assert not needs_dots("adaptive", {"granularity": "module"}) and not needs_dots("layer-swap", {})
