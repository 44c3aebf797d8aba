"""``plan`` over a real git history."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cosgitops.builder.plan import plan, plan_changes, plan_repository
from cosgitops.errors import GitError
from tests.builder.helpers import commit_all, git, load, make_repo

DERIVATIVES = {
    "edge": {},
    "web": {"base": "registry.example.com/cos/base:1", "packages": ["nginx"]},
    "kiosk": {"platforms": ["linux/amd64", "linux/arm64"]},
}
FILES = {
    "derivatives/edge/overlay/etc/motd": "edge\n",
    "derivatives/web/overlay/etc/motd": "web\n",
    "derivatives/kiosk/oem/90.yaml": "name: kiosk\n",
    "shared/banner": "ACME\n",
    "README.md": "fleet\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo", DERIVATIVES, FILES)
    os.symlink("../../../../shared/banner", root / "derivatives/web/overlay/etc/banner")
    commit_all(root, "web uses the shared banner")
    return root


def _plan(root: Path, since: str | None, until: str | None = None) -> list[str]:
    repository, derivatives = load(root)
    return plan_repository(repository, derivatives, since=since, until=until).names


def test_only_changed_folders_are_planned(repo: Path) -> None:
    (repo / "derivatives/edge/overlay/etc/motd").write_text("edge v2\n")
    (repo / "README.md").write_text("unrelated\n")
    commit_all(repo, "edge motd")
    repository, derivatives = load(repo)
    result = plan_repository(repository, derivatives, since="HEAD~1")
    assert result.names == ["edge"]
    assert not result.everything
    assert result.entries[0].reasons == ("derivatives/edge/overlay/etc/motd",)
    assert _plan(repo, "HEAD") == []
    # the same through the validating loader
    assert plan(repo, since="HEAD~1").names == ["edge"]


def test_working_tree_changes_count_and_until_limits(repo: Path) -> None:
    (repo / "derivatives/kiosk/oem/91.yaml").write_text("name: new\n")  # untracked
    assert _plan(repo, "HEAD") == ["kiosk"]
    assert _plan(repo, "HEAD", until="HEAD") == []


def test_shared_inputs_plan_everything(repo: Path) -> None:
    with (repo / "cosgitops.yaml").open("a") as handle:
        handle.write("# touched\n")
    commit_all(repo, "repository settings")
    repository, derivatives = load(repo)
    result = plan_repository(repository, derivatives, since="HEAD~1")
    assert result.everything and result.names == ["edge", "kiosk", "web"]
    assert all(entry.reasons == ("cosgitops.yaml",) for entry in result.entries)


def test_a_shared_file_packed_through_a_symlink_plans_its_user(repo: Path) -> None:
    (repo / "shared/banner").write_text("ACME 2\n")
    commit_all(repo, "new banner")
    repository, derivatives = load(repo)
    result = plan_repository(repository, derivatives, since="HEAD~1")
    assert result.names == ["web"]
    assert result.entries[0].reasons == ("shared/banner",)


def test_no_ref_plans_everything_and_matrix_shape(repo: Path) -> None:
    repository, derivatives = load(repo)
    result = plan_repository(repository, derivatives)
    assert result.everything and result.names == ["edge", "kiosk", "web"]
    matrix = json.loads(json.dumps(result.matrix()))
    assert matrix == {
        "include": [
            {"name": "edge", "version": "1.0.0", "builder": "oci", "folder": "derivatives/edge"},
            {"name": "kiosk", "version": "1.0.0", "builder": "oci",
             "folder": "derivatives/kiosk"},
            {"name": "web", "version": "1.0.0", "builder": "docker",
             "folder": "derivatives/web"},
        ]
    }  # fmt: skip
    assert result.to_json()["derivatives"][1]["platforms"] == ["linux/amd64", "linux/arm64"]


def test_removed_derivative_is_reported_not_planned(repo: Path) -> None:
    shutil.rmtree(repo / "derivatives/edge")
    commit_all(repo, "retire edge")
    repository, derivatives = load(repo)
    result = plan_repository(repository, derivatives, since="HEAD~1")
    assert result.names == []
    assert result.removed == ("derivatives/edge",)


def test_repository_in_a_subfolder_of_the_git_checkout(tmp_path: Path) -> None:
    mono = tmp_path / "mono"
    make_repo(mono / "fleet", {"edge": {}}, {"derivatives/edge/overlay/a": "1\n"})
    shutil.rmtree(mono / "fleet/.git")
    (mono / "other.txt").write_text("x\n")
    git(mono, "init", "-q")
    commit_all(mono, "monorepo")
    (mono / "fleet/derivatives/edge/overlay/a").write_text("2\n")
    (mono / "other.txt").write_text("y\n")
    commit_all(mono, "change")
    assert _plan(mono / "fleet", "HEAD~1") == ["edge"]


def test_unknown_ref_is_a_git_error(repo: Path) -> None:
    with pytest.raises(GitError) as error:
        _plan(repo, "no-such-ref")
    assert error.value.hint


def test_plan_changes_is_pure(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", DERIVATIVES)
    _, derivatives = load(root)
    result = plan_changes(
        root,
        derivatives,
        {"derivatives/kiosk/derivative.yaml", "derivatives/gone/derivative.yaml", "x/y"},
        since="abc",
    )
    assert result.names == ["kiosk"] and result.removed == ("derivatives/gone",)
    assert result.since == "abc"
