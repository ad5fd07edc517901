"""Killed merges leave nothing at the destination; verify catches tampering; runs are reproducible."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import safeswap
import tiny
from safeswap.errors import SafeswapError


def _synthetic_llama(folder: Path, seed: int, layers: int = 4, hidden: int = 512, vocab: int = 32000) -> Path:
    """A Llama-shaped checkpoint big enough (~100 MB) that a merge takes a while to write."""
    gen = torch.Generator().manual_seed(seed)
    base_gen = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({p + n: (hidden, hidden) for n in ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                           "self_attn.v_proj.weight", "self_attn.o_proj.weight")})
        tensors.update({p + "mlp.gate_proj.weight": (4 * hidden, hidden), p + "mlp.up_proj.weight": (4 * hidden, hidden),
                        p + "mlp.down_proj.weight": (hidden, 4 * hidden)})
        tensors.update({p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
    data = {n: (torch.randn(s, generator=base_gen) + 0.1 * torch.randn(s, generator=gen)).to(torch.bfloat16)
            for n, s in tensors.items()}
    folder.mkdir(parents=True)
    save_file(data, folder / "model.safetensors", metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": 4 * hidden, "num_hidden_layers": layers, "num_attention_heads": 8,
              "num_key_value_heads": 8, "vocab_size": vocab, "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def big_triple(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    return [_synthetic_llama(root / r, seed) for r, seed in (("base", 0), ("safety", 1), ("language", 2))]


def _start_merge(triple, out: Path) -> subprocess.Popen:
    base, safety, language = triple
    cmd = [sys.executable, "-m", "safeswap.cli", "merge", "--base", str(base), "--safety", str(safety),
           "--language", str(language), "--out", str(out), "--shard-size", "4MB"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_partial_output(out: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    """The temporary folder beside out, once it holds at least two finished shards."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for tmp in out.parent.glob(f".{out.name}.safeswap-tmp-*"):
            if len(list(tmp.glob("*.safetensors"))) >= 2:
                return tmp
        if proc.poll() is not None:
            pytest.fail(f"merge ended before it could be interrupted: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("merge never started writing")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_merge_leaves_nothing_at_the_destination(big_triple, tmp_path, sig):
    out = tmp_path / "merged"
    proc = _start_merge(big_triple, out)
    tmp = _wait_for_partial_output(out, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    if sig == signal.SIGKILL:
        assert tmp.exists()  # nothing can clean up after SIGKILL...
        safeswap.merge(*big_triple, out=out, shard_size="4MB")  # ...so the next run does
        assert not tmp.exists()
        assert (out / "safeswap-manifest.json").exists()
    else:
        assert not tmp.exists()  # Ctrl-C and SIGTERM clean up at once


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_runs_give_identical_shards_and_manifest(big_triple, tmp_path):
    a = safeswap.merge(*big_triple, out=tmp_path / "a", shard_size="20MB")
    b = safeswap.merge(*big_triple, out=tmp_path / "b", shard_size="20MB")
    shards = sorted(p.name for p in a.glob("*.safetensors"))
    assert len(shards) > 2
    assert [_sha(a / s) for s in shards] == [_sha(b / s) for s in shards]
    manifest = json.loads((a / "safeswap-manifest.json").read_text())
    assert {s: manifest["outputs"][s]["sha256"] for s in shards} == {s: _sha(a / s) for s in shards}
    for role, folder in zip(("base", "safety", "language"), big_triple):
        entry = manifest["inputs"][role]["model.safetensors"]
        assert entry == {"size": (folder / "model.safetensors").stat().st_size, "sha256": _sha(folder / "model.safetensors")}
    assert manifest["plan_sha256"] == _sha(a / "safeswap-plan.yaml")
    assert manifest["safeswap_version"] == safeswap.__version__


@pytest.fixture
def merged(tmp_path):
    triple = tiny.make_triple(tmp_path / "m", "llama", layers=3)
    return triple, safeswap.merge(*triple, out=tmp_path / "merged", granularity="layer")


def test_verify_accepts_an_intact_merge(merged):
    from safeswap.api import verify

    _, out = merged
    counts = verify(out, inputs=True)
    assert counts["shards"] == 1 and counts["tensors"] > 10


def test_verify_names_a_tampered_shard(merged):
    from safeswap.api import verify

    _, out = merged
    shard = out / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SafeswapError, match="shard model.safetensors does not match its sha256"):
        verify(out)


def test_verify_inputs_names_a_taken_tensor_that_differs(merged):
    """Even with a manifest made consistent again, --inputs finds the altered tensor."""
    from safeswap.api import verify
    from safeswap.read.checkpoint import Checkpoint

    _, out = merged
    name = "model.layers.1.mlp.down_proj.weight"  # layer 1 is taken from the safety expert
    with Checkpoint(out) as ckpt:
        info = ckpt.tensors[name]
    shard = out / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[info.start] ^= 0x01
    shard.write_bytes(bytes(data))
    manifest = json.loads((out / "safeswap-manifest.json").read_text())
    manifest["outputs"]["model.safetensors"]["sha256"] = _sha(shard)
    (out / "safeswap-manifest.json").write_text(json.dumps(manifest))
    verify(out)  # shards match the (rewritten) manifest...
    with pytest.raises(SafeswapError, match=f"tensor {name} differs from the safety model"):
        verify(out, inputs=True)


def test_verify_cli_exit_codes(merged, monkeypatch, capsys):
    from safeswap import cli

    _, out = merged
    monkeypatch.setattr(sys, "argv", ["safeswap", "verify", str(out), "--inputs"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code in (0, None)
    assert "taken tensors byte-identical" in capsys.readouterr().out
    os.remove(out / "safeswap-manifest.json")
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "has no safeswap-manifest.json" in capsys.readouterr().err
