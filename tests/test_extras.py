"""Each extra of pyproject.toml declares what its feature's code imports, so `pip install -e ".[X]"` is enough.

Static: the source is parsed (AST), never imported. For a feature, the walk starts at
the modules the extra exists for and follows every safeswap import, lazy ones inside
functions included, into the rest of the package, but not into modules that belong to
another extra (the vllm backend is reached from make_backend, yet only runs with
--backend vllm). Every third-party name met must be a distribution named directly in
the core dependencies or in that extra: something that merely arrives through another
requirement (accelerate through peft, say) can stop arriving with that package's next
release.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TESTS = ROOT / "tests"

# The modules (dotted prefixes) each extra is for; "core" is everything no extra claims.
FEATURES = {
    "demo": ("safeswap.demo",),
    "eval": ("safeswap.evaluation.general", "safeswap.evaluation.general_cli"),
    "vllm": ("safeswap.evaluation.backends.vllm",),
    "ray": ("safeswap.search.executors",),  # before "search": the first matching prefix owns a module
    "search": ("safeswap.search",),
}
# Imports that are optional where they stand: the code falls back without them. Each
# still has to be declared by the extra that turns it on.
OPTIONAL = {("safeswap.evaluation.multijail", "datasets"): "eval"}  # hub MultiJail, else the shipped copy
# Distributions a call needs without importing them: transformers loads a GGUF file only
# with gguf and accelerate installed, and places weights with device_map through accelerate.
IMPLIED_BY_KEYWORD = {"gguf_file": ("accelerate", "gguf"), "device_map": ("accelerate",)}
# Packages whose parts that safeswap runs import more than they declare: lm-eval's hf
# model (`safeswap eval general`) imports accelerate, which lm-eval lists only under [hf].
IMPLIED_BY_IMPORT = {"lm_eval": ("accelerate",)}
# Import names of distributions that may not be installed here (vLLM needs a GPU build; an
# install without some extra lacks its packages).
KNOWN_DISTRIBUTIONS = {
    "vllm": "vllm", "lm_eval": "lm-eval", "datasets": "datasets", "yaml": "pyyaml", "gguf": "gguf", "peft": "peft",
    "pip": "pip", "hypothesis": "hypothesis", "optuna": "optuna", "ray": "ray",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group(0)) for r in requirements}


@lru_cache(maxsize=None)
def project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def declared(extras: tuple[str, ...]) -> set[str]:
    """Distributions named by the core dependencies and the given extras."""
    names = requirement_names(project()["dependencies"])
    for extra in extras:
        names |= requirement_names(project()["optional-dependencies"][extra])
    return names


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every safeswap module by dotted name."""
    found = {}
    for path in (SRC / "safeswap").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def owner(module: str) -> str:
    for feature, prefixes in FEATURES.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return feature
    return "core"


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _subprocess_modules(node: ast.List) -> list[str]:
    """'pip' from a command list such as [sys.executable, "-m", "pip", ...]."""
    items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
    return [items[i + 1] for i, item in enumerate(items[:-1]) if item == "-m" and isinstance(items[i + 1], str)]


