"""Model fingerprints (cache identity) and the JSONL cache."""

from __future__ import annotations

import json
import shutil

import pytest
from tiny import make_model, perturb

from safeswap.errors import SafeswapError
from safeswap.evaluation.cache import JsonlCache, generation_key, judgement_key
from safeswap.read.fingerprint import fingerprint_model, model_label


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("fp") / "model", family="llama", layers=3, seed=0)


def test_fingerprint_depends_on_content_not_location(tiny_model, tmp_path):
    copy = shutil.copytree(tiny_model, tmp_path / "elsewhere")
    assert fingerprint_model(tiny_model) == fingerprint_model(copy)
    assert fingerprint_model(tiny_model).startswith("sha256:")


def test_one_changed_tensor_changes_the_fingerprint(tiny_model, tmp_path):
    # A layer-swapped model differs from its parent in some tensors only.
    changed = perturb(tiny_model, tmp_path / "changed", {"layers.1.mlp.down_proj": 0.5}, seed=3, noise=0.0)
    assert fingerprint_model(changed) != fingerprint_model(tiny_model)


def test_config_and_chat_template_are_part_of_the_fingerprint(tiny_model, tmp_path):
    base = fingerprint_model(tiny_model)
    edited = shutil.copytree(tiny_model, tmp_path / "config")
    config = json.loads((edited / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (edited / "config.json").write_text(json.dumps(config))
    assert fingerprint_model(edited) != base
    template = shutil.copytree(tiny_model, tmp_path / "template")
    chat_files = [p for p in template.iterdir() if p.name in ("chat_template.jinja", "tokenizer_config.json")]
    assert chat_files
    chat_files[0].write_text(chat_files[0].read_text() + " ")
    assert fingerprint_model(template) != base


def test_hub_ids_and_errors(tmp_path):
    assert fingerprint_model("Qwen/Qwen2.5-7B-Instruct") == "hub:Qwen/Qwen2.5-7B-Instruct@main"
    assert fingerprint_model("Qwen/Qwen2.5-7B-Instruct", revision="abc123") == "hub:Qwen/Qwen2.5-7B-Instruct@abc123"
    with pytest.raises(SafeswapError, match="not found"):
        fingerprint_model("./no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafeswapError, match="no config.json"):
        fingerprint_model(tmp_path / "empty")
    assert model_label("/runs/merged-ko/") == "merged-ko"
    assert model_label("Qwen/Qwen2.5-7B-Instruct") == "Qwen2.5-7B-Instruct"


def test_cache_survives_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "generations.jsonl"
    cache = JsonlCache(path)
    cache.put({"key": "a", "response": "first"})
    cache.put({"key": "b", "response": "second"})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "c", "respo')  # killed mid-write
    reloaded = JsonlCache(path)
    assert reloaded.skipped_lines == 1 and len(reloaded) == 2
    reloaded.put({"key": "c", "response": "third"})
    reloaded.put({"key": "a", "response": "again"})  # the last record of a key wins
    final = JsonlCache(path)
    assert final.get("c")["response"] == "third" and final.get("a")["response"] == "again"
    assert final.skipped_lines == 1


def test_every_key_part_matters():
    parts = dict(fingerprint="sha256:x", language="ko", prompt_id="1", scenario="unintentional",
                 decoding={"backend": "hf", "max_new_tokens": 8}, prompt_sha256="p")
    base = generation_key(**parts)
    for name, other in [("fingerprint", "sha256:y"), ("language", "sw"), ("prompt_id", "2"),
                        ("scenario", "intentional:abc"), ("decoding", {"backend": "hf", "max_new_tokens": 9}),
                        ("prompt_sha256", "q")]:
        assert generation_key(**{**parts, name: other}) != base, name
    assert generation_key(**parts, dataset="benign") != base
    assert judgement_key(base, {"name": "llm", "prompt_sha256": "1"}) != judgement_key(base, {"name": "llm", "prompt_sha256": "2"})
