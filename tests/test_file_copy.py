"""Taken tensors are copied file to file by the kernel (write.file_copy): the same bytes, manifests and hashes
whichever way the copy goes (copy_file_range, sendfile, a plain write), and a real failure is not swallowed."""

import errno
import hashlib
import os

import pytest
import yaml

import safeswap
import tiny
from safeswap.read.architecture import family_for
from safeswap.read.checkpoint import Checkpoint
from test_merge import expected_source
from safeswap.write import file_copy


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tiny.make_triple(tmp_path_factory.mktemp("copy"), "llama", layers=4)


def refuse(monkeypatch, *names):
    """Make the named kernel copies fail as an unsupporting file system does, and forget earlier refusals."""
    monkeypatch.setattr(file_copy, "_refused", set())

    def refused(*args):
        raise OSError(errno.EXDEV, "cross-device")

    copies = [(name, refused if name in names else fn) for name, fn in file_copy._KERNEL_COPIES]
    monkeypatch.setattr(file_copy, "_KERNEL_COPIES", copies)


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".json", ".yaml")}


@pytest.mark.parametrize("refused", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_every_copy_way_writes_the_same_model(triple, tmp_path, monkeypatch, refused):
    base, safety, language = triple
    reference = tmp_path / "reference"
    safeswap.merge(base, safety, language, out=reference, shard_size="40KB")
    refuse(monkeypatch, *refused)
    out = tmp_path / "out"
    safeswap.merge(base, safety, language, out=out, shard_size="40KB")
    assert folder_bytes(out) == folder_bytes(reference)
    assert len([p for p in out.iterdir() if p.suffix == ".safetensors"]) > 1
    assert set(file_copy._refused) == set(refused)
    safeswap.verify(out, inputs=True)


def test_taken_tensors_go_through_the_kernel_copy(triple, tmp_path, monkeypatch):
    base, safety, language = triple
    monkeypatch.setattr(file_copy, "_refused", set())
    copied = []
    real = file_copy._KERNEL_COPIES[0][1]

    def counting(source, offset, dest, count):
        copied.append(count)
        return real(source, offset, dest, count)

    monkeypatch.setattr(file_copy, "_KERNEL_COPIES", [("copy_file_range", counting)] + file_copy._KERNEL_COPIES[1:])
    out = tmp_path / "out"
    safeswap.merge(base, safety, language, out=out)
    plan = yaml.safe_load((out / "safeswap-plan.yaml").read_text())
    decisions = {u["unit"]: u["decision"] for u in plan["units"]}
    with Checkpoint(out) as merged:
        family = family_for(merged.architecture)
        taken = sum(info.nbytes for name, info in merged.tensors.items()
                    if expected_source(decisions, family, name, "module") != "blend")
    assert taken > 0 and sum(copied) == taken  # every taken byte, and nothing blended


def test_append_range_appends_after_what_is_written(tmp_path):
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 64)
    dest = tmp_path / "dest"
    src_fd = os.open(source, os.O_RDONLY)
    try:
        with open(dest, "wb") as f:
            f.write(b"head")
            f.flush()
            data = source.read_bytes()[100:5000]
            file_copy.append_range(src_fd, 100, f.fileno(), data)
            f.write(b"tail")
    finally:
        os.close(src_fd)
    assert dest.read_bytes() == b"head" + source.read_bytes()[100:5000] + b"tail"


def test_a_full_disk_is_raised_not_papered_over(tmp_path, monkeypatch):
    monkeypatch.setattr(file_copy, "_refused", set())

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_copy, "_KERNEL_COPIES", [("copy_file_range", full)])
    source = tmp_path / "source"
    source.write_bytes(b"x" * 100)
    src_fd = os.open(source, os.O_RDONLY)
    try:
        with open(tmp_path / "dest", "wb") as f, pytest.raises(OSError) as e:
            file_copy.append_range(src_fd, 0, f.fileno(), b"x" * 100)
    finally:
        os.close(src_fd)
    assert e.value.errno == errno.ENOSPC
    assert not file_copy._refused


def test_the_manifest_records_the_written_shards_sha256(triple, tmp_path):
    import json

    base, safety, language = triple
    out = tmp_path / "out"
    safeswap.merge(base, safety, language, out=out, shard_size="40KB")
    manifest = json.loads((out / "safeswap-manifest.json").read_text())
    text = json.dumps(manifest)
    for shard in out.glob("*.safetensors"):
        assert hashlib.sha256(shard.read_bytes()).hexdigest() in text


def test_a_full_disk_during_a_kernel_copy_removes_the_partial_output(triple, tmp_path, monkeypatch):
    from safeswap.errors import SafeswapError

    monkeypatch.setattr(file_copy, "_refused", set())

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_copy, "_KERNEL_COPIES", [("copy_file_range", full)])
    with pytest.raises(SafeswapError, match=r"disk full while writing .*partial output was removed"):
        safeswap.merge(*triple, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if ".safeswap-tmp-" in p.name]
