"""What a user meets first stays what it should be: the README is a front page, the
user-facing docs carry no benchmark targets, the version has one source, and the
package metadata is that of a prebuilt JupyterLab extension.

The docs build itself (``sphinx-build -W -n`` in ``.ci/test``) checks that every name
in ``nbpool.__all__`` and every config trait of ``Pool`` is documented; the package
build and install are checked by ``.ci/package-check``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_JSON = json.loads((ROOT / "labextension" / "package.json").read_text())
#: The pages a user reads: the guide, the references, the explanations, the front.
USER_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("[!_]*/*.md"))] + [
    ROOT / "docs" / "index.md"
]


def test_readme_is_a_front_page():
    """The README is at most 250 lines and keeps the two set-up commands exactly."""
    assert len(README.splitlines()) <= 250
    assert "bash .ci/demo     # install nbpool + JupyterLab, open JupyterLab on examples/" in README
    assert "bash .ci/test     # install everything the tests need and run the whole suite" in README


def test_readme_links_point_at_files_that_exist():
    """Every relative link of the README names a file or directory of the repository."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_user_pages_carry_no_pass_miss_targets_or_module_map():
    """Benchmark targets (PASS/MISS) and the contributors' module map stay out of the
    pages users read (they live in benchmarks/README.md and CONTRIBUTING.md)."""
    for page in USER_PAGES:
        text = page.read_text()
        assert not re.search(r"\b(PASS|MISS)\b", text), page
        assert "| module | concern |" not in text, page


def test_the_version_has_one_source():
    """The version is package.json's: the wheel takes it through hatch-nodejs-version,
    nbpool.__version__ from the installed metadata; no second literal exists."""
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"] == {
        "source": "nodejs",
        "path": "labextension/package.json",
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+(-\w+(\.\d+)?)?", PACKAGE_JSON["version"])
    init = (ROOT / "nbpool" / "__init__.py").read_text()
    assert not re.search(r"__version__\s*=\s*['\"]\d+\.\d+", init)


def test_package_metadata_is_that_of_a_prebuilt_jupyterlab_extension():
    """License text shipped, the Jupyter classifiers, project URLs, and a package.json
    that is private (not published to npm) and lists its sources."""
    project = PYPROJECT["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    for classifier in (
        "Framework :: Jupyter",
        "Framework :: Jupyter :: JupyterLab",
        "Framework :: Jupyter :: JupyterLab :: 4",
        "Framework :: Jupyter :: JupyterLab :: Extensions",
        "Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt",
    ):
        assert classifier in project["classifiers"]
    assert {"Source", "Issues", "Documentation"} <= set(project["urls"])
    assert PACKAGE_JSON["private"] is True
    assert "src/**/*.{ts,tsx}" in PACKAGE_JSON["files"]
    assert "docs" in project["optional-dependencies"]
