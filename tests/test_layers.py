"""Imports go only downward (``service`` -> ``trainers`` -> ``data_pipelines``) and no module
imports itself back through others: every ``import`` in the packages is read from the source,
those inside functions too (a cycle hidden behind a function-level import is still a cycle);
only ``if TYPE_CHECKING:`` blocks, which never run, are left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data_pipelines", "trainers", "service")  # lowest first
LAYER = {name: i for i, name in enumerate(PACKAGES)}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for body in node.body for n in ast.walk(body)}
    return skip


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        edges = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in map(resolve, targets) if t and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        for d in deps
        if LAYER[d.partition(".")[0]] > LAYER[m.partition(".")[0]]
    ]
    assert not upward, upward


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_walk_sees_function_level_imports() -> None:
    """The walk itself: a cycle made only of imports inside functions is found."""
    graph = _graph()
    assert "trainers.worker" in graph["trainers.trainer"]  # imported inside build_trainer
    toy = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycles(toy) == [["a", "b"]]


def test_routes_never_ask_which_backend_runs() -> None:
    """The control plane's routes talk to the scheduler only; which backend runs the drivers
    (local processes, Ray jobs) is the scheduler's business."""
    graph = _graph()
    routes = [m for m in graph if m.startswith("service.api.routes")]
    assert routes
    backends = {m for m in graph if m.startswith("service.backends")}
    assert {m: sorted(graph[m] & backends) for m in routes if graph[m] & backends} == {}
    for path in (ROOT / "service").rglob("*.py"):
        if path.parent.name != "backends" and path.name != "scheduler.py":
            assert "Backend)" not in path.read_text(), path  # no isinstance on a backend


def test_the_control_plane_is_layered_inside_service() -> None:
    """``service.api`` (HTTP) sits on ``service.core`` (store, scheduler, settings) and
    ``service.backends``; neither of those imports the API, and the user-facing client side
    (``service.client``, ``service.tables``) imports nothing of the control plane."""
    graph = _graph()
    below_api = [m for m in graph if m.startswith(("service.core", "service.backends"))]
    assert below_api
    up = {m: sorted(d for d in graph[m] if d.startswith("service.api")) for m in below_api}
    assert {m: d for m, d in up.items() if d} == {}
    plane = ("service.api", "service.core", "service.backends")
    for module in ("service.client", "service.tables"):
        assert sorted(d for d in graph[module] if d.startswith(plane)) == [], module


def test_the_training_library_never_imports_reproductions_or_benchmarks() -> None:
    """``trainers.reproductions`` (the papers' experiments) and ``trainers.benchmarks`` sit
    on the training library; only the command line (``trainers.cli``) mounts the benchmarks."""
    graph = _graph()
    above = ("trainers.reproductions", "trainers.benchmarks")
    library = [m for m in graph if m.startswith("trainers") and not m.startswith(above)]
    assert "trainers.worker" in library and "trainers.reproductions.reproduce" in graph
    up = {m: sorted(d for d in graph[m] if d.startswith(above)) for m in library}
    assert {m: d for m, d in up.items() if d and m != "trainers.cli"} == {}
