"""A merge can never destroy or leak what the user gave: the adversarial matrix.

Every case: exit 2, one line, no traceback, every input byte unchanged, nothing
left at the output path (or an existing output folder left as it was).
"""

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import yaml

import tiny
from cli_helpers import assert_refused, copy_model, fake_hub_snapshot, merge_args, refused, run_cli
from safeswap.read.shards import TOKENIZER_FILES


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """D/ holding base/ safety/ language/ (never modified by any test: each check hashes it)."""
    root = tmp_path_factory.mktemp("D")
    tiny.make_triple(root, "llama", layers=2)
    return root


def triple_of(root: Path):
    return root / "base", root / "safety", root / "language"


# ---- 1. where the output goes ----------------------------------------------------------------------------

@pytest.mark.parametrize("where, relation", [
    (lambda D: D, "contains"),                      # `cd D && --out . --force` took the inputs with it
    (lambda D: D.parent, "contains"),               # any ancestor, up to ~
    (lambda D: D / "language", "is"),
    (lambda D: D / "base" / "merged", "lies inside"),
    (lambda D: D / "safety" / "a" / "b", "lies inside"),
])
@pytest.mark.parametrize("force", [False, True])
def test_output_touching_an_input_is_refused(monkeypatch, capsys, models, where, relation, force):
    out = where(models)
    existed = out.exists()
    args = [*merge_args(*triple_of(models)), "--out", out] + (["--force"] if force else [])
    err = refused(monkeypatch, capsys, args, f" {relation} the ", [models])
    assert "model's folder" in err and "never touch an input" in err
    assert out.exists() == existed


def test_dot_as_output_inside_the_models_folder(monkeypatch, capsys, models):
    monkeypatch.chdir(models)
    args = ["merge", "--base", "base", "--safety", "safety", "--language", "language", "--out", ".", "--force"]
    refused(monkeypatch, capsys, args, "contains the base model's folder", [models])


def test_tilde_output_is_expanded_and_checked(monkeypatch, capsys, models):
    monkeypatch.setenv("HOME", str(models.parent))
    args = [*merge_args(*triple_of(models)), "--out", "~", "--force"]
    refused(monkeypatch, capsys, args, "contains the base model's folder", [models])


def test_symlinked_output_pointing_at_an_input_is_refused(monkeypatch, capsys, models, tmp_path):
    link = tmp_path / "sibling"
    link.symlink_to(models / "language", target_is_directory=True)
    args = [*merge_args(*triple_of(models)), "--out", link, "--force"]
    refused(monkeypatch, capsys, args, "is the language model's folder", [models])
    assert link.is_symlink()


def test_symlinked_input_is_compared_after_resolving(monkeypatch, capsys, models, tmp_path):
    link = tmp_path / "lang-link"
    link.symlink_to(models / "language", target_is_directory=True)
    base, safety, _ = triple_of(models)
    args = [*merge_args(base, safety, link), "--out", models / "language" / "out"]
    refused(monkeypatch, capsys, args, "lies inside the language model's folder", [models])


@pytest.mark.parametrize("where", [
    lambda hub: hub,                                       # contains the cached repo
    lambda hub: hub / "models--org--name" / "blobs",       # the blobs the snapshot points at
    lambda hub: hub / "models--org--name" / "refs",        # elsewhere inside the cached repo
])
def test_output_touching_a_hub_cache_input_is_refused(monkeypatch, capsys, models, tmp_path, where):
    hub = tmp_path / "hub"
    snapshot = fake_hub_snapshot(models / "language", hub)
    base, safety, _ = triple_of(models)
    args = [*merge_args(base, safety, snapshot), "--out", where(hub), "--force"]
    refused(monkeypatch, capsys, args, "the language model's folder", [models, hub])


def test_merge_from_a_hub_cache_snapshot_works(monkeypatch, capsys, models, tmp_path):
    snapshot = fake_hub_snapshot(models / "language", tmp_path / "hub")
    base, safety, _ = triple_of(models)
    code, err = run_cli(monkeypatch, capsys, *merge_args(base, safety, snapshot), "--out", tmp_path / "o")
    assert code == 0, err
    assert (tmp_path / "o" / "tokenizer.json").read_bytes() == (models / "language" / "tokenizer.json").read_bytes()


# ---- 2. what --force may replace --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def merged(models, tmp_path_factory):
    import safeswap

    out = tmp_path_factory.mktemp("merged") / "out"
    safeswap.merge(*triple_of(models), out=out)
    return out


