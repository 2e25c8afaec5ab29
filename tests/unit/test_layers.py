"""No import cycles in the daemon: every module can be understood (and replaced) from below.

Every `import` counts, wherever it stands: at module level, inside a function (a lazy import only
hides a cycle from the interpreter, not from a reader) and under `if TYPE_CHECKING:`. A package
imports its `__init__`, so `dockd.journal.machine` importing `dockd.journal` is not a cycle by
itself; the check works on modules, and names the whole loop when it finds one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "daemon"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> Iterator[str]:
    """The dockd modules `path` imports (a `from pkg import name` counts as pkg.name if a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # Credit the deepest dockd module the import names (a symbol lands on its module).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    files = sorted((PACKAGE_ROOT / "dockd").rglob("*.py"))
    known = {module_name(f) for f in files}
    graph = {module_name(f): set(imported_modules(f, known)) for f in files}
    # A module importing its own package's __init__ (or an ancestor's) is how Python packages
    # work; the edge back from __init__ to its children is the real dependency.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_checker_follows_relative_and_lazy_imports() -> None:
    graph = import_graph()
    assert "dockd.transport.uploader" in graph["dockd.transport.tus"]  # `from . import uploader`
    assert "dockd.config" in graph["dockd.dockctl.audit_cli"]  # imported inside a function


def test_the_daemon_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (each line one loop):\n" + "\n".join(
        " <-> ".join(loop) for loop in found
    )


def test_the_pipeline_and_the_manifest_sender_know_only_the_uploader_seam() -> None:
    # They hold an Uploader and catch its errors; HTTP and tus stay inside transport/tus.py.
    graph = import_graph()
    for module in ("dockd.pipeline", "dockd.custody.attest"):
        assert "dockd.transport.uploader" in graph[module]
        assert "dockd.transport.tus" not in graph[module], module
        source = (PACKAGE_ROOT / (module.replace(".", "/") + ".py")).read_text()
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (
                node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
            )
        }
        assert "aiohttp" not in imported, module
