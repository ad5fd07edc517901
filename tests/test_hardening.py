"""Bad input: one clear line, a non-zero exit, and nothing left at the output path."""

import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from cli_helpers import assert_refused, copy_model, fake_hub_snapshot, merge_args, run_cli


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tiny.make_triple(tmp_path_factory.mktemp("triple"), "llama", layers=3)


def test_missing_path(monkeypatch, capsys, triple, tmp_path):
    base, safety, _ = triple
    assert_refused(monkeypatch, capsys, tmp_path / "o", "language model: ", *merge_args(base, safety, tmp_path / "nope"))


def test_folder_without_weights(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((language / "config.json").read_text())
    assert_refused(monkeypatch, capsys, tmp_path / "o", "no *.safetensors weights", *merge_args(base, safety, empty))


def test_unreachable_hub_id_suggests_a_local_path(monkeypatch, capsys, triple, tmp_path):
    base, safety, _ = triple
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = assert_refused(monkeypatch, capsys, tmp_path / "o", "cannot fetch 'org/missing-model'",
                         *merge_args(base, safety, "org/missing-model"))
    assert "language model" in err and "local folder" in err


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: os.remove(d / "config.json"), "has no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "is unreadable"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), "no 'architectures' entry"),
        (lambda d: (d / "config.json").write_text(json.dumps({"architectures": ["FancyNetForCausalLM"]})),
         "unsupported architecture FancyNetForCausalLM; supported: Gemma2ForCausalLM"),
    ],
)
def test_bad_config(monkeypatch, capsys, triple, tmp_path, mutate, expected):
    base, safety, language = triple
    bad = copy_model(language, tmp_path / "bad")
    mutate(bad)
    assert_refused(monkeypatch, capsys, tmp_path / "o", expected, *merge_args(base, safety, bad))


def test_different_architectures(monkeypatch, capsys, triple, tmp_path):
    base, safety, _ = triple
    other = tiny.make_model(tmp_path / "qwen", "qwen2", layers=3, tokenizer=False)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "architectures differ", *merge_args(base, safety, other))


def test_different_layer_counts(monkeypatch, capsys, triple, tmp_path):
    base, safety, _ = triple
    other = tiny.make_model(tmp_path / "deeper", "llama", layers=4, tokenizer=False)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "num_hidden_layers differs: language has 4, base has 3",
                   *merge_args(base, safety, other))


def test_extended_vocabulary_is_named(monkeypatch, capsys, triple, tmp_path):
    from transformers import AutoModelForCausalLM

    base, safety, language = triple
    model = AutoModelForCausalLM.from_pretrained(language)
    model.resize_token_embeddings(400)
    model.save_pretrained(tmp_path / "extended")
    err = assert_refused(monkeypatch, capsys, tmp_path / "o", "vocabulary sizes differ: language has 400, base has 320",
                         *merge_args(base, safety, tmp_path / "extended"))
    assert "extended tokenizer" in err


def _rewrite(folder, fn):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    _rewrite(bad, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    assert_refused(monkeypatch, capsys, tmp_path / "o",
                   "tensor model.layers.1.mlp.up_proj.weight is in the language model but missing from the safety model",
                   *merge_args(base, bad, language))


def test_mismatched_shape_names_tensor_and_both_shapes(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    _rewrite(bad, lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(64, 64, dtype=torch.bfloat16)))
    assert_refused(monkeypatch, capsys, tmp_path / "o",
                   "tensor model.layers.0.mlp.up_proj.weight has shape [128, 64] in the language model and [64, 64] in the safety model",
                   *merge_args(base, bad, language))


def test_truncated_shard(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    path = bad / "model.safetensors"
    os.truncate(path, path.stat().st_size - 1000)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "truncated", *merge_args(base, bad, language))


def test_header_claiming_more_bytes_than_the_file(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    path = bad / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    path.write_bytes(bytes(data))
    assert_refused(monkeypatch, capsys, tmp_path / "o", "header claims", *merge_args(base, bad, language))


def test_header_over_100mb(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + b"{}")
    assert_refused(monkeypatch, capsys, tmp_path / "o", "over the 104857600-byte limit", *merge_args(base, bad, language))


def _indexed(src, dst, target):
    bad = copy_model(src, dst)
    tensors = load_file(bad / "model.safetensors")
    (bad / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: target for n in tensors}}))
    return bad


