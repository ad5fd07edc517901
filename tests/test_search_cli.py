"""The search command: mounted on a Typer app, bad input in one line, and without Optuna a line naming the extra."""

import sys

import pytest
import typer
from typer.testing import CliRunner

from safeswap.errors import SafeswapError
from safeswap.search.cli import search_command


def app():
    application = typer.Typer()
    application.command("search")(search_command)
    application.command("noop", hidden=True)(lambda: None)  # a group, so "search" is a subcommand
    return application


def invoke(args):
    return CliRunner().invoke(app(), ["search", *args])


def test_help_lists_the_flags():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for flag in ("--config", "--ray-address", "--gpus-per-candidate", "--cpus-per-candidate", "--trials", "--storage"):
        assert flag in result.output


def test_a_bad_config_is_one_line(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("methods: {adaptive: {tau: {low: 1, high: 0.1}}}\n")
    result = invoke(["--base", "b", "--safety", "s", "--language", "l", "--config", str(config), "--out", str(tmp_path)])
    assert isinstance(result.exception, SafeswapError)
    assert str(result.exception) == "search space: methods.adaptive.tau: low 1 is above high 0.1"


def test_without_optuna_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    config = tmp_path / "s.yaml"
    config.write_text("methods: {linear: {weight: 0.5}}\n")
    result = invoke(["--base", "b", "--safety", "s", "--language", "l", "--config", str(config), "--out", str(tmp_path)])
    assert str(result.exception) == "safeswap search needs Optuna: pip install 'safeswap[search]'"


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from safeswap.search.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SafeswapError, match=r"^--ray-address needs Ray: pip install 'safeswap\[ray\]'$"):
        make_executor("local")


def test_an_adapter_beside_a_full_expert_is_refused_in_one_line(tmp_path):
    """Two adapters make candidates adapters, two checkpoints full merges; one of each is refused up front."""
    from safeswap.search.run import prepare
    from safeswap.search.space import parse_space

    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    space = parse_space({"methods": {"linear": {"weight": 0.5}}})
    with pytest.raises(SafeswapError, match="the language expert is a LoRA adapter and the other a full checkpoint"):
        prepare(str(tmp_path / "base"), str(tmp_path / "safety"), str(adapter), space, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--backend", "openai"], "--backend openai: a search over adapters needs the base_url"),
    (["--judge", "nope"], "unknown judge 'nope'"),
])
def test_bad_generation_flags_are_one_line_before_any_work(tmp_path, flags, message):
    config = tmp_path / "s.yaml"
    config.write_text("methods: {linear: {weight: 0.5}}\n")
    out = tmp_path / "out"
    result = invoke(["--base", "b", "--safety", "s", "--language", "l", "--config", str(config), "--out", str(out),
                     *flags])
    assert isinstance(result.exception, SafeswapError) and message in str(result.exception)
    assert not out.exists()


def test_help_lists_the_generation_flags():
    result = invoke(["--help"])
    for flag in ("--backend", "--judge", "--judge-model", "--judge-backend", "--judge-base-url"):
        assert flag in result.output


def test_a_missing_model_is_one_line_and_leaves_no_search_folder(tmp_path):
    """A search folder left by a failed start would make the corrected rerun refuse it as another search."""
    pytest.importorskip("optuna")
    pytest.importorskip("torch")
    from tiny import make_triple

    base, safety, language = (str(p) for p in make_triple(tmp_path / "models", layers=2))
    config = tmp_path / "s.yaml"
    config.write_text("methods: {linear: {weight: 0.5}}\n")
    out = tmp_path / "out"
    result = invoke(["--base", str(tmp_path / "nope"), "--safety", safety, "--language", language,
                     "--config", str(config), "--out", str(out)])
    assert isinstance(result.exception, SafeswapError) and "does not exist" in str(result.exception)
    assert not out.exists()
