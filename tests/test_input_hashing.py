"""The manifest's input hashes: computed in a child process, started early by the CLI."""

import hashlib
import subprocess
import sys

import pytest

import tiny
from safeswap.write import hasher
from safeswap.errors import SafeswapError


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    return tiny.make_triple(tmp_path_factory.mktemp("models"), "llama", layers=2)


def _expected(folder):
    return {p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in hasher.identity_files(folder)}


def test_hashes_match_hashlib(triple):
    base, safety, language = triple
    result = hasher.InputHasher({"base": base, "safety": safety, "language": language}).result()
    assert result == {"base": _expected(base), "safety": _expected(safety), "language": _expected(language)}
    assert any(name.endswith(".safetensors") for name in result["base"])
    assert "config.json" in result["base"]


def test_an_early_hasher_is_adopted_only_for_the_same_folders(triple):
    base, safety, language = triple
    hasher.start_hashing_early({"base": str(base), "safety": str(safety), "language": str(language)})
    early = hasher._early[-1]
    assert hasher.input_hasher({"base": base, "safety": safety, "language": language}) is early
    hasher.start_hashing_early({"base": str(base), "safety": str(safety), "language": str(language)})
    other = hasher.input_hasher({"base": base, "safety": safety, "language": base})
    assert other is not early and hasher._early == []
    assert other.result()["language"] == _expected(base)


def test_early_start_ignores_what_the_merge_will_refuse(tmp_path):
    hasher.start_hashing_early({"base": "org/hub-model", "safety": str(tmp_path), "language": None})
    assert hasher._early == []


def test_a_vanished_file_is_one_clear_error(triple, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(triple[0], copy)
    child = hasher.InputHasher.__new__(hasher.InputHasher)
    files = hasher.identity_files(copy)
    files[0].unlink()
    child.folders = {"base": copy}
    child._files = [("base", f) for f in files]
    child._proc = subprocess.Popen([sys.executable, "-m", "safeswap.write.hasher", *map(str, files)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(SafeswapError, match="could not hash the input files: .*No such file"):
        child.result()


def test_cli_starts_without_torch_or_matplotlib():
    """The early hash start relies on `import safeswap.cli` staying light."""
    code = "import sys, safeswap.cli; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_hashes_each_input_once(triple, tmp_path, monkeypatch):
    """The hasher the CLI starts before importing torch is the one the merge uses (relative paths too)."""
    from safeswap.cli import main

    started = []
    original = hasher.InputHasher.__init__

    def counting(self, folders):
        started.append(folders)
        original(self, folders)

    monkeypatch.setattr(hasher.InputHasher, "__init__", counting)
    base, safety, language = triple
    monkeypatch.chdir(base.parent)
    monkeypatch.setattr(sys, "argv", ["safeswap", "merge", "--base", base.name, "--safety", safety.name,
                                      "--language", language.name, "--out", str(tmp_path / "merged")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert len(started) == 1
    assert (tmp_path / "merged" / "safeswap-manifest.json").is_file()
