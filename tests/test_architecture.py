"""The package's import layers, checked on the source: no cycles, and no layer reaching up.

Every ``import``/``from ... import`` of a ``dpr_jax`` module counts, including those inside functions
(which hide cycles from the interpreter but not from readers). The layers, lowest first, are the ones
the package docstring describes.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dpr_jax"

# lowest first; a module may import modules of its own layer or below, never above
LAYERS = [
    {"errors", "storage", "settings", "mesh", "distributed", "checkpoint", "memory"},
    {"eval"},
    {"data"},
    {"models"},
    {"index"},
    {"train"},
    {"plots"},
    {"api"},
    {"commands", "quickstart", "cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """``dpr_jax`` modules imported anywhere in the file (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dpr_jax"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("dpr_jax"):
                for a in node.names:  # `from dpr_jax.models import run_dir` imports a module
                    candidate = f"{base}.{a.name}"
                    out.add(candidate if _exists(candidate) else base)
    return {m for m in out if m != name}


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # importing a package runs its __init__: an edge to a package is an edge to its __init__ module
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the package docstring)")


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_layer_imports_a_higher_one():
    bad = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
           for m, deps in _graph().items() if m != "dpr_jax" for d in deps
           if d != "dpr_jax" and _layer(d) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The graph includes imports hidden in function bodies (a cycle hidden that way is still a cycle)."""
    assert "dpr_jax.models.run_dir" in _graph()["dpr_jax.models.loading"]
    assert "dpr_jax.checkpoint" in _graph()["dpr_jax.models.run_dir"]  # imported inside functions there
