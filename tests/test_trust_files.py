"""Every file safeswap reads, times every way it can lie about itself; and the content identity behind it.

Each refusal: exit 2, exactly one line, no traceback, every input byte unchanged (hashed before and
after), nothing left at the output path.
"""

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import yaml

import tiny
from cli_helpers import copy_model, merge_args, refused, run_cli
from safeswap.read import content_id
from safeswap.read.fingerprint import fingerprint_model


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    """Each test its own sha256 cache (the hasher child inherits the variable), outside tmp_path: the tests
    watch tmp_path's inputs for changes, and the cache may take an entry whenever a file is over 2 s old."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SAFESWAP_CACHE", str(cache))
    return cache / content_id.CACHE_SUBFOLDER


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("D")
    tiny.make_triple(root, "llama", layers=2)
    return root


def copies(models, tmp_path):
    """A private copy of the triple (tests that change an input change only their copy)."""
    return tuple(copy_model(models / r, tmp_path / r) for r in ("base", "safety", "language"))


def rewrite_weight_in_place(folder: Path, offset_from_end: int = 4096) -> None:
    """Change bytes of one weight inside the shard, same size: a plan's inputs changed after the plan."""
    shard = folder / "model.safetensors"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.seek(size - offset_from_end)
        old = f.read(4)
        f.seek(size - offset_from_end)
        f.write(bytes(b ^ 0x5A for b in old))


def edit_config(folders, edit) -> None:
    for folder in folders:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))


def rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = edit(json.loads(raw[8:8 + n]), raw[8 + n:])
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


LAST = "model.norm.weight"


def _overrun(h, d):
    """The stored order's last tensor moved 2048 bytes past the end: the gap before it is a symptom."""
    last = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][1])
    begin, end = h[last]["data_offsets"]
    h[last]["data_offsets"] = [begin + 2048, end + 2048]
    return h, d


def _cut(h, d):
    return h, d[:-100]


def _header_duplicate(h, d):
    name = next(k for k in h if k != "__metadata__")
    return (json.dumps(h)[:-1] + f', "{name}": {json.dumps(h[name])}}}').encode(), d


# ---- shard headers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, expected", [
    (_overrun, ["runs 2048 bytes past the end of the", "-byte data section"]),
    (_cut, "runs 100 bytes past the end"),
    (_header_duplicate, "appears twice"),
])
def test_shard_header_that_lies(monkeypatch, capsys, models, tmp_path, edit, expected):
    base, safety, language = copies(models, tmp_path)
    rewrite_header(safety / "model.safetensors", edit)
    out = tmp_path / "o"
    err = refused(monkeypatch, capsys, [*merge_args(base, safety, language), "--out", out], expected, [tmp_path], out)
    assert "unused bytes" not in err  # the root cause, not the gap it leaves


# ---- config.json --------------------------------------------------------------------------------------

def _set(key, value):
    return lambda c: c.__setitem__(key, value)


