"""The structure stays readable: no import circles between hreg's modules, and light imports where they matter."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """hreg modules that ``path`` imports, anywhere in it (deferred imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def test_no_module_imports_a_module_that_imports_it_back():
    files = [p for p in SRC.rglob("*.py") if "hreg" in p.relative_to(SRC).parts[0]]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) - {module_name(p)} for p in files}
    # A package's __init__ may import its own modules (downward); a module importing its package is upward.
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, sorted({" -> ".join(c) for c in cycles})


def imported_by(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return set(out.split())


def test_a_run_without_tensorboard_or_search_imports_neither():
    loaded = imported_by("from hreg.run import run; from hreg.build import build_hooks")
    assert "hreg.monitor" not in loaded and "torch.utils.tensorboard" not in loaded
    assert not {m for m in loaded if m.startswith(("optuna", "matplotlib", "scipy", "torchvision", "lightning"))}


ENGINES = {"native": "hreg.engines.native", "lightning": "hreg.engines.lightning", "stacked": "hreg.engines.stacked"}


def test_no_engine_imports_another_and_no_hook_imports_an_engine():
    """Engines share the lifecycle (hreg.lifecycle), not each other's code; hooks see only the RunContext."""
    files = [p for p in SRC.rglob("*.py") if "hreg" in p.relative_to(SRC).parts[0]]
    modules = {module_name(p) for p in files}

    def engine_of(module: str) -> str | None:
        return next((name for name, root in ENGINES.items() if module == root or module.startswith(root + ".")), None)

    crossings = []
    for path in files:
        module = module_name(path)
        mine = engine_of(module)
        if mine is None:  # the dispatcher (hreg.engines) and entry points may import any engine
            continue
        for imported in imports_of(path, modules):
            theirs = engine_of(imported)
            if theirs and theirs != mine:
                crossings.append(f"{module} -> {imported}")
    assert not crossings, crossings
    hooks = ["hreg.hooks", "hreg.lifecycle", "hreg.monitor", "hreg.checkpoint", "hreg.early_stopping", "hreg.search.trial"]
    for name in hooks:
        path = SRC / (name.replace(".", "/") + ".py")
        assert not {m for m in imports_of(path, modules) if m.startswith("hreg.engines")}, name


def test_the_files_that_config_comments_name_exist():
    """A comment in conf/ that points a reader at ``src/...py`` or ``benchmarks/...`` points at a real file."""
    named = {(path.relative_to(REPO), match.group(0)) for path in (REPO / "conf").rglob("*.yaml")
             for match in re.finditer(r"(?:src|benchmarks|tests)/[\w/.-]+\.(?:py|md|sh)", path.read_text())}
    assert named, "the configs name no file: the pattern is wrong"
    assert [(str(path), name) for path, name in sorted(named) if not (REPO / name).exists()] == []
