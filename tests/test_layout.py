"""The package's shape: no import cycle, no import of the package face, stages that only look down.

Every module under src/safeswap is parsed (never imported), lazy imports inside
functions included, so an import added anywhere is seen here.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "safeswap"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every safeswap import in the file; `from a import b` counts b when b is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "safeswap"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "safeswap":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.append((child if child in MODULES else node.module, node.lineno))
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_no_module_imports_the_package_face():
    offenders = [f"{name}:{line}" for name, edges in GRAPH.items() for target, line in edges
                 if target == "safeswap" and name != "safeswap"]
    assert not offenders, f"import from the module that defines the name, not from safeswap: {offenders}"


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target, _ in GRAPH.get(node, []):
            if target not in GRAPH or target == node:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "safeswap.files", GRAPH["safeswap.files"] + [("safeswap.api", 1)])
    assert find_cycle() is not None


# What each stage may import besides itself (and the standard library and third parties).
FOUNDATION = {"safeswap.version", "safeswap.errors", "safeswap.threads", "safeswap.progress", "safeswap.files",
              "safeswap.stage_times"}
ALLOWED = {
    "safeswap.read": FOUNDATION,
    "safeswap.decide": FOUNDATION | {"safeswap.read", "safeswap.merged_folder"},
    "safeswap.write": FOUNDATION | {"safeswap.read", "safeswap.decide", "safeswap.merged_folder"},
}


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_each_stage_imports_only_the_stages_below(stage):
    wrong = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items() if room(name) == stage
             for target, line in edges if room(target) not in ALLOWED[stage] | {stage}]
    assert not wrong, wrong


def test_every_module_says_what_it_is_for():
    silent = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert not silent, silent


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


def test_importing_the_package_loads_no_torch():
    code = "import sys, safeswap; print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
