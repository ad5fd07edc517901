"""A search folder is an output like any other: checked before it is made, one search at a time, resumed only as it began.

Each refusal: exit 2, one line, no traceback, the inputs unchanged (hashed), nothing left at a
new output path, an existing folder left as it was. Two runs meeting on one folder: two
searches, a search and a merge, a resume after a SIGKILL in the middle of the trials.
"""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("torch")

from cli_helpers import merge_args, run_cli  # noqa: E402
from tiny import make_triple  # noqa: E402

SPACE = {
    "seed": 0, "trials": 2, "parallel": 1, "languages": ["ko"],
    "probe": {"harmful": 1, "benign": 1, "max_length": 32},
    "constraints": {"max_benign_refusal_over_language": 0.05, "min_kept_language_gain": None},
    "generation": {"top": 0}, "final": False,
    "methods": {"linear": {"weight": {"low": 0.0, "high": 1.0}}},
}


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tuple(str(p) for p in make_triple(tmp_path_factory.mktemp("folder"), layers=2))


def tree(folder) -> dict[str, str]:
    """Every file under folder (relative path -> sha256): what must not change."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_config(path, **changes):
    path.write_text(json.dumps({**SPACE, **changes}))  # JSON is YAML
    return path


def search_args(triple, config, out, *extra):
    return ["search", "--base", triple[0], "--safety", triple[1], "--language", triple[2], "--config", config,
            "--out", out, *extra]


def refused(monkeypatch, capsys, triple, expected, *args):
    """Run the CLI; exit 2, one line naming `expected`, no traceback, the inputs unchanged."""
    before = {m: tree(m) for m in triple}
    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected in err, err
    assert {m: tree(m) for m in triple} == before
    return err


def run_search(triple, out, **space):
    from safeswap.search.run import search
    from safeswap.search.space import parse_space

    return search(*triple, parse_space({**SPACE, **space}), out)


# --- checks before the folder is made ---------------------------------------------------------------

def test_an_unanswering_ray_address_fails_within_its_timeout_and_leaves_nothing(triple, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    start = time.monotonic()
    refused(monkeypatch, capsys, triple, "Ray at 127.0.0.1:1 did not answer within 1 s",
            *search_args(triple, write_config(tmp_path / "s.yaml"), out, "--ray-address", "127.0.0.1:1",
                         "--ray-timeout", "1"))
    assert time.monotonic() - start < 20
    assert not out.exists()


def test_a_port_that_is_not_ray_is_refused_in_bounded_time():
    pytest.importorskip("ray")
    from safeswap.errors import SafeswapError
    from safeswap.search.executors import check_ray_address

    with socket.socket() as server:  # accepts connections, never speaks Ray
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(SafeswapError, match=f"^{address} accepts connections but did not answer as a Ray"):
            check_ray_address(address, timeout=1)
        assert time.monotonic() - start < 15


def test_a_running_ray_cluster_passes_the_check():
    ray = pytest.importorskip("ray")
    from safeswap.search.executors import check_ray_address

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        start = time.monotonic()
        check_ray_address(ray.get_runtime_context().gcs_address, timeout=20)
        assert time.monotonic() - start < 20
    finally:
        if started:
            ray.shutdown()


def test_a_bad_ray_address_form_is_one_line():
    pytest.importorskip("ray")
    from safeswap.errors import SafeswapError
    from safeswap.search.executors import check_ray_address

    with pytest.raises(SafeswapError, match="--ray-address headnode: give host:port, ray://host:port, auto or local"):
        check_ray_address("headnode", timeout=1)


def test_ray_missing_leaves_no_search_folder(triple, tmp_path, monkeypatch, capsys):
    """The issue's case: --ray-address without Ray installed left inputs.json, splits.json and statistics/."""
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    refused(monkeypatch, capsys, triple, "--ray-address needs Ray",
            *search_args(triple, write_config(tmp_path / "s.yaml"), out, "--ray-address", "127.0.0.1:6379"))
    assert not out.exists()


def test_scipy_missing_is_one_line_before_the_folder(triple, tmp_path, monkeypatch, capsys):
    """The generation stage's rank correlation needs scipy: missing, the search used to die after the probe stage."""
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    out = tmp_path / "out"
    refused(monkeypatch, capsys, triple, "the search's generation stage needs scipy",
            *search_args(triple, write_config(tmp_path / "s.yaml", generation={"top": 1}), out))
    assert not out.exists()


