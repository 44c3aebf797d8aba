"""``cosgitops init``: the scaffold is copied whole, validates clean and loads."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cosgitops import __version__, scaffold
from cosgitops.errors import UsageError
from cosgitops.resources import schema_path
from cosgitops.scaffold import ScaffoldError, default_name, init_repository
from cosgitops.validate import load_repository, validate_paths


def test_init_writes_the_whole_template_tree(tmp_path: Path) -> None:
    target = tmp_path / "My Fleet"
    created = init_repository(target)
    relative = {path.relative_to(target).as_posix() for path in created}
    template = {
        path.relative_to(scaffold.scaffold_dir()).as_posix()
        for path in scaffold.scaffold_dir().rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert relative == template
    assert {
        "cosgitops.yaml",
        ".gitignore",
        ".pre-commit-config.yaml",
        "derivatives/example/derivative.yaml",
        "derivatives/example/oem/90_example.yaml",
        "derivatives/example/overlay/etc/motd",
    } <= relative
    for path in created:
        assert "@COSGITOPS_" not in path.read_text(), path
    assert "name: my-fleet" in (target / "cosgitops.yaml").read_text()
    assert f"rev: v{__version__}" in (target / ".pre-commit-config.yaml").read_text()


def test_the_scaffold_validates_clean_and_loads(tmp_path: Path) -> None:
    init_repository(tmp_path / "fleet", name="acme")
    report = validate_paths([tmp_path / "fleet"])
    assert report.diagnostics == []
    tree = load_repository(tmp_path / "fleet")
    assert tree.repository.name == "acme"
    assert tree.repository.registry == "oci:.cosgitops/registry"  # the embedded default
    assert set(tree.repository.channels) == {"stable"}
    example = tree.derivatives["example"]
    assert example.base == "scratch"
    assert not example.needs_docker  # releasable offline, without a daemon
    assert example.release.channels == ("stable",)
    assert example.os_release
    assert sorted(p.name for p in example.overlay_dir.rglob("*") if p.is_file()) == ["motd"]
    assert sorted(p.name for p in example.cloud_config_dir.glob("*.yaml")) == ["90_example.yaml"]


def test_scaffold_yaml_carries_schema_modelines(tmp_path: Path) -> None:
    init_repository(tmp_path / "fleet")
    modelines = {
        "cosgitops.yaml": "repository",
        "derivatives/example/derivative.yaml": "derivative",
        "derivatives/example/oem/90_example.yaml": "cloud-config",
    }
    for relative, kind in modelines.items():
        first = (tmp_path / "fleet" / relative).read_text().splitlines()[0]
        schema_id = json.loads(schema_path(kind).read_text())["$id"]
        assert first == f"# yaml-language-server: $schema={schema_id}"


def test_pre_commit_config_runs_the_local_hook(tmp_path: Path) -> None:
    from cosgitops.source import load_yaml

    init_repository(tmp_path / "fleet")
    config = load_yaml(tmp_path / "fleet" / ".pre-commit-config.yaml").value
    [repo] = config["repos"]
    assert repo["repo"] == "local"
    [hook] = repo["hooks"]
    assert hook["entry"] == "cosgitops validate"
    assert hook["language"] == "system"
    assert hook["pass_filenames"] is True


def test_default_names() -> None:
    assert default_name(Path("/x/My Fleet_2")) == "my-fleet-2"
    assert default_name(Path("/x/---")) == "fleet"
    assert len(default_name(Path("/x/" + "a" * 100))) == 63


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me\n")
    with pytest.raises(ScaffoldError) as info:
        init_repository(tmp_path)
    assert "mine.txt" in str(info.value) and info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScaffoldError):
        init_repository(tmp_path / "file")


def test_a_folder_holding_only_git_is_fine(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    init_repository(tmp_path, name="fleet")
    assert (tmp_path / "cosgitops.yaml").is_file()


def test_refuses_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        init_repository(tmp_path / "x", name="Not A Label")
    assert not (tmp_path / "x").exists()


def test_any_template_tree_is_copied_generically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever another part adds to templates/scaffold (workflows, dotfiles, scripts,
    binaries) is copied; only the placeholders in text files change."""
    template = tmp_path / "template"
    (template / ".github" / "workflows").mkdir(parents=True)
    (template / ".github" / "workflows" / "ci.yaml").write_text(
        "name: ${{ github.repository }} @COSGITOPS_REPOSITORY_NAME@ @COSGITOPS_VERSION@\n"
    )
    (template / "bin").mkdir()
    (template / "bin" / "tool.sh").write_text("#!/bin/sh\necho @COSGITOPS_REPOSITORY_NAME@\n")
    os.chmod(template / "bin" / "tool.sh", 0o755)
    (template / "logo.bin").write_bytes(b"\x89PNG\xff\xfe@COSGITOPS_VERSION@")
    (template / "__pycache__").mkdir()
    (template / "__pycache__" / "x.pyc").write_bytes(b"")
    monkeypatch.setattr(scaffold, "scaffold_dir", lambda: template)
    created = init_repository(tmp_path / "out", name="fleet")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in created) == [
        ".github/workflows/ci.yaml",
        "bin/tool.sh",
        "logo.bin",
    ]
    assert (tmp_path / "out" / ".github" / "workflows" / "ci.yaml").read_text() == (
        f"name: ${{{{ github.repository }}}} fleet {__version__}\n"
    )
    assert os.stat(tmp_path / "out" / "bin" / "tool.sh").st_mode & stat.S_IXUSR
    assert (tmp_path / "out" / "logo.bin").read_bytes() == b"\x89PNG\xff\xfe@COSGITOPS_VERSION@"
