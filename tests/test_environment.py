"""The project's metadata stays consistent: conda's environment.yml names every runtime
dependency of pyproject.toml, and the install constraints pin torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ
PIP_ONLY = {"mnist1d"}  # not on conda-forge: installed by the environment's pip section


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def _conda_packages() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s{2}-\s+([A-Za-z0-9_.\-]+)", line)  # top-level conda dependencies
        if m:
            names.add(_name(m.group(1)))
    return names


def _pip_packages() -> set[str]:
    text = (ROOT / "environment.yml").read_text()
    return {_name(m) for m in re.findall(r"^\s{6}-\s+([A-Za-z0-9_.\-]+)", text, re.M)}


def test_every_runtime_dependency_is_in_environment_yml():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = _conda_packages()
    missing = [
        d
        for d in project["dependencies"]
        if CONDA_NAMES.get(_name(d), _name(d)) not in conda and _name(d) not in PIP_ONLY
    ]
    assert not missing, f"add these to environment.yml: {missing}"
    assert "python" in conda
    assert PIP_ONLY <= _pip_packages(), "pip-only dependencies go into the pip section"


def test_every_dev_extra_is_in_environment_yml():
    # conda users get jupyterlab, nbval, pytest ... from conda-forge, not from pip's extras
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    conda = _conda_packages()
    missing = [d for d in extras["dev"] if CONDA_NAMES.get(_name(d), _name(d)) not in conda]
    assert not missing, f"add these to environment.yml: {missing}"


def test_environment_yml_installs_the_package_with_dev_extras():
    assert re.search(r"^\s+-\s+-e \.\[dev\]\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_constraints_pin_torch_and_the_package_accepts_a_range():
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.M)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if _name(d) == "torch")
    assert ">=" in torch_dep and "==" not in torch_dep
