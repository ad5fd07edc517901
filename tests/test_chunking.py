"""Chunked streaming gives the same bytes and statistics whatever the chunk size,
and the fast NaN/Inf test agrees with torch.isfinite."""

import pytest
import torch
import yaml

import safeswap
import tiny
from safeswap.decide import specialization
from safeswap.write import engine
from safeswap.read.chunks import all_finite


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_all_finite_matches_isfinite(dtype):
    values = torch.randn(1001).to(dtype)
    assert all_finite(values)
    info = torch.finfo(dtype)
    assert all_finite(torch.tensor([info.max, -info.max, info.tiny, 0.0, -0.0], dtype=dtype))
    assert all_finite(torch.tensor([], dtype=dtype))
    for bad in (float("nan"), float("inf"), float("-inf")):
        poisoned = values.clone()
        poisoned[777] = bad
        assert not all_finite(poisoned), (dtype, bad)
        assert not all_finite(poisoned.view(7, 143)[:, 1:])  # a non-contiguous view is checked too
    assert all_finite(torch.arange(10))  # integers are always finite


def _merge(triple, out):
    base, safety, language = triple
    safeswap.merge(base, safety, language, out=out)
    shards = {p.name: p.read_bytes() for p in sorted(out.glob("*.safetensors"))}
    plan = (out / "safeswap-plan.yaml").read_text()
    return shards, plan


def test_chunks_smaller_than_a_row_give_identical_output(tmp_path, monkeypatch):
    """Seven-element chunks are smaller than any row: every buffer must still hold a whole row."""
    triple = tiny.make_triple(tmp_path / "models", "llama", layers=2)
    reference = _merge(triple, tmp_path / "default")
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 7)
    monkeypatch.setattr(specialization, "CHUNK_ELEMENTS", 7)
    small = _merge(triple, tmp_path / "small")
    assert small[0] == reference[0]
    # The plan records d per unit: equal up to float rounding of the chunked sums.
    ref_units = {u["unit"]: u for u in yaml.safe_load(reference[1])["units"]}
    for unit in yaml.safe_load(small[1])["units"]:
        assert unit["decision"] == ref_units[unit["unit"]]["decision"]
        assert unit["d"] == pytest.approx(ref_units[unit["unit"]]["d"], rel=1e-5, abs=1e-9)


def test_reading_into_a_too_small_buffer_is_refused(tmp_path):
    from safeswap.read.checkpoint import Checkpoint

    _, _, language = tiny.make_triple(tmp_path / "models", "llama", layers=2)
    with Checkpoint(language) as ckpt:
        info = ckpt.tensors["model.embed_tokens.weight"]
        with pytest.raises(ValueError, match="too small"):
            ckpt.read_raw(info.name, 0, 2, out=torch.empty(info.row_bytes, dtype=torch.uint8))
        assert info.chunk_bytes(3) == 3 * info.row_bytes
        assert info.chunk_bytes(None) == info.nbytes