def test_index_naming_missing_shard(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = _indexed(safety, tmp_path / "bad", "model-00002-of-00002.safetensors")
    assert_refused(monkeypatch, capsys, tmp_path / "o", "names shard 'model-00002-of-00002.safetensors', which is missing",
                   *merge_args(base, bad, language))


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd"])
def test_index_pointing_outside_is_refused(monkeypatch, capsys, triple, tmp_path, target):
    base, safety, language = triple
    bad = _indexed(safety, tmp_path / "bad", target)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "points outside the model folder; refused",
                   *merge_args(base, bad, language))


def test_symlink_leading_outside_is_refused(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.move(bad / "model.safetensors", elsewhere)
    (bad / "model.safetensors").symlink_to(elsewhere)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "outside the model folder; refused", *merge_args(base, bad, language))


def test_hub_cache_symlinks_into_blobs_are_allowed(triple, tmp_path):
    """A hub snapshot's files are symlinks into the repo's blobs folder: that is not 'outside'."""
    from safeswap.read.checkpoint import Checkpoint

    _, _, language = triple
    snapshot = fake_hub_snapshot(language, tmp_path)
    with Checkpoint(snapshot) as ckpt:
        assert "model.embed_tokens.weight" in ckpt.tensors


def test_nan_is_refused_unless_allowed(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(safety, tmp_path / "bad")

    def poison(t):
        t["model.layers.2.input_layernorm.weight"][3] = float("nan")  # a layer the merge keeps from the language expert

    _rewrite(bad, poison)
    args = merge_args(base, bad, language)
    err = assert_refused(monkeypatch, capsys, tmp_path / "o", "model.layers.2.input_layernorm.weight holds NaN or Inf values in the safety model", *args)
    assert "--allow-nonfinite" in err
    code, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "o", "--allow-nonfinite")
    assert code == 0, err
    assert (tmp_path / "o" / "model.safetensors").exists()


def test_overflow_of_a_narrowing_dtype_is_caught_after_an_analysis(monkeypatch, capsys, triple, tmp_path):
    """Inputs the analysis found finite can still overflow float16: that cast is checked."""
    base, safety, language = triple
    big_s, big_l = copy_model(safety, tmp_path / "s"), copy_model(language, tmp_path / "l")
    for folder in (big_s, big_l):
        _rewrite(folder, lambda t: t["model.embed_tokens.weight"].__setitem__((0, 0), 1e30))  # bfloat16 holds it
    assert_refused(monkeypatch, capsys, tmp_path / "o", "merging tensor model.embed_tokens.weight produced NaN or Inf",
                   *merge_args(base, big_s, big_l), "--dtype", "float16")


def test_nan_in_a_taken_tensor_is_caught_by_the_merge(monkeypatch, capsys, triple, tmp_path):
    """Methods without an analysis pass (here a plan replay) still refuse NaN in what they write."""
    import safeswap

    base, safety, language = triple
    plan = tmp_path / "plan.yaml"
    safeswap.plan(base, safety, language, out=plan, granularity="layer")
    bad = copy_model(safety, tmp_path / "bad")

    def poison(t):
        t["model.layers.1.post_attention_layernorm.weight"][0] = float("inf")  # layer 1 is taken from safety

    _rewrite(bad, poison)
    text = plan.read_text().replace(str(safety), str(bad))
    plan.write_text(text.replace(__import__("yaml").safe_load(text)["models"]["safety"]["fingerprint"], ""))
    assert_refused(monkeypatch, capsys, tmp_path / "o",
                   "model.layers.1.post_attention_layernorm.weight holds NaN or Inf values in the safety model",
                   "merge", "--plan", plan)


def test_inf_in_a_scored_tensor_is_refused(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = copy_model(base, tmp_path / "bad")

    def poison(t):
        t["model.layers.0.self_attn.q_proj.weight"][0, 0] = float("inf")

    _rewrite(bad, poison)
    assert_refused(monkeypatch, capsys, tmp_path / "o",
                   "model.layers.0.self_attn.q_proj.weight holds NaN or Inf values in the base model",
                   *merge_args(bad, safety, language))


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--tau", "-0.5"], "tau must be >= 0"),
        (["--alpha", "1.2"], "alpha must lie in [0, 1]"),
        (["--granularity", "heads"], "unknown granularity 'heads'"),
        (["--outside-layers", "mix"], "--outside-layers must be one of"),
        (["--dtype", "int8"], "unsupported --dtype"),
        (["--shard-size", "lots"], "cannot read size 'lots'"),
    ],
)
def test_bad_flags(monkeypatch, capsys, triple, tmp_path, flags, expected):
    assert_refused(monkeypatch, capsys, tmp_path / "o", expected, *merge_args(*triple), *flags)


