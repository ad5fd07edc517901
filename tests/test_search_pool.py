"""The command end to end on tiny models with a 2-process pool: same candidates and scores as the Python API in-process."""

import json

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("optuna")
pytest.importorskip("torch")

from tiny import make_triple  # noqa: E402

from safeswap.search.cli import search_command  # noqa: E402
from safeswap.search.space import load_space  # noqa: E402

SPACE = """
seed: 1
trials: 2
parallel: 2
languages: [ko]
probe: {harmful: 2, benign: 2, max_length: 64}
generation: {top: 0}
final: false
methods:
  adaptive: {alpha: {low: 0.2, high: 0.8}}
  linear: {weight: {low: 0.0, high: 1.0}}
"""


def outcome(out):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))}


def test_cli_with_a_process_pool_matches_the_api_in_process(tmp_path):
    from safeswap.search.run import search

    base, safety, language = (str(p) for p in make_triple(tmp_path / "models"))
    config = tmp_path / "search.yaml"
    config.write_text(SPACE)
    app = typer.Typer()
    app.command("search")(search_command)
    app.command("noop", hidden=True)(lambda: None)
    result = CliRunner().invoke(app, ["search", "--base", base, "--safety", safety, "--language", language,
                                      "--config", str(config), "--out", str(tmp_path / "cli"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    for name in ("candidates.csv", "pareto.png", "search.json"):
        assert (tmp_path / "cli" / name).is_file()
    search(base, safety, language, load_space(config), tmp_path / "api")
    a, b = outcome(tmp_path / "cli"), outcome(tmp_path / "api")
    assert a.keys() == b.keys() and len(a) >= 3
    for name in a:
        assert a[name]["candidate"] == b[name]["candidate"]
        assert a[name].get("scores") == pytest.approx(b[name].get("scores"), rel=1e-5, nan_ok=True)