@pytest.mark.parametrize("edit, expected", [
    (_set("num_hidden_layers", 4), "config.json says num_hidden_layers 4, but the tensors hold layers 0-1 (2 layers)"),
    (_set("hidden_size", 128), "config.json gives hidden_size 128, but model.layers.0.self_attn.q_proj.weight has 64"),
    (_set("intermediate_size", 256), "config.json gives intermediate_size 256, but model.layers.0.mlp.gate_proj.weight has 128"),
    (_set("num_key_value_heads", 4), "num_key_value_heads 4 x head_dim 16 = 64, but model.layers.0.self_attn.k_proj.weight has 32"),
    (_set("num_attention_heads", 8), "num_attention_heads 8 x head_dim 16 = 128, but model.layers.0.self_attn.q_proj.weight has 64"),
    (_set("head_dim", 32), "num_attention_heads 4 x head_dim 32 = 128, but model.layers.0.self_attn.q_proj.weight has 64"),
    (_set("vocab_size", 512), "config.json gives vocab_size 512, but model.embed_tokens.weight has 320"),
    (_set("hidden_size", "64"), "config.json hidden_size is '64'; it must be a positive integer"),
    (_set("num_hidden_layers", 2.0), "config.json num_hidden_layers is 2.0; it must be a positive integer"),
])
def test_config_that_does_not_describe_its_tensors(monkeypatch, capsys, models, tmp_path, edit, expected):
    folders = copies(models, tmp_path)
    edit_config(folders, edit)  # all three alike: the models agree with each other, not with their tensors
    out = tmp_path / "o"
    refused(monkeypatch, capsys, [*merge_args(*folders), "--out", out], expected, [tmp_path], out)


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("lie, expected", [
    (lambda text: text[:-1] + ', "bos_token_id": 1, "bos_token_id": 7}', "key 'bos_token_id' appears twice"),
    (lambda text: text[:-1] + ', "rope_scaling_factor": NaN}', "NaN is not a JSON number"),
    (lambda text: text[: len(text) // 2], "is unreadable (JSONDecodeError)"),
    (lambda text: "[1, 2]", "is not a JSON object"),
])
def test_json_side_file_that_lies(monkeypatch, capsys, models, tmp_path, name, lie, expected):
    base, safety, language = copies(models, tmp_path)
    path = language / name
    path.write_text(lie(json.dumps(json.loads(path.read_text()))))
    out = tmp_path / "o"
    refused(monkeypatch, capsys, [*merge_args(base, safety, language), "--out", out], [name, expected], [tmp_path], out)


# ---- plans ----------------------------------------------------------------------------------------------

def stage_on_copies(monkeypatch, capsys, models, tmp_path, command: str, name: str):
    """A private triple and what `safeswap COMMAND` (plan or analyze) wrote from it to tmp_path/name."""
    folders = copies(models, tmp_path)
    out = tmp_path / name
    code, err = run_cli(monkeypatch, capsys, command, *merge_args(*folders)[1:], "--out", out)
    assert code == 0, err
    return folders, out


@pytest.fixture
def planned(monkeypatch, capsys, models, tmp_path):
    """A private triple and a plan made from it by `safeswap plan`."""
    return stage_on_copies(monkeypatch, capsys, models, tmp_path, "plan", "plan.yaml")


def test_plan_records_every_file_by_its_full_sha256(planned):
    folders, plan = planned
    models = yaml.safe_load(plan.read_text())["models"]
    for role, folder in zip(("base", "safety", "language"), folders):
        files = models[role]["files"]
        assert set(files) == {p.name for p in content_id.identity_files(folder)}
        for name, entry in files.items():
            assert entry == {"size": (folder / name).stat().st_size,
                             "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
        assert models[role]["fingerprint"] == fingerprint_model(folder)


@pytest.mark.parametrize("change, expected", [
    (lambda f: rewrite_weight_in_place(f), "model.safetensors changed (sha256"),
    (lambda f: rewrite_weight_in_place(f, offset_from_end=10_000), "model.safetensors changed (sha256"),
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text().replace("}", ' }', 1)), "config.json changed ("),
    (lambda f: (f / "tokenizer_config.json").unlink(), "tokenizer_config.json is gone"),
    (lambda f: (f / "extra.json").write_text("{}"), "extra.json is new"),
])
def test_replay_refuses_an_input_changed_after_the_plan(monkeypatch, capsys, planned, tmp_path, change, expected):
    (base, safety, language), plan = planned
    change(safety)
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out],
            ["safety model file", expected, "since the plan was made"], [tmp_path / "base", safety, language], out)


def test_replay_with_the_change_found_only_at_the_end_leaves_nothing(monkeypatch, capsys, planned, tmp_path):
    """Nothing cached for the changed shard (its mtime moved): the merge writes, hashes beside it, and the
    comparison at the end refuses before the output is committed."""
    (base, safety, language), plan = planned
    rewrite_weight_in_place(safety)
    assert content_id.cached_sha256(safety / "model.safetensors") is None
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out], "model.safetensors changed", [tmp_path], out)


def test_replay_of_unchanged_inputs_still_merges(monkeypatch, capsys, planned, tmp_path):
    (base, safety, language), plan = planned
    code, err = run_cli(monkeypatch, capsys, "merge", "--plan", plan, "--out", tmp_path / "o")
    assert code == 0, err
    replayed = yaml.safe_load((tmp_path / "o" / "safeswap-plan.yaml").read_text())["models"]
    assert replayed == yaml.safe_load(plan.read_text())["models"]


def _text_edit(find, replace):
    return lambda text: text.replace(find, replace, 1)


@pytest.mark.parametrize("lie, expected", [
    # the case: the second alpha would win silently
    (lambda t: t.replace("decision: language", "decision: blend, alpha: 0.2, alpha: 0.9", 1), ["duplicate key 'alpha'", "line "]),
    (lambda t: t.replace("method: adaptive", "method: adaptive\nmethod: linear", 1), "duplicate key 'method' at line"),
    (lambda t: t.replace("decision: language", "decision: blend, alpha: .nan", 1), "alpha must lie in [0, 1], got nan"),
    (lambda t: t[: len(t) // 2].rsplit("\n", 3)[0] + "\n  - {unit: ", "is malformed"),
])
def test_plan_file_that_lies(monkeypatch, capsys, planned, tmp_path, lie, expected):
    _, plan = planned
    text = plan.read_text()
    assert "decision: language" in text
    plan.write_text(lie(text))
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out], expected, [tmp_path / r for r in ("base", "safety", "language")], out)


