"""The package's layering: module-level imports form no cycle.

Imports inside functions (lazy: ipywidgets only when a widget is asked for)
and under ``if TYPE_CHECKING:`` (annotations only) do not count: they run
after every module is loaded, or never.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "nbpool"


def _modules() -> dict[str, Path]:
    """Dotted name under nbpool (``core.policy``; a package is its ``__init__``) -> file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "__init__"] = path
    return found


def module_imports() -> dict[str, set[str]]:
    """nbpool module -> the nbpool modules it imports at module level."""
    modules = _modules()
    graph = {}
    for name, path in sorted(modules.items()):
        is_package = path.name == "__init__.py"
        here = [] if name == "__init__" else name.split(".")
        package = here if is_package else here[:-1]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.ImportFrom) and node.level >= 1):
                continue
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            dotted = ".".join(target) or "__init__"
            for alias in node.names:
                sub = ".".join([*target, alias.name])
                deps.add(sub if sub in modules else dotted)
        graph[name] = deps - {name}
    return graph


def subpackage_imports() -> dict[str, set[str]]:
    """The same graph with each subpackage as one node (top-level modules stay alone)."""
    modules = _modules()

    def unit(name: str) -> str:
        head = name.split(".")[0]
        return head if (PACKAGE / head).is_dir() else name

    graph: dict[str, set[str]] = {}
    for name, deps in module_imports().items():
        if name == "__init__":
            continue  # the package's face imports what it re-exports
        graph.setdefault(unit(name), set()).update(
            unit(d) for d in deps if d in modules and d != "__init__"
        )
    return {k: v - {k} for k, v in graph.items()}


def test_module_level_imports_have_no_cycle():
    """Every module can be imported after the ones it needs (launcher ->
    kernels.kernel -> kernels.processes, core.coordinator -> core.policy ->
    core.records, ...)."""
    graph = module_imports()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert (
        order.index("kernels.processes") < order.index("kernels.kernel") < order.index("launcher")
    )
    assert (
        order.index("core.records") < order.index("core.policy") < order.index("core.coordinator")
    )


def test_subpackages_import_each_other_without_a_cycle():
    """Each subpackage (and top-level module) as one node: still no cycle, so a
    feature can be read after the ones it builds on (kernels before fork before
    launcher)."""
    graph = subpackage_imports()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"subpackage cycle: {' -> '.join(exc.args[1])}") from None
    assert order.index("kernels") < order.index("fork") < order.index("launcher")


def test_kernels_know_nothing_above_them():
    """``kernels`` (one kernel's lifecycle) imports none of the layers built on it:
    the launcher decides fork or spawn, the pool and its core use kernels."""
    above = {"fork", "kept", "core", "launcher", "pool", "notebook"}
    assert subpackage_imports()["kernels"] & above == set()


def test_import_nbpool_loads_no_widgets_or_display_machinery():
    """``import nbpool`` stays light: ipywidgets and IPython's display load on use."""
    code = (
        "import sys, nbpool; "
        "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'IPython'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


if __name__ == "__main__":  # python tests/unit/test_layering.py: print both graphs
    for module, deps in module_imports().items():
        print(f"{module:20} -> {', '.join(sorted(deps)) or '-'}")
    print()
    for unit, deps in sorted(subpackage_imports().items()):
        print(f"{unit:20} -> {', '.join(sorted(deps)) or '-'}")