@lru_cache(maxsize=None)
def scan(path: Path, module: str = "") -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(safeswap modules, third-party import names, implied distributions) of one file."""
    internal, external, implied = set(), set(), set()

    def add(name: str) -> None:
        top = name.split(".")[0]
        if top == "safeswap":
            parts = name.split(".")
            internal.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules())
        elif top and top not in sys.stdlib_module_names and top != "__future__":
            external.add(top)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module) if module else node.module or ""
            if not node.level or module:
                add(base)
                for alias in node.names:
                    add(f"{base}.{alias.name}")
        elif isinstance(node, ast.keyword) and node.arg in IMPLIED_BY_KEYWORD:
            implied.update(IMPLIED_BY_KEYWORD[node.arg])
        elif isinstance(node, ast.List):
            for name in _subprocess_modules(node):
                add(name)
    return frozenset(internal), frozenset(external), frozenset(implied)


def walk(feature: str) -> dict[str, set[str]]:
    """Third-party import names (and implied distributions) of a feature -> the modules that need them."""
    todo = [m for m in modules() if owner(m) == feature]
    seen, needs = set(todo), {}
    while todo:
        module = todo.pop()
        internal, external, implied = scan(modules()[module], module)
        for name in external:
            optional_for = OPTIONAL.get((module, name))
            if optional_for is None or optional_for == feature:
                needs.setdefault(name, set()).add(module)
        for name in implied.union(*(IMPLIED_BY_IMPORT.get(n, ()) for n in external)):
            needs.setdefault(f"dist:{name}", set()).add(module)
        for other in internal - seen:
            if owner(other) in ("core", feature):
                seen.add(other)
                todo.append(other)
    return needs


@lru_cache(maxsize=None)
def installed() -> dict[str, list[str]]:
    return packages_distributions()


def distributions(name: str) -> set[str]:
    """Distributions that provide an import name ('dist:X' names distribution X itself)."""
    if name.startswith("dist:"):
        return {normalise(name[5:])}
    found = {normalise(d) for d in installed().get(name, ())}
    if name in KNOWN_DISTRIBUTIONS:
        found.add(normalise(KNOWN_DISTRIBUTIONS[name]))
    if not found:
        pytest.fail(f"cannot tell which distribution provides {name!r}: add it to KNOWN_DISTRIBUTIONS")
    return found


def undeclared(needs: dict[str, set[str]], extras: tuple[str, ...]) -> list[str]:
    allowed = declared(extras)
    return sorted(
        f"{name.removeprefix('dist:')} (needed by {', '.join(sorted(where))})"
        for name, where in needs.items() if not distributions(name) & allowed
    )


def test_core_imports_only_core_dependencies():
    missing = undeclared(walk("core"), ())
    assert not missing, f"pip install -e . lacks: {'; '.join(missing)}"


@pytest.mark.parametrize("extra", sorted(FEATURES))
def test_each_extra_declares_what_its_feature_imports(extra):
    missing = undeclared(walk(extra), (extra,))
    assert not missing, f"pip install -e '.[{extra}]' lacks: {'; '.join(missing)}"


def test_optional_imports_are_declared_by_their_extra():
    for (module, name), extra in OPTIONAL.items():
        assert name in scan(modules()[module], module)[1], f"{module} no longer imports {name}: drop it from OPTIONAL"
        assert distributions(name) & declared((extra,)), f"{name} (optional in {module}) is not in [{extra}]"


def readme_test_extras() -> tuple[str, ...]:
    """The extras that the README's test command (the one CI runs) installs."""
    command = re.search(r'pip install -q -e "\.\[([a-z,]+)\]" && python -m pytest', (ROOT / "README.md").read_text())
    assert command, "README has no test command of the form pip install -q -e \".[...]\" && python -m pytest"
    return tuple(command.group(1).split(","))


def test_test_extra_declares_what_the_tests_import():
    """Tests may use what the README's test command installs; importorskip'd names are optional."""
    extras = readme_test_extras()
    assert "test" in extras
    local = {path.stem for path in TESTS.glob("*.py")}
    needs: dict[str, set[str]] = {}
    for path in TESTS.rglob("*.py"):
        for name in scan(path)[1] - local:
            needs.setdefault(name, set()).add(path.name)
    missing = undeclared(needs, extras)
    assert not missing, f"the README's test command (.[{','.join(extras)}]) lacks: {'; '.join(missing)}"


def test_every_extra_is_checked():
    assert set(project()["optional-dependencies"]) == set(FEATURES) | {"test"}


def test_the_walk_sees_lazy_imports_and_stops_at_other_extras():
    """Guards for the checks above: the known needs must be found, and the vllm backend kept out of the demo."""
    assert {"peft", "dist:accelerate", "dist:gguf", "pip", "torch"} <= set(walk("demo"))
    assert {"lm_eval", "dist:accelerate"} <= set(walk("eval")) and "vllm" in walk("vllm")
    assert not {"vllm", "lm_eval", "datasets"} & set(walk("core"))
    assert "peft" in walk("core")  # an adapter folder runs on its base through PEFT (hf backend, search probe)
    assert "vllm" not in walk("demo") and "lm_eval" not in walk("demo")


def test_ci_ends_with_the_readme_test_command_verbatim():
    command = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.endswith("python -m pytest -q"))
    assert (ROOT / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1] == command