@pytest.mark.parametrize("spoil, reason", [
    (lambda o: (o / "notes.txt").write_text("mine"), "'notes.txt', which safeswap does not write"),
    (lambda o: (o / "data").mkdir(), "'data', which is not a file safeswap writes"),
    (lambda o: os.remove(o / "safeswap-manifest.json"), "it has no safeswap-manifest.json"),
    (lambda o: (o / "safeswap-manifest.json").write_text("{}"), "is not a safeswap manifest"),
    (lambda o: (o / "safeswap-manifest.json").write_text("{oops"), "is unreadable"),
    (lambda o: (o / "model-00001-of-00002.safetensors.bak").write_text("x"), "safeswap does not write"),
])
def test_force_replaces_only_what_safeswap_wrote(monkeypatch, capsys, models, merged, tmp_path, spoil, reason):
    out = tmp_path / "out"
    shutil.copytree(merged, out)
    spoil(out)
    args = [*merge_args(*triple_of(models)), "--out", out, "--force"]
    err = refused(monkeypatch, capsys, args, reason, [models, out])
    assert "--force replaces only an empty folder or one safeswap wrote" in err


def test_force_replaces_a_previous_output_and_an_empty_folder(monkeypatch, capsys, models, merged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(merged, out)
    (out / "model.safetensors").write_bytes(b"stale")
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple_of(models)), "--out", out, "--force")
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() == (merged / "model.safetensors").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple_of(models)), "--out", empty, "--force")
    assert code == 0, err


def test_force_replaces_a_previous_multi_language_output(monkeypatch, capsys, models, tmp_path):
    base, safety, language = triple_of(models)
    args = ["merge", "--base", base, "--safety", safety, "--language", f"ko={language}", "--language", f"sw={language}",
            "--out", tmp_path / "multi"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    assert run_cli(monkeypatch, capsys, *args, "--force")[0] == 0
    (tmp_path / "multi" / "notes.txt").write_text("mine")
    refused(monkeypatch, capsys, [*args, "--force"], "--force replaces only", [tmp_path / "multi"])


# ---- 3. every file read from an input stays inside it -----------------------------------------------------

SIDE_FILES_OF_TINY = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                      "chat_template.jinja"]


@pytest.mark.parametrize("name", SIDE_FILES_OF_TINY + ["special_tokens_map.json", "vocab.json", "merges.txt",
                                                       "tokenizer.model", "added_tokens.json", "chat_template.json"])
@pytest.mark.parametrize("role", ["language", "base"])
def test_symlink_out_of_a_model_folder_is_never_read(monkeypatch, capsys, models, tmp_path, name, role):
    assert name in SIDE_FILES_OF_TINY or name in TOKENIZER_FILES
    private = tmp_path / "private" / name
    private.parent.mkdir()
    source = models / role / name
    private.write_bytes(source.read_bytes() if source.exists() else b"SECRET-BYTES")
    folders = {r: models / r for r in ("base", "safety", "language")}
    folders[role] = copy_model(models / role, tmp_path / role)
    (folders[role] / name).unlink(missing_ok=True)
    (folders[role] / name).symlink_to(private)
    out = tmp_path / "o"
    args = [*merge_args(folders["base"], folders["safety"], folders["language"]), "--out", out,
            "--tokenizer-from", role]
    refused(monkeypatch, capsys, args, f"{name}: symlink leads outside the model folder", [models, private.parent])
    assert not out.exists()


def test_broken_symlink_out_of_the_folder_is_refused(monkeypatch, capsys, models, tmp_path):
    lang = copy_model(models / "language", tmp_path / "language")
    (lang / "tokenizer.json").unlink()
    (lang / "tokenizer.json").symlink_to(tmp_path / "nowhere.json")
    base, safety, _ = triple_of(models)
    refused(monkeypatch, capsys, [*merge_args(base, safety, lang), "--out", tmp_path / "o"],
                    "symlink leads outside the model folder", [models])


def test_symlink_inside_the_folder_is_followed(monkeypatch, capsys, models, tmp_path):
    lang = copy_model(models / "language", tmp_path / "language")
    (lang / "sub").mkdir()
    shutil.move(lang / "tokenizer.json", lang / "sub" / "tok.json")
    (lang / "tokenizer.json").symlink_to("sub/tok.json")
    base, safety, _ = triple_of(models)
    code, err = run_cli(monkeypatch, capsys, *merge_args(base, safety, lang), "--out", tmp_path / "o")
    assert code == 0, err
    assert (tmp_path / "o" / "tokenizer.json").read_bytes() == (lang / "sub" / "tok.json").read_bytes()


# ---- 4. safetensors headers as the format requires -------------------------------------------------------

