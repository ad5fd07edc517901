"""The README.md model card of a merged folder."""

import pytest
import yaml

import safeswap
import tiny
from safeswap.decide.methods import load_plan
from safeswap.decide.plan_file import MergePlan
from safeswap.write.model_card import decisions_markdown, front_matter, write_model_card


def read_card(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def hub_plan(**overrides):
    units = [
        {"unit": f"layer.{i}.{m}", "layer": i, "module": m, "decision": d}
        for i, pair in enumerate([("language", "blend"), ("language", "blend"), ("blend", "safety"), ("blend", "safety"),
                                  ("language", "language")])
        for m, d in zip(("attention", "mlp"), pair)
    ]
    units[4]["alpha"] = 0.8  # layer.2.attention: a blend with its own weight
    units[5]["alpha"] = 0.8  # layer.2.mlp is taken from the safety expert: a weight there changes nothing
    fields = dict(
        method="adaptive",
        parameters={"granularity": "module", "tau": 0.001, "alpha": 0.5},
        models={
            "base": {"path": "org/base-7b", "fingerprint": "sha256:" + "a" * 64},
            "safety": {"path": "org/safety-7b", "fingerprint": "sha256:" + "b" * 64},
            "language": {"path": "org/swahili-7b", "fingerprint": "sha256:" + "c" * 64, "code": "sw"},
        },
        architecture="LlamaForCausalLM",
        num_layers=5,
        units=units,
    )
    fields.update(overrides)
    return MergePlan(**fields)


def test_front_matter_fields(tmp_path):
    card = write_model_card(hub_plan(), tmp_path, "safeswap merge --base org/base-7b --out m")
    meta, body = read_card(card)
    assert meta["base_model"] == ["org/safety-7b", "org/swahili-7b", "org/base-7b"]
    assert meta["base_model_relation"] == "merge"
    assert meta["library_name"] == "transformers"
    assert meta["tags"] == ["merge", "safeswap"]
    assert meta["language"] == ["en", "sw"]
    assert "```bash\nsafeswap merge --base org/base-7b --out m\n```" in body
    assert "safeswap merge --plan safeswap-plan.yaml" in body
    assert "[org/safety-7b](https://huggingface.co/org/safety-7b)" in body


def test_languages_argument_and_local_paths(tmp_path):
    plan = hub_plan()
    plan.models["safety"]["path"] = str(tmp_path)  # a local folder is not a hub id
    meta = front_matter(plan, languages=["ko", "sw"])
    assert meta["language"] == ["en", "ko", "sw"]
    assert meta["base_model"] == ["org/swahili-7b", "org/base-7b"]
    for role in ("base", "safety", "language"):
        plan.models[role]["path"] = str(tmp_path)
    assert "base_model" not in front_matter(plan)


def test_decision_table_groups_identical_layers():
    table = decisions_markdown(hub_plan())
    lines = table.splitlines()
    assert lines[0] == "| layers | attention | mlp |"
    assert "| 0–1 | L | B 0.5 |" in lines
    assert "| 2 | B 0.8 | S |" in lines  # a unit's own alpha wins over the plan's
    assert "| 3 | B 0.5 | S |" in lines
    assert "| 4 | L | L |" in lines


def test_card_of_a_real_merge(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    base, safety, language = tiny.make_triple(root, "llama", layers=4)
    out = safeswap.merge(base, safety, language, out=root / "merged", method="layer-swap", parameters={"bottom": "1/1"})
    plan = load_plan(out / "safeswap-plan.yaml")
    card = write_model_card(plan, out, None, languages=["ko"])
    meta, body = read_card(card)
    assert "base_model" not in meta and meta["language"] == ["en", "ko"]
    assert "## Method: `layer-swap`" in body
    assert "| bottom | 1 |" in body and "| top | 1 |" in body
    assert "4 units: 2 from safety, 2 from language, 0 blended; parameters:" in body
    assert "| 1–2 | S |" in body
    assert "![Where each unit of the merged model comes from](decisions.png)" in body
    assert (out / "decisions.png").is_file()
    assert "The command that made this merge" not in body  # none given: only the replay command
    assert not list(out.glob(".tmp-card-*"))


@pytest.mark.parametrize("method", ["ties", "linear"])
def test_card_of_a_formula_method_has_no_table(tmp_path, method):
    plan = hub_plan(method=method, parameters={"weights": {"safety": 1.0, "language": 1.0}}, units=[])
    _, body = read_card(write_model_card(plan, tmp_path, None))
    assert f"## Method: `{method}`" in body
    assert "| layers |" not in body
    assert "| weights | safety 1, language 1 |" in body


def test_card_title_is_the_destination_not_the_temporary_folder(tmp_path):
    """The card is written inside atomic_output's hidden temporary folder; its title names the real output."""
    import safeswap
    import tiny

    triple = tiny.make_triple(tmp_path / "in", "llama", layers=3)
    out = safeswap.merge(*triple, out=tmp_path / "merged-ko")
    title = (out / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1].lstrip().splitlines()[0]
    assert title == "# language + safety (adaptive merge)" and ".safeswap-tmp-" not in title
