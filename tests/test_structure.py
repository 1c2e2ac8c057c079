"""The layout the architecture doc promises: a folder per stage, small modules, imports that only go
down (no cycles, also none hidden in function-level imports), the render side kept out of the core."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"fmolab": ROOT / "platform" / "fmolab", "render_cluster": ROOT / "render_cluster"}
MAX_LINES = 330  # "about 300": a module that outgrows this is doing two jobs
STAGES = ("config", "data", "models", "losses", "train", "tune", "inference", "evaluation", "tracking")
RENDER_IMPORTERS = {"fmolab.cli.commands", "fmolab.demo"}  # the entry points; nothing else in fmolab needs Blender


def modules() -> dict[str, Path]:
    out = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, at any depth of the file (function-level ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # "from pkg import sub" imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_only_the_entry_points_import_the_render_cluster():
    offenders = {n for n, deps in GRAPH.items() if n.startswith("fmolab") and n not in RENDER_IMPORTERS
                 and any(d.startswith("render_cluster") for d in deps)}
    assert not offenders, offenders


def test_every_stage_has_its_folder_and_no_module_is_oversized():
    for stage in STAGES:
        assert (SOURCES["fmolab"] / stage / "__init__.py").exists(), stage
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items() if len(p.read_text().splitlines()) > MAX_LINES}
    assert not big, f"split these (or say why one cohesive thing needs the size): {big}"
    flat = sorted(p.stem for p in SOURCES["fmolab"].glob("*.py") if p.stem != "__init__")
    assert len(flat) <= 10, f"modules flat in fmolab/ (the core only): {flat}"


def test_the_graph_sees_function_level_imports():
    """The checks above are only as good as the graph: a function-level import must be an edge."""
    assert "fmolab.inference.predictor" in GRAPH["fmolab.inference.mlflow_model"]  # imported inside load_context
    assert "fmolab.train.loop" in GRAPH["fmolab.train.launch"]  # imported inside torch_trainer