def rewrite_header(path: Path, edit) -> None:
    """Apply edit(header dict, data bytes) -> (header, data) and write the shard back."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    header, data = edit(header, data)
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


Q0, Q1 = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"


def _overlap(h, d):
    h[Q1]["data_offsets"] = h[Q0]["data_offsets"]
    return h, d


def _gap(h, d):
    return h, d + b"\0" * 16  # bytes after the last tensor


def _hole(h, d):
    for k, v in h.items():
        if k != "__metadata__":
            v["data_offsets"] = [v["data_offsets"][0] + 8, v["data_offsets"][1] + 8]
    return h, b"\0" * 8 + d


def _negative(h, d):
    h[Q0]["data_offsets"] = [-2, h[Q0]["data_offsets"][1] - h[Q0]["data_offsets"][0] - 2]
    return h, d


def _float_shape(h, d):
    h[Q0]["shape"] = [float(s) for s in h[Q0]["shape"]]
    return h, d


def _duplicate_key(h, d):
    text = json.dumps(h)
    entry = json.dumps(h[Q0])
    return (text[:-1] + f', "{Q0}": {entry}}}').encode(), d


def _metadata_not_strings(h, d):
    h["__metadata__"] = {"format": 1}
    return h, d


@pytest.mark.parametrize("edit, expected, library_refuses", [
    (_overlap, "overlaps tensor", True),
    (_gap, "bytes after the last tensor", True),
    (_hole, "unused bytes before tensor", True),
    (_negative, "invalid data_offsets", True),
    (_float_shape, "invalid shape", True),
    (_duplicate_key, "appears twice", False),  # the library keeps the last entry; two readings of one name are refused here
    (_metadata_not_strings, "__metadata__ must map strings to strings", True),
])
def test_header_that_breaks_the_format_is_refused(monkeypatch, capsys, models, tmp_path, edit, expected, library_refuses):
    from safetensors import safe_open

    safety = copy_model(models / "safety", tmp_path / "safety")
    rewrite_header(safety / "model.safetensors", edit)
    if library_refuses:  # the safetensors library refuses the same file
        with pytest.raises(Exception):
            with safe_open(safety / "model.safetensors", "pt") as f:
                [f.get_tensor(k) for k in f.keys()]
    base, _, language = triple_of(models)
    refused(monkeypatch, capsys, [*merge_args(base, safety, language), "--out", tmp_path / "o"],
                    expected, [models])
    assert not (tmp_path / "o").exists()


def test_header_order_in_the_json_does_not_matter(monkeypatch, capsys, models, tmp_path):
    safety = copy_model(models / "safety", tmp_path / "safety")
    rewrite_header(safety / "model.safetensors", lambda h, d: (dict(reversed(list(h.items()))), d))
    base, _, language = triple_of(models)
    code, err = run_cli(monkeypatch, capsys, *merge_args(base, safety, language), "--out", tmp_path / "o")
    assert code == 0, err


# ---- 5. a plan replays strictly ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan_text(models, tmp_path_factory):
    import safeswap

    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    safeswap.plan(*triple_of(models), out=path)
    return path.read_text()


def edit_plan(text: str, fn) -> str:
    data = yaml.safe_load(text)
    fn(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def fn(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


PLAN_EDITS = [
    (lambda d: d["units"].append({"unit": "layer.0.feedforward", "layer": 0, "module": "feedforward",
                                  "decision": "safety"}), "unit layer.0.feedforward does not exist in the models"),
    (lambda d: d["units"].append({"unit": "layer.7.mlp", "layer": 7, "module": "mlp", "decision": "safety"}),
     "unit layer.7.mlp does not exist"),
    (lambda d: d["units"].pop(1), "no entry for unit layer.0.mlp"),
    (lambda d: d["units"].append(dict(d["units"][0])), "need a unique 'unit' id"),
    (lambda d: d["units"][0].update(decision="english"), "has decision 'english'"),
    (lambda d: d["units"][0].update(alpha=2), "alpha must lie in [0, 1]"),
    (lambda d: d["units"][0].update(alhpa=0.7), "unit layer.0.attention has unknown field 'alhpa'"),
    (lambda d: d["units"][0].update(layer=1), "unit layer.0.attention has layer 1, but that unit's layer is 0"),
    (lambda d: d["units"][0].update(module="mlp"), "has module 'mlp', but that unit's module is 'attention'"),
    (lambda d: d["units"].__setitem__(0, "layer.0.attention"), "malformed"),
    (_set("format", "safeswap.plan/9"), "is not a safeswap plan"),
    (_set("method", "soup"), "unknown merge method 'soup'"),
    (_set("parameters", "tau", "abc"), "tau must be a number"),
    (_set("parameters", "granularity", "block"), "unknown granularity 'block'"),
    (_set("parameters", "temperature", 1), "does not take temperature"),
    (_set("architecture", "MistralForCausalLM"), "plan is for MistralForCausalLM, but the models are LlamaForCausalLM"),
    (_set("num_layers", 5), "has num_layers 5, but the models have 2 layers"),
    (_set("outside_layers", "both"), "outside_layers must be one of"),
    (_set("tokenizer_from", "mine"), "tokenizer_from must be one of"),
    (_set("models", "base", "path", "/nowhere/base"), "base model: /nowhere/base does not exist"),
    (_set("models", "base", "path", None), "model base has no path"),
    (_set("models", "safety", "fingerprint", "sha256:" + "0" * 64), "plan was made for a different safety model"),
    (_set("colour", "blue"), "unknown field 'colour'"),
    (lambda d: d.pop("units"), None),  # an adaptive plan without units: every unit is missing
]


@pytest.mark.parametrize("fn, expected", PLAN_EDITS)
def test_every_plan_field_edited_wrong_is_refused(monkeypatch, capsys, models, plan_text, tmp_path, fn, expected):
    plan = tmp_path / "plan.yaml"
    plan.write_text(edit_plan(plan_text, fn))
    out = tmp_path / "o"
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", out],
                    expected or "no entry for unit layer.0.attention", [models])
    assert not out.exists()


def test_plan_with_a_python_tag_names_the_tag(monkeypatch, capsys, plan_text, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text.replace("method: adaptive", "method: !!python/object/apply:os.system ['true']"))
    err = refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", tmp_path / "o"],
                          "python/object/apply:os.system", [tmp_path])
    assert "ConstructorError" in err and "line " in err


def test_layer_swap_plan_with_a_missing_layer_is_refused(monkeypatch, capsys, models, tmp_path):
    import safeswap

    plan = tmp_path / "plan.yaml"
    safeswap.plan(*triple_of(models), method="layer-swap", parameters={"bottom": 1, "top": 0}, out=plan)
    plan.write_text(edit_plan(plan.read_text(), lambda d: d["units"].pop()))
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", tmp_path / "o"],
                    "no entry for unit layer.1", [models])


def test_linear_plan_with_units_is_refused(monkeypatch, capsys, models, tmp_path):
    import safeswap

    plan = tmp_path / "plan.yaml"
    safeswap.plan(*triple_of(models), method="linear", out=plan)
    plan.write_text(edit_plan(plan.read_text(), lambda d: d.__setitem__("units", [{"unit": "layer.0", "decision": "safety"}])))
    refused(monkeypatch, capsys, ["merge", "--plan", plan, "--out", tmp_path / "o"],
                    "method linear takes no units, but the plan lists 1", [models])


def test_plan_made_with_relative_paths_replays_from_any_folder(monkeypatch, capsys, models, tmp_path):
    monkeypatch.chdir(models)
    code, err = run_cli(monkeypatch, capsys, "plan", "--base", "base", "--safety", "safety", "--language", "language",
                        "--out", tmp_path / "plan.yaml")
    assert code == 0, err
    recorded = yaml.safe_load((tmp_path / "plan.yaml").read_text())["models"]
    assert recorded["base"]["path"] == str(models / "base")  # stored absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, err = run_cli(monkeypatch, capsys, "merge", "--plan", tmp_path / "plan.yaml", "--out", "merged")
    assert code == 0, err
    assert (elsewhere / "merged" / "model.safetensors").exists()


def test_relative_paths_in_a_plan_are_relative_to_the_plan_file(monkeypatch, capsys, models, plan_text, tmp_path):
    def relative(d):
        for role in ("base", "safety", "language"):
            d["models"][role]["path"] = os.path.relpath(models / role, models.parent)

    plan = models.parent / "relative-plan.yaml"
    plan.write_text(edit_plan(plan_text, relative))
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "merge", "--plan", plan, "--out", tmp_path / "o")
    assert code == 0, err


# ---- 6. messages name their flag; every output file has one mode ------------------------------------------

@pytest.mark.parametrize("value, expected", [("0", "--shard-size must be positive"), ("lots", "--shard-size: cannot read size 'lots'")])
def test_shard_size_errors_name_the_flag(monkeypatch, capsys, models, tmp_path, value, expected):
    assert_refused(monkeypatch, capsys, tmp_path / "o", expected, *merge_args(*triple_of(models)), "--shard-size", value)


def test_every_output_file_has_the_same_mode(merged):
    modes = {p.name: p.stat().st_mode & 0o777 for p in merged.iterdir()}
    assert modes["safeswap-plan.yaml"] == modes["README.md"] == modes["model.safetensors"], modes
    assert len(set(modes.values())) == 1, modes


@pytest.mark.parametrize("command, where, expected", [
    ("analyze", lambda D: D / "base", "statistics folder"),
    ("analyze", lambda D: D, "statistics folder"),
    ("plan", lambda D: D / "language" / "config.json", "plan file"),
])
def test_analysis_and_plan_outputs_never_touch_an_input(monkeypatch, capsys, models, command, where, expected):
    base, safety, language = triple_of(models)
    args = [command, "--base", base, "--safety", safety, "--language", language, "--out", where(models)]
    err = refused(monkeypatch, capsys, args, expected, [models])
    assert "never touch an input" in err