def test_plan_for_other_models_is_refused(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    plan = tmp_path / "plan.yaml"
    code, err = run_cli(monkeypatch, capsys, "plan", "--base", base, "--safety", safety, "--language", language, "--out", plan)
    assert code == 0, err
    other = tiny.perturb(base, tmp_path / "other", {}, seed=9)
    assert_refused(monkeypatch, capsys, tmp_path / "o", "plan was made for a different safety model",
                   "merge", "--plan", plan, "--safety", other)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("format: safeswap.plan/1\nmethod: adaptive\n", "missing or bad field"),
        ("[unclosed", "is malformed"),
        ("just a string", "is not a safeswap plan"),
    ],
)
def test_malformed_plan(monkeypatch, capsys, tmp_path, text, expected):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    assert_refused(monkeypatch, capsys, tmp_path / "o", expected, "merge", "--plan", plan)


def test_edited_plan_with_a_bad_decision_is_refused(monkeypatch, capsys, triple, tmp_path):
    import safeswap

    plan = tmp_path / "plan.yaml"
    safeswap.plan(*triple, out=plan)
    plan.write_text(plan.read_text().replace("decision: language", "decision: english", 1))
    assert_refused(monkeypatch, capsys, tmp_path / "o", "has decision 'english'", "merge", "--plan", plan)


def test_existing_output_needs_force(monkeypatch, capsys, triple, tmp_path):
    out = tmp_path / "o"
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple), "--out", out)
    assert code == 0, err
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple), "--out", out)
    assert code == 2 and "exists and is not empty; use --force" in err
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple), "--out", out, "--force")
    assert code == 0 and (out / "model.safetensors").exists()


def test_force_never_replaces_a_folder_safeswap_did_not_write(monkeypatch, capsys, triple, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(monkeypatch, capsys, *merge_args(*triple), "--out", out, "--force")
    assert code == 2 and "--force replaces only an empty folder or one safeswap wrote" in err
    assert "it has no safeswap-manifest.json" in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"


def test_output_inside_an_input_is_refused(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    lang = copy_model(language, tmp_path / "lang")
    code, err = run_cli(monkeypatch, capsys, *merge_args(base, safety, lang), "--out", lang / "merged")
    assert code == 2 and "lies inside the language model's folder" in err
    assert not (lang / "merged").exists()


def test_pickle_weights_are_never_loaded(monkeypatch, capsys, triple, tmp_path):
    base, safety, language = triple
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(language / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    err = assert_refused(monkeypatch, capsys, tmp_path / "o", "only pickle weights (pytorch_model.bin)",
                         *merge_args(base, safety, bad))
    assert "runs arbitrary code" in err and "save_pretrained" in err


def test_remote_code_is_neither_copied_nor_referenced(triple, tmp_path):
    import safeswap

    base, safety, language = triple
    lang = copy_model(language, tmp_path / "lang")
    (lang / "modeling_evil.py").write_text("raise SystemExit('executed')\n")
    (lang / "pytorch_model.bin").write_bytes(b"junk")
    config = json.loads((lang / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (lang / "config.json").write_text(json.dumps(config))
    out = safeswap.merge(base, safety, lang, out=tmp_path / "o")
    names = {p.name for p in out.iterdir()}
    assert "modeling_evil.py" not in names and "pytorch_model.bin" not in names
    assert "auto_map" not in json.loads((out / "config.json").read_text())


def test_full_disk_cleans_up_and_says_how_much_is_needed(monkeypatch, triple, tmp_path):
    import errno

    import safeswap
    from safeswap.write import writer
    from safeswap.errors import SafeswapError

    calls = {"n": 0}
    real = writer.ShardedWriter._emit

    def failing(self, data, *source):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *source)

    monkeypatch.setattr(writer.ShardedWriter, "_emit", failing)
    with pytest.raises(SafeswapError, match=r"disk full while writing .*partial output was removed; the merge needs 0\.00 GB"):
        safeswap.merge(*triple, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if ".safeswap-tmp-" in p.name]


def test_free_space_is_checked_before_writing(monkeypatch, triple, tmp_path):
    import collections

    import safeswap
    from safeswap.errors import SafeswapError
    from safeswap.write import destination

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(destination.shutil, "disk_usage", lambda p: usage(10**6, 10**6, 1000))
    with pytest.raises(SafeswapError, match="not enough disk space .* the merge needs 0.00 GB, 0.00 GB is free"):
        safeswap.merge(*triple, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
