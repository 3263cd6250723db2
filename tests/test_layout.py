"""The shape of `edge/`: one package per stage, no import cycles, no torch, no long modules.

The import graph is read from the source (every import statement, at module level, inside
functions and under TYPE_CHECKING alike), so a cycle that only a rarely taken path would run
still fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parent.parent / "edge"
MAX_TOP_LEVEL = 12
MAX_LINES = 400
TRAINING_ONLY = ("torch", "torchvision", "timm", "ultralytics", "transformers")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(EDGE.rglob("*.py")):
        parts = path.relative_to(EDGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The edge modules `name` imports, by any import statement anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    out.add(full)
                elif base in modules:
                    out.add(base)
    out.discard(name)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules in order, the first repeated), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_walk_reads_every_form(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import edge.live.runtime\n"
        "from edge.recognize import detect\n"
        "from . import track\n"
        "if TYPE_CHECKING:\n    from edge.bundles.manifest import Manifest\n"
        "def f():\n    from edge.types import Frame\n"
    )
    mods = _modules()
    got = _imports("edge.live.loop", src, mods)
    assert got == {
        "edge.live.runtime", "edge.recognize.detect", "edge.live.track",
        "edge.bundles.manifest", "edge.types",
    }  # fmt: skip


def test_edge_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(len(v) for v in graph.values()) > 200  # the walk saw the real imports
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_edge_keeps_few_modules_at_its_top_and_none_long() -> None:
    top = sorted(p.name for p in EDGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    long = {
        str(p.relative_to(EDGE)): n
        for p in EDGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def _imported_training_libraries(module: str) -> tuple[str, str]:
    probe = (
        f"import sys, {module}\nprint(','.join(m for m in {TRAINING_ONLY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        return module, f"import failed: {done.stderr.strip().splitlines()[-1:]}"
    return module, done.stdout.strip()


@pytest.mark.slow
def test_no_edge_module_imports_torch() -> None:
    """Each module imported alone in a fresh interpreter pulls in no training library."""
    modules = [m for m in _modules() if not m.endswith("__main__")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = dict(pool.map(_imported_training_libraries, modules))
    assert len(found) == len(modules) > 80
    bad = {m: libs for m, libs in found.items() if libs}
    assert not bad, bad