@pytest.mark.parametrize("where, relation", [("base", "lies inside"), ("language", "is")])
def test_out_inside_or_at_an_input_is_refused(triple, tmp_path, monkeypatch, capsys, where, relation):
    folder = Path(triple[0] if where == "base" else triple[2])
    out = folder / "search" if where == "base" else folder
    refused(monkeypatch, capsys, triple, f"search folder {out.resolve()} {relation} the {where} model's folder",
            *search_args(triple, write_config(tmp_path / "s.yaml"), out))
    assert not (Path(triple[0]) / "search").exists()


def test_a_folder_of_something_else_is_not_taken_for_a_search(triple, tmp_path, monkeypatch, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(monkeypatch, capsys, triple, "exists and is not a safeswap search folder",
            *search_args(triple, write_config(tmp_path / "s.yaml"), out))
    assert tree(out) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_a_split_without_prompts_is_refused_before_the_folder(triple, tmp_path, monkeypatch, capsys):
    """One benign prompt: the search or the held-out half (the final evaluation's) has none."""
    benign = tmp_path / "benign.csv"
    benign.write_text("id,en,ko\nb1,How do I bake bread?,빵은 어떻게 굽나요?\n", encoding="utf-8")
    out = tmp_path / "out"
    refused(monkeypatch, capsys, triple, "split holds no harmful or no benign prompt",
            *search_args(triple, write_config(tmp_path / "s.yaml", final={"harmful": 1, "benign": 1}), out,
                         "--benign", benign))
    assert not out.exists()


# --- the tokenizer rule ---------------------------------------------------------------------------

def strip_tokenizer(model, dst):
    """An expert as PEFT users save one (merge_and_unload().save_pretrained): weights and configs only."""
    shutil.copytree(model, dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (dst / name).unlink(missing_ok=True)
    return str(dst)


def test_experts_without_tokenizer_files_search_with_the_base_tokenizer(triple, tmp_path):
    safety = strip_tokenizer(triple[1], tmp_path / "safety")
    language = strip_tokenizer(triple[2], tmp_path / "language")
    out = tmp_path / "s"
    summary = run_search((triple[0], safety, language), out, trials=1, keep_weights=True)
    assert summary["trials"] == 1 and summary["models"]["language"]["harmful"] >= 0
    written = next((out / "work").iterdir())  # a candidate as the merge writes it: the base's tokenizer
    assert (written / "tokenizer.json").read_bytes() == (Path(triple[0]) / "tokenizer.json").read_bytes()


def test_no_tokenizer_anywhere_is_one_line_and_no_folder(triple, tmp_path, monkeypatch, capsys):
    base = strip_tokenizer(triple[0], tmp_path / "base")
    out = tmp_path / "out"
    refused(monkeypatch, capsys, triple, f"base model {base} has no tokenizer",
            "search", "--base", base, "--safety", triple[1], "--language", triple[2],
            "--config", write_config(tmp_path / "s.yaml"), "--out", out)
    assert not out.exists()


def test_the_rule_takes_the_base_folder_whole_and_refuses_with_neither(tmp_path, triple):
    from safeswap.errors import SafeswapError
    from safeswap.read.tokenizer_source import tokenizer_source

    bare = strip_tokenizer(triple[2], tmp_path / "bare")
    assert tokenizer_source(triple[2], triple[0]) == triple[2]
    assert tokenizer_source(bare, triple[0]) == triple[0]
    with pytest.raises(SafeswapError, match=f"^model {bare} has no tokenizer .* give the folder .* --tokenizer$"):
        tokenizer_source(bare)
    with pytest.raises(SafeswapError, match="and neither has the base model"):
        tokenizer_source(bare, strip_tokenizer(triple[0], tmp_path / "bare-base"))


def test_eval_of_a_folder_without_tokenizer_is_one_line(triple, tmp_path, monkeypatch, capsys):
    bare = strip_tokenizer(triple[2], tmp_path / "bare")
    out = tmp_path / "runs"
    code, err = run_cli(monkeypatch, capsys, "eval", "safety", "--model", bare, "--out", out, "--limit", "1",
                        "--languages", "en")
    assert code == 2 and len(err.splitlines()) == 1 and f"model {bare} has no tokenizer" in err, err
    assert not out.exists()


def test_eval_takes_the_tokenizer_folder_given(triple, tmp_path):
    from safeswap.evaluation.backends import BackendOptions, DecodingSettings, make_backend

    bare = strip_tokenizer(triple[2], tmp_path / "bare")
    backend = make_backend(bare, DecodingSettings(max_new_tokens=2),
                           BackendOptions(device="cpu", dtype="float32", tokenizer=triple[0]))
    answers = dict(backend.generate([[{"role": "user", "content": "hello"}]]))
    assert answers[0].n_tokens is not None
    assert backend.decoding()["tokenizer"] == triple[0]


def test_merge_of_experts_without_tokenizer_writes_the_base_tokenizer(triple, tmp_path, monkeypatch, capsys):
    safety = strip_tokenizer(triple[1], tmp_path / "safety")
    language = strip_tokenizer(triple[2], tmp_path / "language")
    code, err = run_cli(monkeypatch, capsys, *merge_args(triple[0], safety, language), "--out", tmp_path / "m")
    assert code is None or code == 0, err
    assert (tmp_path / "m" / "tokenizer.json").read_bytes() == (Path(triple[0]) / "tokenizer.json").read_bytes()


# --- resume ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(triple, tmp_path_factory):
    out = tmp_path_factory.mktemp("searched") / "s"
    run_search(triple, out)
    return out


@pytest.mark.parametrize("changes, named", [
    ({"methods": {"linear": {"weight": {"low": 0.0, "high": 0.5}}}}, "methods.linear.weight.high (1.0, now 0.5)"),
    ({"methods": {"slerp": {"t": {"low": 0.0, "high": 1.0}}}}, "methods.slerp"),
    ({"constraints": {"max_benign_refusal_over_language": 0.2, "min_kept_language_gain": None}},
     "constraints.max_benign_refusal_over_language (0.05, now 0.2)"),
    ({"parallel": 2}, "parallel (1, now 2)"),
    ({"probe": {"harmful": 2, "benign": 1, "max_length": 32}}, "probe"),
])
def test_a_resume_with_another_space_is_refused_naming_the_change(triple, searched, tmp_path, monkeypatch, capsys,
                                                                     changes, named):
    before = tree(searched)
    refused(monkeypatch, capsys, triple, f"holds a search made with another {named}",
            *search_args(triple, write_config(tmp_path / "s.yaml", **changes), searched))
    assert tree(searched) == before


def test_a_resume_of_changed_inputs_is_refused_naming_the_file(triple, searched, tmp_path, monkeypatch, capsys):
    language = Path(shutil.copytree(triple[2], tmp_path / "language"))
    copy = tmp_path / "s"
    shutil.copytree(searched, copy)
    record = json.loads((copy / "inputs.json").read_text())
    record["language"] = str(language)
    (copy / "inputs.json").write_text(json.dumps(record))
    shard = language / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one weight's last byte: same size, other content
    shard.write_bytes(bytes(data))
    before = tree(copy)
    refused(monkeypatch, capsys, triple, "the language model's model.safetensors has changed since it began",
            "search", "--base", triple[0], "--safety", triple[1], "--language", language,
            "--config", write_config(tmp_path / "s.yaml"), "--out", copy)
    assert tree(copy) == before


def test_a_resume_accepts_a_larger_budget(triple, searched, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(searched, copy)
    assert run_search(triple, copy, trials=3)["trials"] == 3


# --- two runs on one folder -----------------------------------------------------------------------

def test_a_second_search_names_the_process_that_holds_the_folder(triple, searched, tmp_path, monkeypatch, capsys):
    import os

    from safeswap.search.lock import search_lock

    before = tree(searched)
    with search_lock(searched):
        err = refused(monkeypatch, capsys, triple, "is in use by another search",
                      *search_args(triple, write_config(tmp_path / "s.yaml"), searched))
    assert f"pid {os.getpid()} on {socket.gethostname()}, started 20" in err
    assert {k: v for k, v in tree(searched).items() if k != "search.lock"} == \
        {k: v for k, v in before.items() if k != "search.lock"}


@pytest.mark.parametrize("force", [False, True])
def test_a_merge_into_a_search_folder_is_refused(triple, searched, monkeypatch, capsys, force):
    before = tree(searched)
    refused(monkeypatch, capsys, triple, "is a safeswap search folder; a merge never writes into one",
            *merge_args(*triple), "--out", searched, *(["--force"] if force else []))
    assert tree(searched) == before
    assert not [p for p in searched.parent.iterdir() if ".safeswap-tmp-" in p.name]


KILLED_SPACE = {"trials": 6, "parallel": 2,
                "methods": {"linear": {"weight": {"low": 0.0, "high": 1.0}},
                            "layer-swap": {"bottom": {"low": 0, "high": 1}, "top": {"low": 0, "high": 1}}}}


def _search_process(triple, out):
    space = json.dumps({**SPACE, **KILLED_SPACE})
    script = ("import json\nfrom safeswap.search.space import parse_space\nfrom safeswap.search.run import search\n"
              f"search({triple[0]!r}, {triple[1]!r}, {triple[2]!r}, parse_space(json.loads({space!r})), {str(out)!r})\n")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _trials(out):
    study = optuna.load_study(study_name="safeswap-search", storage=f"sqlite:///{out / 'search.db'}")
    return [(t.number, t.state.name, t.params, t.values) for t in study.trials]


def test_two_searches_at_once_and_a_resume_after_sigkill_match_an_uninterrupted_search(triple, tmp_path, monkeypatch,
                                                                                      capsys):
    """A running search holds its folder: a second search is refused in one line naming it. SIGKILLed during its
    trials, the search leaves no lock behind, and its resume ends with the trials of an uninterrupted search."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    first = _search_process(triple, whole)
    proc = _search_process(triple, killed)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((killed / "candidates").glob("*.json"))) < 4:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.1)
    assert len(list((killed / "candidates").glob("*.json"))) >= 4, "the search did not get going"
    pid = proc.pid
    refused(monkeypatch, capsys, triple, f"is in use by another search (pid {pid} on",
            *search_args(triple, write_config(tmp_path / "s.yaml", **KILLED_SPACE), killed))
    proc.kill()
    proc.wait()
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    resumed = _search_process(triple, killed)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert _trials(killed) == _trials(whole)
    assert (killed / "candidates.csv").read_bytes() == (whole / "candidates.csv").read_bytes()


def test_a_search_that_fails_before_scoring_removes_the_folder_it_made_but_not_an_existing_one(triple, searched,
                                                                                               tmp_path, monkeypatch):
    import safeswap.search.run as run_module
    from safeswap.errors import SafeswapError

    def broken(context):
        raise SafeswapError("the probe failed")

    monkeypatch.setattr(run_module, "reference_models", broken)
    out = tmp_path / "new" / "s"
    with pytest.raises(SafeswapError, match="the probe failed"):
        run_search(triple, out)
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SafeswapError, match="the probe failed"):
        run_search(triple, empty)
    assert empty.is_dir() and not any(empty.iterdir())
    before = tree(searched)
    with pytest.raises(SafeswapError, match="the probe failed"):
        run_search(triple, searched)  # a resume that fails the same way
    assert {k: v for k, v in tree(searched).items() if k != "search.lock"} == \
        {k: v for k, v in before.items() if k != "search.lock"}


def test_vllm_is_given_the_tokenizer_folder_and_records_it():
    from safeswap.evaluation.backends import BackendOptions, DecodingSettings
    from safeswap.evaluation.backends.vllm import VLLMBackend, engine_kwargs

    assert engine_kwargs("expert", tokenizer="base")["tokenizer"] == "base"
    assert "tokenizer" not in engine_kwargs("expert")
    identity = VLLMBackend.decoding_identity(DecodingSettings(), BackendOptions(backend="vllm", tokenizer="base"))
    assert identity["tokenizer"] == "base"
    assert "tokenizer" not in VLLMBackend.decoding_identity(DecodingSettings(), BackendOptions(backend="vllm"))


def test_a_folder_filled_after_the_checks_is_not_taken_and_not_removed(tmp_path):
    """A merge may rename its output into place between the search's checks and its mkdir: refused under the lock."""
    from safeswap.errors import SafeswapError
    from safeswap.search.folder import search_folder

    out = tmp_path / "merged"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(SafeswapError, match="exists and is not a safeswap search folder .*'model.safetensors'"):
        with search_folder(out, {"seed": 0}):
            pass
    assert tree(out) == {"model.safetensors": hashlib.sha256(b"weights").hexdigest()}
