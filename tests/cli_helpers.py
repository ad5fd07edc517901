"""Test helpers: the CLI run in-process, a refusal checked (one line, exit 2, nothing left), model folders copied or laid out as a hub cache."""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from safeswap import cli


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["safeswap", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def copy_model(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def assert_refused(monkeypatch, capsys, out, expected, *args):
    code, err = run_cli(monkeypatch, capsys, *args, "--out", out)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in err, err
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in out.parent.iterdir() if ".safeswap-tmp-" in p.name]
    return err


def merge_args(base, safety, language):
    return ["merge", "--base", base, "--safety", safety, "--language", language]


def fake_hub_snapshot(model, hub):
    """A Hugging Face cache layout under hub/: snapshots/<rev>/ whose files are symlinks into ../../blobs."""
    repo = hub / "models--org--name"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in model.iterdir():
        shutil.copy(f, repo / "blobs" / f"blob-{f.name}")
        (snapshot / f.name).symlink_to(f"../../blobs/blob-{f.name}")
    return snapshot


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links not followed): an input before and after a refused command."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def refused(monkeypatch, capsys, args, expected, watched, out=None):
    """Run the CLI; assert a one-line refusal (exit 2, no traceback) naming each expected part, nothing under
    `watched` changed and, with `out`, nothing left at the output path (nor a temporary folder beside it)."""
    before = [tree_hashes(w) for w in watched]
    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for part in [expected] if isinstance(expected, str) else expected:
        assert part in err, err
    assert [tree_hashes(w) for w in watched] == before
    if out is not None:
        assert not out.exists() and not [p for p in out.parent.iterdir() if ".safeswap-tmp-" in p.name]
    return err
