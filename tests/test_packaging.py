"""The wheel carries every module, schema and template: a user who installs cosgitops
from PyPI must get the same tool the tests run from the checkout."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

from tests.conftest import PROJECT_ROOT

DATA_PACKAGES = {"cosgitops.schemas": "schemas", "cosgitops.templates": "templates"}


def _code_packages() -> set[str]:
    found = set()
    for folder in [PROJECT_ROOT / "cosgitops", *(PROJECT_ROOT / "cosgitops").rglob("*")]:
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            found.add(".".join(folder.relative_to(PROJECT_ROOT).parts))
    return found


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed - set(DATA_PACKAGES) == _code_packages()
    assert config["tool"]["setuptools"]["package-dir"] == DATA_PACKAGES


def test_wheel_holds_code_schemas_and_templates(project_wheel: Path) -> None:
    names = set(zipfile.ZipFile(project_wheel).namelist())
    for source in (PROJECT_ROOT / "cosgitops").rglob("*.py"):
        assert source.relative_to(PROJECT_ROOT).as_posix() in names
    for data_package, folder in DATA_PACKAGES.items():
        for source in (PROJECT_ROOT / folder).rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                inside = Path(*data_package.split("."), source.relative_to(PROJECT_ROOT / folder))
                assert inside.as_posix() in names, f"{source} is missing from the wheel"
