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


def module_imports() -> dict[str, set[str]]:
    """nbpool module -> the nbpool modules it imports at module level."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:  # `from . import x`: a module, or a name of the package itself
                    deps.update(a.name if a.name in modules else "__init__" for a in node.names)
        graph[path.stem] = deps - {path.stem}
    return graph


def test_module_level_imports_have_no_cycle():
    """Every module can be imported after the ones it needs (provisioning ->
    kernels -> processes, coordinator -> policy -> records, ...)."""
    graph = module_imports()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert order.index("processes") < order.index("kernels") < order.index("provisioning")
    assert order.index("records") < order.index("policy") < order.index("coordinator")


def test_import_nbpool_loads_no_widgets_or_display_machinery():
    """``import nbpool`` stays light: ipywidgets and IPython's display load on use."""
    code = (
        "import sys, nbpool; "
        "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'IPython'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


if __name__ == "__main__":  # python tests/unit/test_layering.py: print the graph
    for module, deps in module_imports().items():
        print(f"{module:13} -> {', '.join(sorted(deps)) or '-'}")