@pytest.mark.parametrize("lie, expected", [
    (lambda files: files.update({"model.safetensors": {"size": 1, "sha256": 7}}), "must be {size, sha256}"),
    (lambda files: files.update({"model.safetensors": {"size": 1, "sha256": "Z" * 64}}), "must be {size, sha256}"),
    (lambda files: files.update({"model.safetensors": {**files["model.safetensors"], "sha256": "0" * 64}}),
     "model.safetensors changed (sha256 000000000000... then"),
    (lambda files: files.update({"model.safetensors": {**files["model.safetensors"], "size": 5}}),
     "model.safetensors changed (5 bytes then"),
])
def test_plan_file_records_that_lie(monkeypatch, capsys, planned, tmp_path, lie, expected):
    _, plan = planned
    data = yaml.safe_load(plan.read_text())
    lie(data["models"]["safety"]["files"])
    plan.write_text(yaml.safe_dump(data))
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out], expected, [tmp_path / r for r in ("base", "safety", "language")], out)


def test_plan_from_an_older_safeswap_names_why_it_cannot_be_checked(monkeypatch, capsys, planned, tmp_path):
    """A plan with a sampled fingerprint and no file sha256 cannot prove its models: refused, saying so."""
    _, plan = planned
    data = yaml.safe_load(plan.read_text())
    for record in data["models"].values():
        record.pop("files")
        record["fingerprint"] = "sha256:" + "1" * 64
    plan.write_text(yaml.safe_dump(data))
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out],
            ["plan was made for a different base model", "older safeswap"], [tmp_path / r for r in ("base", "safety", "language")], out)


# ---- statistics.json --------------------------------------------------------------------------------------

@pytest.fixture
def analysed(monkeypatch, capsys, models, tmp_path):
    """A private triple and the statistics folder `safeswap analyze` made from it."""
    return stage_on_copies(monkeypatch, capsys, models, tmp_path, "analyze", "stats")


def _stat_edit(fn):
    def edit(path: Path):
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data))
    return edit


def _raw_edit(fn):
    return lambda path: path.write_text(fn(path.read_text()))


