"""Sphinx extension: the parts of nbpool's docs that are generated from the code.

Directives, used inside ``{eval-rst}`` blocks (their output is reStructuredText).
All reach nbpool through its public surface, so moving a module inside the
package does not break the docs:

``nbpool-config``
    Every ``config=True`` trait of :class:`nbpool.Pool`, with its type,
    default and help, as ``confval`` entries (a page links one with the
    ``confval`` role, e.g. ``:confval:`size```).
``nbpool-magics``
    Every magic that ``%load_ext nbpool`` registers, from the help text
    IPython's ``magic_arguments`` builds (what ``%pool?`` shows).
``nbpool-magics-config``
    Every ``config=True`` trait of those magics' classes (``PoolMagics.jobs_kept``),
    as ``confval`` entries.
``nbpool-cli``
    ``python -m nbpool`` and each of its subcommands, from argparse's
    ``--help`` (found by following the subcommand choices).
``nbpool-docstring NAME``
    The docstring of the module of nbpool whose last dotted name is NAME
    (``coordinator``, ``status``), parsed as reStructuredText.

Checks (warnings, so ``-W`` fails the build): every name in
``nbpool.__all__`` is documented as ``nbpool.NAME``, and every config trait
of ``Pool`` has its entry.

References: a cross-reference to an internal name (``nbpool.errors.WorkerDied``
in a docstring) resolves to the public name when ``nbpool`` exports it, and
is shown as plain code when it names an internal object that exists; a
reference to something that does not exist still warns.

At ``config-inited`` the notebooks in ``examples/`` are copied into
``docs/examples/`` (ignored by git), where myst-nb renders their stored outputs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "nbpool"]
#: argparse wraps its help to $COLUMNS: fixed, so the page does not depend on the terminal.
HELP_ENV_COLUMNS = "76"


def _parse(directive: SphinxDirective, lines: list[str]) -> list[nodes.Node]:
    # A section as the parent (as autodoc does), so the lines may hold titles.
    node = nodes.section()
    node.document = directive.state.document
    nested_parse_with_titles(directive.state, StringList(lines, source="nbpool_docs"), node)
    return node.children


def _indent(text: str, by: str = "   ") -> list[str]:
    return [by + line if line.strip() else "" for line in text.splitlines()]


# -- configuration reference ------------------------------------------------


def config_traits() -> dict:
    import nbpool

    return dict(sorted(nbpool.Pool.class_traits(config=True).items()))


def _trait_type(trait) -> str:
    info = trait.info_text if isinstance(trait.info_text, str) else trait.info()
    return f"{type(trait).__name__} ({info})" if info else type(trait).__name__


class MagicsConfigDirective(SphinxDirective):
    """One ``confval`` (``PoolMagics.jobs_kept``) per config trait of nbpool's magics."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name, trait in magics_config_traits().items():
            lines += [
                f".. confval:: {name}",
                f"   :type: {_trait_type(trait)}",
                f"   :default: ``{trait.default_value_repr()}``",
                "",
                *_indent(trait.help or "(no help text)"),
                "",
                f"   ``c.{name} = ...`` in ``ipython_config.py``, or ``%config {name} = ...``"
                " (taken by the next ``%%pool_exec``).",
                "",
            ]
        return _parse(self, lines)


class ConfigDirective(SphinxDirective):
    """The configuration reference, one ``confval`` per config trait of ``Pool``."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name, trait in config_traits().items():
            default = trait.default_value_repr()
            lines += [
                f".. confval:: {name}",
                f"   :type: {_trait_type(trait)}",
                f"   :default: ``{default}``",
                "",
                *_indent(trait.help or "(no help text)"),
                "",
                f"   ``c.Pool.{name} = ...`` in ``ipython_config.py``, "
                f"``%config Pool.{name} = ...``, or ``nbpool.Pool({name}=...)``.",
                "",
            ]
        return _parse(self, lines)


# -- magics reference --------------------------------------------------------

_ARG_SECTION = re.compile(r"^(positional arguments|options|optional arguments):$", re.M)


def _shell_with_nbpool():
    """The process's IPython shell with the nbpool extension loaded (idempotent)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("nbpool")
    return shell


def magic_docs() -> dict[str, tuple[str, str]]:
    """``{name: (kind, help)}`` of the magics ``%load_ext nbpool`` adds."""
    found = {}
    for kind, magics in _shell_with_nbpool().magics_manager.magics.items():
        for name, fn in sorted(magics.items()):
            owner = getattr(fn, "__self__", None)
            if type(owner).__module__.startswith("nbpool."):
                found[name] = (kind, fn.__doc__ or "")
    return found


def magics_config_traits() -> dict:
    """``{"Class.trait": trait}``: the config traits of the magics classes nbpool registers
    (those of IPython's ``Magics`` base left out)."""
    from IPython.core.magic import Magics

    found = {}
    for name, magics in sorted(_shell_with_nbpool().magics_manager.registry.items()):
        if type(magics).__module__.startswith("nbpool."):
            own = set(type(magics).class_traits(config=True)) - set(
                Magics.class_traits(config=True)
            )
            for trait in sorted(own):
                found[f"{name}.{trait}"] = type(magics).class_traits()[trait]
    return found


