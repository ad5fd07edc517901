"""General evaluation end to end: a tiny model, the local task copies, lm-eval's own evaluator."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from safeswap.errors import SafeswapError
from safeswap.evaluation.general import GeneralConfig, evaluate_general
from safeswap.evaluation.results import NOT_AVAILABLE, iter_results
from tiny import make_model

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = "tests/data/lm_eval_tasks"  # its data_files paths are relative to the repository root


def _config(**overrides) -> GeneralConfig:
    settings = dict(tasks_dir=TASKS_DIR, builtin_tasks=False, batch_size=4, max_gen_toks=8)
    settings.update(overrides)
    return GeneralConfig(**settings)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _samples(run: Path, label: str, benchmark: str) -> list[dict]:
    with gzip.open(run / "lm_eval" / f"{label}__{benchmark}.samples.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models") / "tiny-llama", family="llama", seed=0)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        paths = evaluate_general(str(tiny_model), ["ko", "sw"], out, label="tiny", config=_config())
    return out, paths


def test_one_result_per_benchmark_in_the_shared_schema(run, tiny_model):
    out, paths = run
    assert [p.relative_to(out).as_posix() for p in paths] == [
        "tiny__belebele.result.json", "tiny__mmmlu.result.json", "tiny__mgsm.result.json",
    ]
    results = {data["benchmark"]: data for _, data in iter_results(out)}
    assert set(results) == {"belebele", "mmmlu", "mgsm"}
    for data in results.values():
        assert data["kind"] == "general" and data["schema"] == "safeswap.result/1"
        assert data["model"]["label"] == "tiny"
        assert data["model"]["path"] == str(tiny_model.resolve())
        assert data["model"]["fingerprint"].startswith("sha256:")
        assert data["decoding"]["num_fewshot"] == 0 and data["decoding"]["backend"] == "hf"
    assert results["belebele"]["metric"] == "acc" and results["mgsm"]["metric"] == "exact_match"
    assert results["mgsm"]["languages"]["ko"] == NOT_AVAILABLE
    assert results["mgsm"]["extra"]["tasks"] == {"ko": NOT_AVAILABLE, "sw": "mgsm_native_cot_sw"}
    assert results["mgsm"]["decoding"]["max_new_tokens"] == 8


def test_scores_and_counts_match_lm_eval_per_document_log(run):
    out, _ = run
    results = {data["benchmark"]: data for _, data in iter_results(out)}
    data_dir = REPO / TASKS_DIR

    belebele = _samples(out, "tiny", "belebele")
    for lang, code in (("ko", "kor_Hang"), ("sw", "swh_Latn")):
        entry = results["belebele"]["languages"][lang]
        docs = [s for s in belebele if s["task"] == f"belebele_{code}"]
        assert entry["task"] == f"belebele_{code}"
        assert entry["n"] == len(docs) == len(_jsonl(data_dir / "belebele" / "data" / f"{code}.jsonl"))
        assert entry["acc"] == pytest.approx(sum(s["acc"] for s in docs) / len(docs))
        assert entry["acc_norm"] == pytest.approx(sum(s["acc_norm"] for s in docs) / len(docs))

    # MMMLU per language is lm-eval's locale group: every subject's documents, weighted by size.
    mmmlu = _samples(out, "tiny", "mmmlu")
    for lang, locale in (("ko", "ko_kr"), ("sw", "sw_ke")):
        entry = results["mmmlu"]["languages"][lang]
        docs = [s for s in mmmlu if s["task"].startswith(f"mmmlu_{locale}_")]
        assert entry["task"] == f"mmmlu_{locale}"
        assert entry["n"] == len(docs) == len(_jsonl(data_dir / "mmmlu" / "data" / f"{locale.upper()}.jsonl"))
        assert entry["acc"] == pytest.approx(sum(s["acc"] for s in docs) / len(docs))

    # MGSM's score is the flexible-extract filter's, not strict-match's.
    mgsm = [s for s in _samples(out, "tiny", "mgsm") if s["filter"] == "flexible-extract"]
    entry = results["mgsm"]["languages"]["sw"]
    assert entry["filter"] == "flexible-extract" and entry["n"] == len(mgsm) == 4
    assert entry["exact_match"] == pytest.approx(sum(s["exact_match"] for s in mgsm) / len(mgsm))
    assert all(s["target"] == str(doc["answer_number"]) for s, doc in zip(
        sorted(mgsm, key=lambda s: s["doc_id"]), _jsonl(data_dir / "mgsm" / "data" / "sw.jsonl")))


def test_lm_eval_output_is_kept_beside_the_result(run):
    out, _ = run
    result = json.loads((out / "tiny__mmmlu.result.json").read_text(encoding="utf-8"))
    files = result["extra"]["lm_eval_output"]
    raw = json.loads((out / files["results"]).read_text(encoding="utf-8"))
    assert raw["lm_eval_version"] == "0.4.13"
    assert raw["results"]["mmmlu_ko_kr"]["acc,none"] == result["languages"]["ko"]["acc"]
    assert raw["group_subtasks"]["mmmlu_ko_kr"] == ["mmmlu_ko_kr_elementary_mathematics", "mmmlu_ko_kr_world_religions"]
    assert (out / files["samples"]).is_file()
    assert len(result["data"]["sha256"]) == 64


def test_same_inputs_give_the_same_result_files(run, tiny_model, tmp_path, monkeypatch):
    out, _ = run
    monkeypatch.chdir(REPO)
    again = evaluate_general(str(tiny_model), ["ko", "sw"], tmp_path, benchmarks=["mmmlu", "mgsm"], label="tiny", config=_config())
    for path in again:
        assert path.read_text(encoding="utf-8") == (out / path.name).read_text(encoding="utf-8")


def test_stand_in_is_run_and_marked_and_a_gap_is_na(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    [with_stand_in] = evaluate_general(str(tiny_model), ["te"], tmp_path / "a", benchmarks=["mmmlu"], config=_config(stand_ins=True))
    entry = json.loads(with_stand_in.read_text(encoding="utf-8"))["languages"]["te"]
    assert entry["task"] == "global_mmlu_full_te" and entry["stand_in"] is True and entry["n"] == 3
    assert entry["acc_norm"] is None  # Global-MMLU reports acc only

    [gap] = evaluate_general(str(tiny_model), ["te"], tmp_path / "b", benchmarks=["mmmlu"], config=_config())
    result = json.loads(gap.read_text(encoding="utf-8"))
    assert result["languages"] == {"te": NOT_AVAILABLE}
    assert result["extra"]["lm_eval_output"] == {}  # nothing to run, nothing run
    assert not (tmp_path / "b" / "lm_eval").exists()


def test_user_errors_are_one_line_and_write_nothing(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SafeswapError, match="model folder not found: no/such/model"):
        evaluate_general("no/such/model", ["ko"], tmp_path, config=_config())
    with pytest.raises(SafeswapError, match=r"unsupported language\(s\) klingon"):
        evaluate_general(str(tiny_model), ["klingon"], tmp_path, config=_config())
    with pytest.raises(SafeswapError, match="no task named belebele_ben_Beng, mmmlu_bn_bd in tests/data/lm_eval_tasks"):
        evaluate_general(str(tiny_model), ["bn"], tmp_path, benchmarks=["belebele", "mmmlu"], config=_config())
    with pytest.raises(SafeswapError, match="tasks folder nowhere does not exist"):
        evaluate_general(str(tiny_model), ["ko"], tmp_path, config=_config(tasks_dir="nowhere"))
    with pytest.raises(SafeswapError, match="unknown backend 'tgi'"):
        evaluate_general(str(tiny_model), ["ko"], tmp_path, benchmarks=["belebele"], config=_config(backend="tgi"))
    assert list(tmp_path.iterdir()) == []


def test_unreadable_task_data_is_a_one_line_error(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the local tasks' data paths are relative to the repository root
    config = _config(tasks_dir=str(REPO / TASKS_DIR))
    with pytest.raises(SafeswapError, match="lm-eval could not load the belebele data: .*kor_Hang.jsonl"):
        evaluate_general(str(tiny_model), ["ko"], tmp_path / "out", benchmarks=["belebele"], config=config)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.result.json"))


def test_general_command(tiny_model, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from safeswap.evaluation.general_cli import general_command

    monkeypatch.chdir(REPO)
    app = typer.Typer()
    app.command()(general_command)
    args = [
        "--model", str(tiny_model), "--languages", "sw", "--benchmarks", "belebele,mgsm", "--out", str(tmp_path),
        "--label", "cli-tiny", "--tasks-dir", TASKS_DIR, "--no-builtin-tasks", "--batch-size", "2",
        "--max-gen-toks", "4", "--limit", "2", "--mgsm-variant", "direct", "--no-log-samples",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mgsm = json.loads((tmp_path / "cli-tiny__mgsm.result.json").read_text(encoding="utf-8"))
    assert mgsm["languages"]["sw"]["task"] == "mgsm_direct_sw" and mgsm["languages"]["sw"]["n"] == 2
    assert mgsm["data"]["limit"] == 2 and mgsm["decoding"]["max_new_tokens"] == 4
    assert sorted(p.name for p in (tmp_path / "lm_eval").iterdir()) == [
        "cli-tiny__belebele.results.json", "cli-tiny__mgsm.results.json",
    ]
    bad = CliRunner().invoke(app, ["--model", str(tiny_model), "--model-args", "tensor_parallel_size", "--out", str(tmp_path)])
    assert isinstance(bad.exception, SafeswapError) and "key=value" in str(bad.exception)


def test_report_over_general_results_alone(run, tmp_path):
    from safeswap.report import build_report, collect
    from safeswap.report.tables import main_table

    out, _ = run
    data = collect(out)
    assert (data.safety_judge, data.safety_metric) == (None, None)
    table = main_table(data)
    assert [c.name for c in table.columns] == ["MMMLU", "Belebele", "MGSM"] * 2
    [(model, cells)] = table.rows
    result = json.loads((out / "tiny__belebele.result.json").read_text(encoding="utf-8"))
    assert model.label == "tiny" and cells[1].text == f"{100 * result['languages']['ko']['acc']:.1f}"
    assert cells[2].text == NOT_AVAILABLE  # MGSM has no Korean
    report = build_report(out, tmp_path / "report")
    assert sorted(p.name for p in (report / "figures").iterdir()) == []  # no safety results: nothing to plot
    assert "mmmlu_ko_kr" in (report / "report.md").read_text(encoding="utf-8")
