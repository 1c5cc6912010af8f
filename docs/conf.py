"""Sphinx configuration of nbpool's documentation.

Built offline (``.ci/test`` runs ``sphinx-build -W -n --keep-going``): no
intersphinx inventories are fetched, and the example notebooks are rendered
with the outputs stored in them (myst-nb, execution off). The configuration,
magics and command-line references are generated from the code by
``_ext/nbpool_docs.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "nbpool"
author = "nbpool contributors"
copyright = "nbpool contributors"
# The version's one source is the JupyterLab extension's package.json (as the
# wheel's, through hatch-nodejs-version), so a docs build needs no install.
release = json.loads((ROOT / "labextension" / "package.json").read_text())["version"]
version = release

extensions = [
    "myst_nb",  # Markdown pages (myst-parser) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "autodoc_traits",
    "sphinx_copybutton",
    "nbpool_docs",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# Notebooks: the examples are committed with the outputs of a run on a plain
# install (tests/examples checks them); the build renders those and runs nothing.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

# No network at build time, so no intersphinx: names from the standard library
# and from the libraries nbpool builds on stay plain text instead of links.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(traitlets|zmq|jupyter_client|IPython|ipykernel|ipywidgets|concurrent)(\..*)?"),
    (r"py:.*", r"(typing|collections|threading|subprocess|pathlib|os|asyncio)(\..*)?"),
    (r"py:class", r"(str|int|float|bool|bytes|dict|list|tuple|set|object|type|callable)"),
    (r"py:class", r"(None|NoneType|Any|Callable|Iterable|Iterator|Mapping|Sequence|optional)"),
    (r"py:class", r"(Future|TimeoutError|ValueError|RuntimeError|Exception|BaseException)"),
    (r"py:(exc|class)", r"(KeyError|OSError|KeyboardInterrupt|LookupError)"),
]

# examples/05 runs bash cells in a Python notebook: Pygments cannot lex them
# as Python and falls back to plain text, which is what they should be.
suppress_warnings = ["misc.highlighting_failure"]

html_theme = "pydata_sphinx_theme"
html_title = f"nbpool {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}