class MagicsDirective(SphinxDirective):
    """One section per magic: its usage, its description, its arguments."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name, (kind, doc) in magic_docs().items():
            prefix = "%%" if kind == "cell" else "%"
            title = f"``{prefix}{name}``"
            doc = doc.strip("\n")
            split = _ARG_SECTION.search(doc)
            body, args = (doc[: split.start()], doc[split.start() :]) if split else (doc, "")
            lines += [f".. _magic-{name}:", "", title, "-" * len(title), "", *body.splitlines()]
            if args.strip():
                lines += ["", ".. code-block:: text", "", *_indent(args.rstrip()), ""]
            lines.append("")
        return _parse(self, lines)


# -- command-line reference ---------------------------------------------------

_CHOICES = re.compile(r"\{([\w,-]+)\} \.\.\.\s*$")


def cli_help(argv: list[str]) -> str:
    out = subprocess.run(
        [*CLI, *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": HELP_ENV_COLUMNS},
    )
    if out.returncode != 0:
        raise RuntimeError(f"`python -m nbpool {' '.join(argv)} --help` failed: {out.stderr}")
    return out.stdout


def cli_pages(argv: list[str] | None = None) -> list[tuple[list[str], str]]:
    """``[(argv, help)]`` of ``python -m nbpool`` and every subcommand, depth first."""
    argv = argv or []
    text = cli_help(argv)
    pages = [(argv, text)]
    usage = text.split("\n\n", 1)[0]
    match = _CHOICES.search(usage)
    if match:
        for sub in match[1].split(","):
            pages += cli_pages([*argv, sub])
    return pages


class CliDirective(SphinxDirective):
    """``python -m nbpool ... --help`` for the command and every subcommand."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for argv, text in cli_pages():
            title = "``python -m nbpool" + "".join(f" {a}" for a in argv) + "``"
            anchor = "-".join(["cli", *argv]) if argv else "cli-main"
            lines += [f".. _{anchor}:", "", title, "-" * len(title), ""]
            lines += [".. code-block:: text", "", *_indent(text.rstrip()), ""]
        return _parse(self, lines)


# -- module docstrings by name -------------------------------------------------


def find_module(leaf: str):
    """The module of nbpool whose dotted name ends with ``leaf``, wherever it lives."""
    import nbpool

    names = [
        info.name
        for info in pkgutil.walk_packages(nbpool.__path__, "nbpool.")
        if info.name.rsplit(".", 1)[-1] == leaf
    ]
    if len(names) != 1:
        raise LookupError(f"nbpool has {len(names)} modules named {leaf!r}: {names}")
    return importlib.import_module(names[0])


class DocstringDirective(SphinxDirective):
    """A module's docstring, with references relative to that module."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = find_module(self.arguments[0])
        context = self.env.ref_context
        saved = context.get("py:module")
        context["py:module"] = module.__name__
        try:
            return _parse(self, inspect.cleandoc(module.__doc__ or "").splitlines())
        finally:
            if saved is None:
                context.pop("py:module", None)
            else:
                context["py:module"] = saved


# -- references to internal names ---------------------------------------------


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _nbpool_modules() -> list[str]:
    import nbpool

    return ["nbpool"] + [i.name for i in pkgutil.walk_packages(nbpool.__path__, "nbpool.")]


def _candidates(node) -> list[str]:
    """Where a reference's target may live: as written, in its module and class,
    and (for a name relative to another internal module) in any module of nbpool."""
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    found = [target]
    if module and cls:
        found.append(f"{module}.{cls}.{target}")
    if module:
        found.append(f"{module}.{target}")
        # A docstring names its module's classes' methods without the class.
        mod = sys.modules.get(module)
        found += [
            f"{module}.{name}.{target}"
            for name, obj in vars(mod or object).items()
            if inspect.isclass(obj) and obj.__module__ == module
        ]
    if not target.startswith("nbpool."):
        found += [f"{m}.{target}" for m in _nbpool_modules()]
    return found


def resolve_internal(app, env, node, contnode):
    """Public name for an internal path; plain code for an existing internal object."""
    if node.get("refdomain") != "py":
        return None
    import nbpool

    for dotted in _candidates(node):
        if not dotted.startswith("nbpool.") or not _exists(dotted):
            continue
        parts = dotted.split(".")
        for i, part in enumerate(parts[1:], start=1):
            if part in nbpool.__all__:
                public = ".".join(["nbpool", *parts[i:]])
                found = env.domains["py"].resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
                )
                if found is not None:
                    return found
        return contnode  # an internal object the docs do not describe
    return None


# -- checks ----------------------------------------------------------------------


def check_coverage(app, env) -> None:
    import nbpool

    objects = env.domains["py"].objects
    for name in nbpool.__all__:
        if f"nbpool.{name}" not in objects:
            logger.warning(f"nbpool.{name} (in nbpool.__all__) is not documented")
    confvals = {name for (kind, name) in env.domains["std"].objects if kind == "confval"}
    for name in config_traits():
        if name not in confvals:
            logger.warning(f"the config trait Pool.{name} has no entry in the docs")


# -- examples ------------------------------------------------------------------


def copy_examples(app, config) -> None:
    target = Path(app.srcdir) / "examples"
    target.mkdir(exist_ok=True)
    sources = sorted((ROOT / "examples").glob("*.ipynb"))
    wanted = {p.name for p in sources}
    for old in target.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for src in sources:
        dst = target / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


def setup(app):
    app.add_directive("nbpool-config", ConfigDirective)
    app.add_directive("nbpool-magics", MagicsDirective)
    app.add_directive("nbpool-magics-config", MagicsConfigDirective)
    app.add_directive("nbpool-cli", CliDirective)
    app.add_directive("nbpool-docstring", DocstringDirective)
    app.connect("config-inited", copy_examples)
    app.connect("missing-reference", resolve_internal)
    app.connect("env-check-consistency", check_coverage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
