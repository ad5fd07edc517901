"""The MultiJail copy shipped in the package: pinned by sha256, used when the hub is not, named in results."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import make_model

import safeswap.evaluation.multijail as multijail
from safeswap.errors import SafeswapError
from safeswap.evaluation.multijail import (
    BUNDLED_PATH,
    BUNDLED_SHA256,
    BUNDLED_SOURCE,
    LANGUAGES,
    load_bundled,
    load_multijail,
)
from safeswap.evaluation.safety import evaluate_safety
from safeswap.evaluation.safety_output import result_paths

ROOT = Path(__file__).resolve().parents[1]


def hub_down(revision):
    raise SafeswapError("cannot load DAMO-NLP-SG/MultiJail from the Hugging Face hub: test says no")


def hub_must_not_be_asked(revision):
    raise AssertionError("the hub was asked although a file was given")


def test_shipped_copy_loads_315_prompts_in_ten_languages():
    shipped = load_bundled()
    assert len(shipped.prompts) == 315 and shipped.languages == LANGUAGES
    assert all(p.texts[code] for p in shipped.prompts for code in LANGUAGES)
    assert shipped.source == BUNDLED_SOURCE == "bundled:safeswap/evaluation/data/multijail/MultiJail.csv"
    assert shipped.prompts[0].texts["ko"].startswith("18살짜리 딸")


def test_shipped_copy_matches_the_pinned_sha256_and_carries_its_licence():
    assert hashlib.sha256(BUNDLED_PATH.read_bytes()).hexdigest() == BUNDLED_SHA256 == load_bundled().sha256
    licence = (BUNDLED_PATH.parent / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "Alibaba DAMO Academy" in licence


def test_package_data_globs_cover_the_shipped_files():
    """A non-editable install carries only what [tool.setuptools.package-data] names."""
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["safeswap"]
    package = ROOT / "src" / "safeswap"
    covered = {path for pattern in patterns for path in package.glob(pattern)}
    assert {BUNDLED_PATH, BUNDLED_PATH.parent / "LICENSE"} <= covered


def test_a_modified_shipped_copy_is_refused_in_one_line(tmp_path, monkeypatch):
    tampered = tmp_path / "MultiJail.csv"
    tampered.write_bytes(BUNDLED_PATH.read_bytes().replace(b"daughter", b"son", 1))
    monkeypatch.setattr(multijail, "BUNDLED_PATH", tampered)
    monkeypatch.setattr(multijail, "_load_from_hub", hub_down)
    with pytest.raises(SafeswapError) as caught:
        load_multijail(None)
    message = str(caught.value)
    assert "\n" not in message and "was modified" in message and BUNDLED_SHA256 in message
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() in message


def test_a_missing_shipped_copy_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(multijail, "BUNDLED_PATH", tmp_path / "gone.csv")
    with pytest.raises(SafeswapError, match=r"shipped with safeswap is missing .*--data PATH"):
        load_bundled()


def test_without_the_hub_the_shipped_copy_is_used(monkeypatch):
    monkeypatch.setattr(multijail, "_load_from_hub", hub_down)
    used = load_multijail(None)
    assert used.source == BUNDLED_SOURCE and used.sha256 == BUNDLED_SHA256 and len(used.prompts) == 315


def test_a_hub_revision_is_never_replaced_by_the_shipped_copy(monkeypatch):
    monkeypatch.setattr(multijail, "_load_from_hub", hub_down)
    with pytest.raises(SafeswapError, match=r"test says no; pass --data PATH"):
        load_multijail(None, revision="v1.0")


def test_an_explicit_path_is_used_and_the_hub_not_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(multijail, "_load_from_hub", hub_must_not_be_asked)
    mine = tmp_path / "mine.csv"
    mine.write_text("id,en,ko\n1,How?,어떻게?\n", encoding="utf-8")
    used = load_multijail(mine)
    assert used.source == str(mine) and used.languages == ("en", "ko") and [p.id for p in used.prompts] == ["1"]
    assert used.sha256 == hashlib.sha256(mine.read_bytes()).hexdigest()


def test_offline_mode_falls_back_at_once_through_the_real_hub_path(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty hub cache: datasets refuses at once and the shipped copy is used."""
    pytest.importorskip("datasets")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    code = "from safeswap.evaluation.multijail import load_multijail; print(load_multijail(None).source)"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == BUNDLED_SOURCE
    assert "using the copy shipped with safeswap" in done.stderr  # said once, on stderr
    assert time.monotonic() - started < 30  # an interpreter start and the datasets import; no retries


def test_a_hub_that_never_answers_costs_the_probe_timeout_only(monkeypatch):
    """Not offline, and the endpoint accepts connections but never replies (a silent firewall, a dead proxy)."""
    pytest.importorskip("datasets")
    for name in multijail.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(multijail, "HUB_PROBE_TIMEOUT", 0.5)
        started = time.monotonic()
        used = load_multijail(None)
        elapsed = time.monotonic() - started
    assert used.source == BUNDLED_SOURCE
    assert 0.4 < elapsed < 5, elapsed  # the probe waited its 0.5 s, and datasets' 25 s of retries never ran


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("shipped") / "tiny-qwen2", family="qwen2", layers=2, seed=1)


def test_the_safety_result_names_the_shipped_copy(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(multijail, "_load_from_hub", hub_down)
    out = tmp_path / "runs"
    evaluate_safety(tiny_model, languages="en,ko", limit=2, out=out, max_new_tokens=2, batch_size=2, device="cpu")
    json_path, _ = result_paths(out, "tiny-qwen2", "refusal")
    data = json.loads(json_path.read_text(encoding="utf-8"))["data"]
    assert data["source"] == BUNDLED_SOURCE and data["sha256"] == BUNDLED_SHA256
    assert data["n_prompts_in_source"] == 315 and data["languages_in_source"] == list(LANGUAGES)
