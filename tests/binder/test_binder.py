"""binder/ is a valid repo2docker configuration that installs what nbpool declares."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("-", "_")


def test_environment_provides_every_runtime_dependency():
    """environment.yml parses and brings each dependency pyproject.toml declares."""
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = {_name(d) for d in declared} - conda
    assert not missing, f"binder/environment.yml lacks {sorted(missing)}"
    assert "nodejs>=22" in env["dependencies"], "the extension build needs node >= 20.19"


def test_post_build_installs_this_repository_and_checks_the_extension():
    """postBuild is executable, installs the repo itself and verifies the lab extension."""
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK)
    text = post.read_text()
    assert "pip install --no-cache-dir ." in text
    assert "jupyter labextension list" in text and "bash_kernel.install" in text
    subprocess.run(["bash", "-n", str(post)], check=True)


def test_repo2docker_reads_the_binder_folder():
    """repo2docker's generated Dockerfile uses binder/environment.yml and runs postBuild."""
    exe = shutil.which("repo2docker") or str(Path(sys.executable).parent / "repo2docker")
    out = subprocess.run(
        [exe, "--no-build", "--debug", str(ROOT)], capture_output=True, text=True, timeout=120
    )
    dockerfile = out.stdout + out.stderr
    assert 'env update -p ${NB_PYTHON_PREFIX} --file "binder/environment.yml"' in dockerfile
    assert "./binder/postBuild" in dockerfile