@pytest.mark.parametrize("lie, expected", [
    (_stat_edit(lambda d: d["tensors"][0].update(delta_safety=float("nan"))), "tensors[0].delta_safety is not a finite number"),
    (_raw_edit(lambda t: t.replace('"base_norm": ', '"base_norm": 1e400, "x": ', 1)), "tensors[0].base_norm is not a finite number"),
    (_raw_edit(lambda t: t.replace('"num_layers": 2', '"num_layers": 2, "num_layers": 3', 1)), "key 'num_layers' appears twice"),
    (_stat_edit(lambda d: d["tensors"][0].update(layer="0")), "tensors[0].layer is '0'; it must be a layer in 0..1"),
    (_stat_edit(lambda d: d["tensors"][0].update(layer=5)), "tensors[0].layer is 5"),
    (_stat_edit(lambda d: d["tensors"][0].update(delta_language=-1.0)), "tensors[0].delta_language is -1.0; it must be a number >= 0"),
    (_stat_edit(lambda d: d["tensors"][0].update(module="feedforward")), "tensors[0].module is 'feedforward'"),
    (_stat_edit(lambda d: d.update(num_layers=True)), "num_layers is True"),
    (_stat_edit(lambda d: d["models"].pop("safety")), "models must give a path for each of base, safety, language"),
    (_stat_edit(lambda d: d["tensors"].append(dict(d["tensors"][0]))), "has two rows"),
    (_raw_edit(lambda t: t[: len(t) // 2]), "is malformed (JSONDecodeError)"),
    # rows that do not match the models they are used with
    (_stat_edit(lambda d: d["tensors"].pop(3)), "the statistics have no row for tensor model.layers.0."),
    (_stat_edit(lambda d: d["tensors"][0].update(numel=7)), "7 elements; the models say 0, "),
    (_stat_edit(lambda d: d["tensors"][0].update(name="model.layers.0.self_attn.x_proj.weight")), "no row for tensor"),
    (_stat_edit(lambda d: d.update(num_layers=3)), "with 3 layers, the models are LlamaForCausalLM with 2"),
])
def test_statistics_file_that_lies(monkeypatch, capsys, analysed, tmp_path, lie, expected):
    folders, stats = analysed
    lie(stats / "statistics.json")
    out = tmp_path / "plan.yaml"
    refused(monkeypatch, capsys, ["plan", "--statistics", stats, "--out", out], expected, list(folders), out)


def test_statistics_refuse_an_input_changed_since_the_analysis(monkeypatch, capsys, analysed, tmp_path):
    (base, safety, language), stats = analysed
    rewrite_weight_in_place(language)
    out = tmp_path / "plan.yaml"
    refused(monkeypatch, capsys, ["plan", "--statistics", stats, "--out", out],
            ["language model file", "model.safetensors changed", "since the statistics were made", "safeswap analyze"],
            [base, safety, stats], out)


def test_untouched_statistics_still_plan(monkeypatch, capsys, analysed, tmp_path):
    _, stats = analysed
    code, err = run_cli(monkeypatch, capsys, "plan", "--statistics", stats, "--out", tmp_path / "plan.yaml")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["models"] == json.loads((stats / "statistics.json").read_text())["models"]


# ---- search space YAML ------------------------------------------------------------------------------------

def test_search_space_with_a_duplicate_key(monkeypatch, capsys, models, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("methods:\n  linear:\n    alpha: [0.2, 0.8]\n    alpha: [0.1, 0.9]\n")
    out = tmp_path / "search"
    refused(monkeypatch, capsys, ["search", *merge_args(*(models / r for r in ("base", "safety", "language")))[1:],
                                  "--config", space, "--out", out], ["duplicate key 'alpha'", "line 4"], [models], out)


# ---- the manifest (verify) --------------------------------------------------------------------------------

@pytest.fixture
def merged(monkeypatch, capsys, models, tmp_path):
    folders = copies(models, tmp_path)
    out = tmp_path / "merged"
    code, err = run_cli(monkeypatch, capsys, *merge_args(*folders), "--out", out)
    assert code == 0, err
    return folders, out


def _manifest_edit(fn):
    def edit(path):
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data))
    return edit


@pytest.mark.parametrize("lie, expected", [
    (_raw_edit(lambda t: t.replace('"format"', '"plan_sha256": "x", "format"', 1)), "key 'plan_sha256' appears twice"),
    (_manifest_edit(lambda d: d["outputs"]["model.safetensors"].update(sha256=5)), "output model.safetensors has no 64-digit sha256"),
    (_manifest_edit(lambda d: d["outputs"].update({"../secret": {"sha256": "0" * 64}})), "output '../secret' is not a file name"),
    (_manifest_edit(lambda d: d.pop("outputs")), "no 'outputs' listing the shards"),
    (_raw_edit(lambda t: t[: len(t) // 2]), "is malformed (JSONDecodeError)"),
    (_manifest_edit(lambda d: d["outputs"]["model.safetensors"].update(sha256="0" * 64)), "does not match its sha256"),
])
def test_manifest_that_lies(monkeypatch, capsys, merged, lie, expected):
    folders, out = merged
    lie(out / "safeswap-manifest.json")
    refused(monkeypatch, capsys, ["verify", out], expected, [*folders, out])


def test_verify_inputs_refuses_an_input_changed_after_the_merge(monkeypatch, capsys, merged):
    (base, safety, language), out = merged
    rewrite_weight_in_place(base)
    refused(monkeypatch, capsys, ["verify", out, "--inputs"], ["base model file", "model.safetensors changed"],
            [safety, language, out])


# ---- the content identity -----------------------------------------------------------------------------------

def test_merge_records_one_identity_in_plan_manifest_and_fingerprint(merged):
    folders, out = merged
    plan = yaml.safe_load((out / "safeswap-plan.yaml").read_text())
    manifest = json.loads((out / "safeswap-manifest.json").read_text())
    for role, folder in zip(("base", "safety", "language"), folders):
        assert plan["models"][role]["files"] == manifest["inputs"][role]
        assert plan["models"][role]["fingerprint"] == fingerprint_model(folder)
        for name, entry in manifest["inputs"][role].items():
            assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()


def _unsampled_offset(shard: Path) -> int:
    """A byte the old sampled fingerprint never read: outside the 4 KB block from each tensor's middle and
    the four 64 KB blocks spread over the data section."""
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    start, size = 8 + n, len(raw)
    header = json.loads(raw[8:start])
    sampled = [(start + (max(0, size - start - 65536) * i) // 3, start + (max(0, size - start - 65536) * i) // 3 + 65536)
               for i in range(4)]
    for name, e in header.items():
        if name != "__metadata__":
            b, end = e["data_offsets"]
            length = min(4096, end - b)
            middle = start + b + (end - b - length) // 2
            sampled.append((middle, middle + length))
    return next(o for o in range(start, size) if not any(a <= o < b for a, b in sampled))


def test_fingerprint_sees_a_byte_anywhere(tmp_path):
    """The sampled fingerprint read a block from each tensor's middle and four per file; one byte elsewhere went unseen."""
    folder = tiny.make_model(tmp_path / "m", layers=8, tokenizer=False)
    before = fingerprint_model(folder)
    shard = folder / "model.safetensors"
    offset = _unsampled_offset(shard)
    with open(shard, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))
    assert fingerprint_model(folder) != before


def _age(folder: Path, seconds: float = 60) -> None:
    """Files written just now are hashed but not cached (RECENT_SECONDS): make them old."""
    old = os.stat(folder).st_mtime - seconds
    for p in folder.iterdir():
        os.utime(p, (old, old))


def test_second_merge_of_the_same_inputs_hashes_nothing(monkeypatch, capsys, models, tmp_path, private_cache):
    folders = copies(models, tmp_path)
    for f in folders:
        _age(f)
    code, err = run_cli(monkeypatch, capsys, *merge_args(*folders), "--out", tmp_path / "one")
    assert code == 0, err
    assert len(list(private_cache.glob("*.json"))) == sum(len(content_id.identity_files(f)) for f in folders)
    assert not list(private_cache.glob(".tmp-*"))  # atomic writes leave no partial entry
    # Put a made-up digest in the cache for one shard: a merge that reads the cache records it, one that hashed would not.
    shard = folders[1] / "model.safetensors"
    content_id.store_sha256(os.stat(shard), "f" * 64)
    started = []
    real_popen = __import__("subprocess").Popen
    monkeypatch.setattr("safeswap.write.hasher.subprocess.Popen", lambda *a, **k: started.append(a) or real_popen(*a, **k))
    code, err = run_cli(monkeypatch, capsys, *merge_args(*folders), "--out", tmp_path / "two")
    assert code == 0, err
    manifest = json.loads((tmp_path / "two" / "safeswap-manifest.json").read_text())
    assert manifest["inputs"]["safety"]["model.safetensors"]["sha256"] == "f" * 64
    assert started == []  # every sha256 known: no hashing child at all


def test_corrupt_cache_entry_is_ignored_and_rewritten(tmp_path, private_cache):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    _age(tmp_path)
    truth = hashlib.sha256(path.read_bytes()).hexdigest()
    assert content_id.file_sha256(path) == truth
    entry = next(private_cache.glob("*.json"))
    for corrupt in ('{"key": [1, 2', json.dumps({**json.loads(entry.read_text()), "sha256": "0" * 64}), "[]"):
        entry.write_text(corrupt)
        assert content_id.cached_sha256(path) is None
        assert content_id.file_sha256(path) == truth
        assert content_id.cached_sha256(path) == truth


def test_a_file_changed_in_place_is_hashed_again(tmp_path, private_cache):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 4096)
    _age(tmp_path)
    first = content_id.file_sha256(path)
    with open(path, "r+b") as f:
        f.write(b"b")
    assert content_id.cached_sha256(path) is None  # mtime moved: the old entry no longer applies
    assert content_id.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first


def test_a_file_written_just_now_is_not_cached(tmp_path, private_cache):
    path = tmp_path / "f.bin"
    path.write_bytes(b"new")
    assert content_id.file_sha256(path) == hashlib.sha256(b"new").hexdigest()
    assert content_id.cached_sha256(path) is None


def test_hub_blob_name_is_the_sha256_without_reading_the_file(monkeypatch, models, tmp_path):
    repo = tmp_path / "hub" / "models--org--name"
    snapshot, blobs = repo / "snapshots" / "abc", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in (models / "base").iterdir():
        data = f.read_bytes()
        # LFS files (weights) are named by their sha256, small git files by a 40-hex git sha1
        name = hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else hashlib.sha1(data).hexdigest()
        (blobs / name).write_bytes(data)
        (snapshot / f.name).symlink_to(f"../../blobs/{name}")
    expected = fingerprint_model(models / "base")
    read = []
    real = content_id.sha256_file
    monkeypatch.setattr(content_id, "sha256_file", lambda p: read.append(Path(p).name) or real(p))
    assert fingerprint_model(snapshot) == expected
    assert "model.safetensors" not in read and "config.json" in read  # a git sha1 blob name is not usable
