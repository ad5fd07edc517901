"""evaluate_safety end to end with a tiny model: result schema, CSV, resume, judge swap, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import MULTIJAIL_CSV
from test_eval_openai import ScriptedServer
from tiny import make_model
from typer.testing import CliRunner

import safeswap.evaluation.safety as safety
from safeswap.evaluation.cache import GENERATIONS_FILE, cache_folder
from safeswap.evaluation.cli import eval_app
from safeswap.read.fingerprint import fingerprint_model
from safeswap.evaluation.judges.refusal import is_refusal
from safeswap.evaluation.multijail import load_multijail
from safeswap.evaluation.results import SCHEMA, iter_results
from safeswap.evaluation.safety import evaluate_safety
from safeswap.evaluation.safety_output import result_paths

pytestmark = pytest.mark.skipif(not MULTIJAIL_CSV.is_file(), reason="MultiJail.csv not beside the checkout")
BENIGN = Path(__file__).parent / "data" / "eval" / "benign.csv"
FAST = dict(data=MULTIJAIL_CSV, max_new_tokens=4, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("safety") / "tiny-qwen2", family="qwen2", layers=2, seed=1)


def cached_generations(out, model) -> list[dict]:
    path = cache_folder(out, fingerprint_model(model)) / GENERATIONS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_result_file_schema_csv_and_benign(tiny_model, tmp_path):
    out = tmp_path / "runs"
    result = evaluate_safety(tiny_model, languages="en,ko,th", limit=3, out=out, benign=BENIGN, **FAST)
    json_path, csv_path = result_paths(out, "tiny-qwen2", "refusal")
    [(path, written)] = list(iter_results(out))
    assert path == json_path and written == result
    assert result["schema"] == SCHEMA and result["kind"] == "safety" and result["benchmark"] == "multijail"
    assert result["metric"] == "refusal_rate"
    assert result["model"] == {"label": "tiny-qwen2", "path": str(tiny_model.resolve()),
                               "fingerprint": fingerprint_model(tiny_model), "revision": None}
    assert result["judge"]["name"] == "refusal" and result["judge"]["prompt_sha256"] is None
    assert result["decoding"]["max_new_tokens"] == 4 and result["decoding"]["temperature"] == 0.0
    assert len(result["data"]["sha256"]) == 64 and result["data"]["n_prompts_in_source"] == 315
    assert "not a harm judgment" in result["extra"]["note"]
    assert len(result["extra"]["subset"]["prompt_ids"]) == 3

    # Rates agree with the cached answers, recounted here.
    answers = [g for g in cached_generations(out, tiny_model) if g["dataset"] == "multijail"]
    assert len(answers) == 9
    for code in ("en", "ko", "th"):
        entry = result["languages"][code]
        refused = sum(is_refusal(g["response"], code) for g in answers if g["language"] == code)
        assert entry["n"] == 3 and entry["refusal_rate"]["k"] == refused and entry["refusal_rate"]["n"] == 3
    assert result["overall"]["n"] == 9
    tags: dict[str, int] = {}
    rows = {p.id: p for p in load_multijail(MULTIJAIL_CSV).prompts}
    for prompt_id in result["extra"]["subset"]["prompt_ids"]:
        for tag in rows[prompt_id].tags:
            tags[tag] = tags.get(tag, 0) + 3  # three languages
    assert {name: entry["n"] for name, entry in result["categories"].items()} == tags

    benign = result["extra"]["benign"]
    assert benign["languages"]["en"]["n"] == 3 and benign["languages"]["ko"]["n"] == 3
    assert benign["languages"]["th"] == "n/a"  # the benign file has no Thai column
    assert "over_refusal_rate" in benign["languages"]["en"]

    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ko = next(r for r in rows if r["table"] == "language" and r["language"] == "ko")
    assert ko["metric"] == "refusal_rate" and float(ko["value"]) == result["languages"]["ko"]["refusal_rate"]["value"]
    assert {r["table"] for r in rows} == {"language", "overall", "category", "benign"}


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_without_duplicates(tiny_model, tmp_path, monkeypatch):
    real_make_backend = safety.make_backend
    sent: list[int] = []

    def interrupting(model, settings, options):
        backend = real_make_backend(model, settings, options)
        generate = backend.generate

        def generate_then_die(conversations, **kwargs):
            for done, item in enumerate(generate(conversations, **kwargs), start=1):
                yield item
                if done == 5:
                    raise Interrupted  # as if the job were killed mid-run
        backend.generate = generate_then_die
        return backend

    def counting(model, settings, options):
        backend = real_make_backend(model, settings, options)
        generate = backend.generate

        def generate_and_count(conversations, **kwargs):
            sent.append(len(conversations))
            yield from generate(conversations, **kwargs)
        backend.generate = generate_and_count
        return backend

    options = dict(languages="en,sw", limit=4, **FAST)
    out = tmp_path / "runs"
    monkeypatch.setattr(safety, "make_backend", interrupting)
    with pytest.raises(Interrupted):
        evaluate_safety(tiny_model, out=out, **options)
    assert len(cached_generations(out, tiny_model)) == 5
    assert not result_paths(out, "tiny-qwen2", "refusal")[0].exists()  # no half-written result

    monkeypatch.setattr(safety, "make_backend", counting)
    evaluate_safety(tiny_model, out=out, **options)
    assert sent == [3]  # only the 8 - 5 missing answers were generated
    records = cached_generations(out, tiny_model)
    assert len(records) == 8 == len({r["key"] for r in records})

    # The resumed answers are the ones an uninterrupted run gives.
    clean = tmp_path / "clean"
    evaluate_safety(tiny_model, out=clean, **options)
    by_key = {r["key"]: r["response"] for r in cached_generations(clean, tiny_model)}
    assert by_key == {r["key"]: r["response"] for r in records}


def test_new_judge_reuses_generations_without_loading_the_model(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    evaluate_safety(tiny_model, languages="ko", limit=2, out=out, **FAST)
    server = ScriptedServer()
    server.thread.start()
    try:
        def no_model(*args, **kwargs):
            raise AssertionError("the model was loaded although every answer was cached")
        monkeypatch.setattr(safety, "make_backend", no_model)
        result = evaluate_safety(tiny_model, languages="ko", limit=2, out=out, judge="llm",
                                 judge_model="judge", judge_base_url=server.base_url, **FAST)
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    # Random tiny-model text names no label: unparsed after one retry, never "safe".
    assert result["languages"]["ko"]["unparsed_rate"]["k"] == 2
    assert result["languages"]["ko"]["safe_rate"]["k"] == 0
    assert len(server.requests) == 4
    assert result_paths(out, "tiny-qwen2", "llm")[0].is_file()
    assert result_paths(out, "tiny-qwen2", "refusal")[0].is_file()


def test_intentional_scenario_wraps_prompts(tiny_model, tmp_path):
    template = tmp_path / "template.txt"
    template.write_text("Answer the question below.\n{prompt}", encoding="utf-8")
    out = tmp_path / "runs"
    plain = evaluate_safety(tiny_model, languages="en", limit=2, out=out, **FAST)
    wrapped = evaluate_safety(tiny_model, languages="en", limit=2, out=out, scenario="intentional",
                              jailbreak_template=template, label="tiny-intentional", **FAST)
    assert plain["extra"]["scenario"] == {"name": "unintentional", "template_sha256": None}
    assert wrapped["extra"]["scenario"]["name"] == "intentional"
    assert len(wrapped["extra"]["scenario"]["template_sha256"]) == 64
    assert len(cached_generations(out, tiny_model)) == 4  # wrapped prompts are new generations


def test_cli_prints_tables_and_writes_files(tiny_model, tmp_path):
    out = tmp_path / "runs"
    runner = CliRunner()
    args = ["safety", "--model", str(tiny_model), "--data", str(MULTIJAIL_CSV), "--languages", "en,ko",
            "--limit", "2", "--max-new-tokens", "4", "--device", "cpu", "--out", str(out), "--label", "tiny"]
    result = runner.invoke(eval_app, args)
    assert result.exit_code == 0, result.output
    assert "Refusal (95% CI)" in result.output and "overall" in result.output
    assert result_paths(out, "tiny", "refusal")[0].is_file()

    bad = runner.invoke(eval_app, args[:-4] + ["--languages", "ko,xx"])
    assert bad.exit_code == 2
    assert "unknown MultiJail language xx" in bad.output
    assert "Traceback" not in bad.output
