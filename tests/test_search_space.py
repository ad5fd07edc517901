"""The search space file: a good one is read into typed specs, every bad one is refused in one line naming the field."""

import pytest

from safeswap.errors import SafeswapError
from safeswap.search.candidates import Candidate, references
from safeswap.search.space import load_space, parse_space

GOOD = """
seed: 3
trials: 12
parallel: 2
sampler: nsga2
languages: [ko, en]
constraints: {max_benign_refusal_over_language: 0.05, min_kept_language_gain: 0.7}
probe: {harmful: 10, benign: 8}
split: {search_fraction: 0.4, seed: 1}
methods:
  adaptive:
    granularity: [layer, module, projection]
    tau: {low: 0.0001, high: 0.01, log: true}
    alpha: {low: 0.0, high: 1.0}
    outside_layers: [blend, language]
    criterion: [norm, direction]
  layer-swap: {bottom: {low: 0, high: 4, step: 2}, top: 2, transition_bottom: [0, 1]}
  linear: {weight: {low: 0.2, high: 0.8}}
  task-arithmetic: {safety_weight: {low: 0.5, high: 1.5}, lambda: 0.8}
  ties: {density: {low: 0.1, high: 0.5}}
  dare-ties: {density: 0.3}
  slerp: {t: {low: 0, high: 1}}
"""


def test_a_good_space_is_read_into_typed_specs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    assert (space.seed, space.trials, space.parallel, space.sampler) == (3, 12, 2, "nsga2")
    assert space.languages == ("ko", "en") and space.search_fraction == 0.4 and space.split_seed == 1
    assert (space.probe_harmful, space.probe_benign) == (10, 8)
    assert [m.method for m in space.methods] == ["adaptive", "layer-swap", "linear", "task-arithmetic", "ties",
                                                  "dare-ties", "slerp"]
    adaptive = {p.name: p for p in space.methods[0].params}
    assert adaptive["tau"].kind == "float" and adaptive["tau"].log and adaptive["tau"].low == 0.0001
    assert adaptive["granularity"].kind == "choice" and adaptive["granularity"].values == ("layer", "module", "projection")
    swap = {p.name: p for p in space.methods[1].params}
    assert swap["bottom"].kind == "int" and swap["bottom"].step == 2 and swap["top"].kind == "fixed"
    assert swap["transition_bottom"].values == (0, 1)


def test_references_are_the_paper_default_and_each_baseline():
    space = parse_space({"methods": {"adaptive": {"tau": {"low": 0.01, "high": 0.1}}, "linear": {"weight": 0.3},
                                     "layer-swap": {"bottom": {"low": 0, "high": 2}, "top": 1}}})
    refs = references(space, num_layers=4)
    assert refs[0] == Candidate("adaptive", {"granularity": "module", "tau": 0.001, "alpha": 0.5}, label="paper-default")
    assert [(r.method, r.label) for r in refs[1:]] == [("linear", "linear"), ("layer-swap", "layer-swap")]
    assert refs[1].values == {} and refs[2].values == {"bottom": 1, "top": 1}


def test_candidate_parameters_become_method_parameters():
    from safeswap.decide.planning import method_parameters

    c = Candidate("linear", {"weight": 0.25})
    assert method_parameters("linear", c.parameters())["weights"] == {"safety": 0.25, "language": 0.75}
    t = Candidate("task-arithmetic", {"safety_weight": 0.5, "lambda": 0.9})
    assert method_parameters("task-arithmetic", t.parameters())["weights"] == {"safety": 0.5, "language": 1.0}
    assert Candidate("slerp", {"t": 0.3}).key == Candidate("slerp", {"t": 0.3}).key != Candidate("slerp", {"t": 0.4}).key


BAD = [
    ("methods: {}", "methods: give at least one method"),
    ("methods: {foo: {}}", "methods: unknown method 'foo'"),
    ("methods: {adaptive: {tau: {low: 0.1, high: 0.01}}}", "methods.adaptive.tau: low 0.1 is above high 0.01"),
    ("methods: {adaptive: {alpha: {low: 0, high: 2}}}", "methods.adaptive.alpha.high: 2 is outside [0, 1]"),
    ("methods: {adaptive: {granularity: [layer, block]}}", "methods.adaptive.granularity: unknown value 'block'"),
    ("methods: {adaptive: {density: 0.2}}", "methods.adaptive: unknown parameter 'density'"),
    ("methods: {adaptive: {tau: {low: 0, high: 0.1, log: true}}}", "methods.adaptive.tau.low: a log range needs low > 0"),
    ("methods: {adaptive: {tau: {low: 0.1}}}", "methods.adaptive.tau: a range needs both low and high"),
    ("methods: {adaptive: {tau: {lo: 0.1, high: 1}}}", "methods.adaptive.tau: unknown key 'lo'"),
    ("methods: {adaptive: {tau: fast}}", "methods.adaptive.tau: must be a number"),
    ("methods: {layer-swap: {bottom: 1.5, top: 2}}", "methods.layer-swap.bottom: must be a whole number"),
    ("methods: {layer-swap: {bottom: 2}}", "methods.layer-swap: layer-swap needs bottom and top"),
    ("methods: {linear: {weight: 0.5}}\nbudget: 3", "top level: unknown key 'budget'"),
    ("methods: {linear: {weight: 0.5}}\ntrials: 0", "trials: must be at least 1"),
    ("methods: {linear: {weight: 0.5}}\nsampler: grid", "sampler: unknown sampler 'grid'"),
    ("methods: {linear: {weight: 0.5}}\nconstraints: {max_benign: 0.1}", "constraints: unknown key 'max_benign'"),
    ("methods: {linear: {weight: 0.5}}\nsplit: {search_fraction: 1}", "split.search_fraction: must lie strictly"),
    ("methods: {slerp: {t: [0.2, 1.2]}}", "methods.slerp.t[1]: 1.2 is outside [0, 1]"),
    ("- just a list", "top level: must be a mapping"),
    ("methods: {linear: [", "not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_space_is_refused_in_one_line_naming_the_field(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SafeswapError) as e:
        load_space(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(SafeswapError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml")


def test_threshold_is_suggested_only_with_the_direction_criterion():
    from safeswap.search.candidates import suggest

    class Fixed:  # a trial that takes the first choice and the low end
        def __init__(self, criterion):
            self.criterion = criterion

        def suggest_categorical(self, name, choices):
            return self.criterion if name.endswith("criterion") else choices[0]

        def suggest_float(self, name, low, high, log=False):
            return low

    space = parse_space({"methods": {"adaptive": {"criterion": ["norm", "direction"],
                                                  "threshold": {"low": -0.5, "high": 0.5}}}})
    assert "threshold" not in suggest(Fixed("norm"), space).values
    assert suggest(Fixed("direction"), space).values == {"criterion": "direction", "threshold": -0.5}


def test_both_samplers_are_seeded():
    optuna = pytest.importorskip("optuna")
    from safeswap.search.study import make_sampler

    for name, cls in (("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler)):
        space = parse_space({"sampler": name, "methods": {"slerp": {"t": {"low": 0, "high": 1}}}})
        draws = []
        for _ in range(2):
            study = optuna.create_study(directions=["maximize", "minimize", "maximize"], sampler=make_sampler(space, 4))
            draws.append([study.ask().suggest_float("t", 0, 1) for _ in range(3)])
        assert isinstance(make_sampler(space, 4), cls) and draws[0] == draws[1]
