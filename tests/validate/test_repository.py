"""Folder-level rules and whole-repository validation on real trees on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import cosgitops.validate.engine as engine
from cosgitops import model
from cosgitops.errors import ConfigError, ValidationError
from cosgitops.validate import find_repository_root, load_repository, validate_paths
from tests.validate.helpers import (
    add_derivative,
    derivative_yaml,
    found,
    git_init,
    make_repository,
    private_key_pem,
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return make_repository(tmp_path / "fleet", "edge", "lab")


def test_a_clean_repository_is_clean(repo: Path) -> None:
    report = validate_paths([repo])
    assert report.diagnostics == []
    # cosgitops.yaml + 2 x (derivative.yaml, oem file, overlay file)
    assert report.files_checked == 7


def test_no_paths_means_the_current_folder(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "derivatives" / "edge")
    (repo / "derivatives" / "lab" / "derivative.yaml").write_text("kind: [\n")
    assert validate_paths([]).ok  # only edge is in scope
    monkeypatch.chdir(repo)
    assert not validate_paths([]).ok
    monkeypatch.chdir(repo.parent)  # not a repository: walking it is not what anyone wants
    with pytest.raises(ConfigError):
        validate_paths([])


def test_name_must_match_its_folder(repo: Path) -> None:
    (repo / "derivatives" / "edge" / "derivative.yaml").write_text(derivative_yaml("lab"))
    report = validate_paths([repo])
    assert ("derivative.yaml", "name-matches-folder") in found(report.diagnostics)
    assert ("derivative.yaml", "name-unique") in found(report.diagnostics)
    unique = [d for d in report.diagnostics if d.rule == "name-unique"]
    assert len(unique) == 1 and (unique[0].line, unique[0].column) == (4, 9)


def test_a_single_file_gets_the_rules_of_its_derivative_folder(repo: Path) -> None:
    """pre-commit passes only changed files: a change to an overlay file still checks
    the derivative it belongs to (name, channels, secrets, symlinks)."""
    folder = repo / "derivatives" / "edge"
    (folder / "derivative.yaml").write_text(derivative_yaml("wrong"))
    (folder / "oem" / "20_bad.yaml").write_text("stages:\n  boot:\n    commands: [x]\n")
    report = validate_paths([folder / "overlay" / "etc" / "motd"])
    assert found(report.diagnostics) == {
        ("derivative.yaml", "name-matches-folder"),
        ("20_bad.yaml", "schema"),
    }
    # the other derivative is not in scope
    assert all("/lab/" not in d.file for d in report.diagnostics)


def test_channels_must_be_declared(repo: Path) -> None:
    add_derivative(repo, "edge", extra="  release:\n    channels: [beta, nightly]\n")
    report = validate_paths([repo / "derivatives" / "edge" / "derivative.yaml"])
    [diagnostic] = report.diagnostics
    assert diagnostic.rule == "channel-undeclared"
    assert (diagnostic.line, diagnostic.column) == (9, 22)
    assert diagnostic.pointer == "/spec/release/channels/1"
    assert "beta, stable" in (diagnostic.hint or "")


def test_the_default_channel_must_be_declared_too(repo: Path) -> None:
    (repo / "cosgitops.yaml").write_text(
        "apiVersion: cosgitops/v1\nkind: Repository\nmetadata: {name: fleet}\n"
        "spec:\n  channels:\n    beta: {}\n"
    )
    report = validate_paths([repo])
    assert {d.rule for d in report.errors} == {"channel-undeclared"}
    assert len(report.errors) == 2  # edge and lab both default to stable


def test_changing_cosgitops_yaml_checks_every_derivative(repo: Path) -> None:
    (repo / "cosgitops.yaml").write_text(
        "apiVersion: cosgitops/v1\nkind: Repository\nmetadata: {name: fleet}\n"
        "spec:\n  channels:\n    beta: {}\n"
    )
    report = validate_paths([repo / "cosgitops.yaml"])
    assert sorted(d.file for d in report.errors) == [
        "fleet/derivatives/edge/derivative.yaml",
        "fleet/derivatives/lab/derivative.yaml",
    ]


def test_missing_derivative_file(repo: Path) -> None:
    (repo / "derivatives" / "empty").mkdir()
    report = validate_paths([repo])
    [diagnostic] = report.diagnostics
    assert diagnostic.rule == "derivative-missing"
    assert diagnostic.file == "fleet/derivatives/empty/derivative.yaml"


def test_symlink_out_of_the_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not for the image\n")
    overlay = repo / "derivatives" / "edge" / "overlay" / "etc"
    (overlay / "secret").symlink_to(secret)
    (overlay / "passwd").symlink_to("/etc/passwd")
    (overlay / "inside").symlink_to("motd")  # stays inside: fine
    (repo / "derivatives" / "edge" / "overlay" / "up").symlink_to(
        "../../../.."
    )  # the repository's parent
    (repo / "derivatives" / "edge" / "leak").symlink_to("/etc/passwd")  # not in the overlay
    report = validate_paths([overlay / "motd"])
    escapes = sorted(d.file for d in report.diagnostics if d.rule == "path-escape")
    assert escapes == [
        "fleet/derivatives/edge/leak",
        "fleet/derivatives/edge/overlay/up",
    ]
    assert all(d.line == 1 and d.column == 1 for d in report.diagnostics)
    assert len(report.diagnostics) == 2


def test_absolute_links_in_the_overlay_are_image_paths(repo: Path) -> None:
    """Regression: /etc/localtime -> /usr/share/zoneinfo/UTC in an overlay was refused,
    though the builders pack it as a link inside the image and never follow it."""
    overlay = repo / "derivatives" / "edge" / "overlay" / "etc"
    (overlay / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (overlay / "passwd").symlink_to("/etc/passwd")
    assert validate_paths([repo]).diagnostics == []


def test_definition_symlinked_out_of_the_repository_is_not_read(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(derivative_yaml("edge"))
    definition = repo / "derivatives" / "edge" / "derivative.yaml"
    definition.unlink()
    definition.symlink_to(elsewhere)
    report = validate_paths([repo])
    assert ("derivative.yaml", "path-escape") in found(report.diagnostics)
    assert not report.ok


def test_cloud_config_folder_setting_is_honoured(repo: Path) -> None:
    folder = add_derivative(repo, "edge", extra="  cloudConfig: yip\n")
    (folder / "yip").mkdir()
    (folder / "yip" / "a.yaml").write_text("stages:\n  boot:\n    - comands: [x]\n")
    (folder / "oem" / "b.yaml").write_text("stages: [broken]\n")  # not the yip folder now
    report = validate_paths([repo])
    assert found(report.diagnostics) == {("a.yaml", "yip-unknown-key")}


def test_private_keys_are_refused_anywhere(repo: Path) -> None:
    pem = private_key_pem()
    (repo / "derivatives" / "edge" / "overlay" / "etc" / "server.key").write_text(pem)
    (repo / "keys").mkdir()
    (repo / "keys" / "cosign.key").write_text("# a key\n\n" + pem)
    (repo / "README.md").write_text("Never commit -----BEGIN PRIVATE KEY----- blocks.\n")
    report = validate_paths([repo])
    keys = sorted((d.file, d.line, d.column) for d in report.diagnostics)
    assert keys == [
        ("fleet/derivatives/edge/overlay/etc/server.key", 1, 1),
        ("fleet/keys/cosign.key", 3, 1),
    ]
    assert {d.rule for d in report.diagnostics} == {"private-key"}


KAIROS_GIT_CONFIG = """\
name: configuration from git
stages:
  network:
    - git:
        url: https://git.example.com/fleet/config.git
        path: /oem/config
        auth:
          username: deploy
          private_key: |
            {key}
    - files:
        - path: /etc/ssl/certs/internal.pem
          content: |
            -----BEGIN CERTIFICATE-----
            -----END CERTIFICATE-----
"""


@pytest.mark.parametrize(
    "block",
    [
        "-----BEGIN RSA PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\n<your key here>\n-----END PRIVATE KEY-----",
    ],
)
def test_an_empty_private_key_placeholder_is_a_warning(repo: Path, block: str) -> None:
    """Documentation examples (Kairos' git auth among them) hold an empty key block:
    nothing leaked, so a warning; an empty certificate is no finding at all."""
    indented = "\n            ".join(block.splitlines())
    oem = repo / "derivatives" / "edge" / "oem" / "20_git.yaml"
    oem.write_text(KAIROS_GIT_CONFIG.format(key=indented))
    (repo / "docs.md").write_text(f"Paste your key:\n\n{block}\n")
    report = validate_paths([repo])
    assert report.ok and report.errors == []
    assert sorted((d.file, d.line, d.column, d.severity, d.rule) for d in report.diagnostics) == [
        ("fleet/derivatives/edge/oem/20_git.yaml", 10, 13, "warning", "private-key"),
        ("fleet/docs.md", 3, 1, "warning", "private-key"),
    ]
    assert all("placeholder" in d.message for d in report.diagnostics)


def test_a_real_key_where_the_placeholder_was_is_an_error(repo: Path) -> None:
    indented = "\n            ".join(private_key_pem().splitlines())
    oem = repo / "derivatives" / "edge" / "oem" / "20_git.yaml"
    oem.write_text(KAIROS_GIT_CONFIG.format(key=indented))
    report = validate_paths([repo])
    assert [(d.line, d.column, d.severity, d.rule) for d in report.diagnostics] == [
        (10, 13, "error", "private-key")
    ]
    assert "must never be committed" in report.errors[0].message


def test_cosign_key_files_are_refused(repo: Path, interop: Path) -> None:
    keys = repo / "derivatives" / "edge" / "overlay" / "keys"
    keys.mkdir()
    for path in sorted((interop / "cosign" / "keys").iterdir()):
        (keys / path.name).write_bytes(path.read_bytes())
    report = validate_paths([repo / "derivatives" / "edge"])
    assert len(report.errors) >= 2
    assert {d.rule for d in report.errors} == {"private-key"}
    assert any("COSIGN PRIVATE KEY" in d.message for d in report.errors)
    assert any("SIGSTORE PRIVATE KEY" in d.message for d in report.errors)


def test_git_ignored_files_and_local_state_are_not_scanned(repo: Path) -> None:
    pem = private_key_pem()
    (repo / ".gitignore").write_text(".cosgitops/\nsecrets/\n")
    (repo / ".cosgitops" / "keys").mkdir(parents=True)
    (repo / ".cosgitops" / "keys" / "cosign.key").write_text(pem)
    (repo / "secrets").mkdir()
    (repo / "secrets" / "ignored.key").write_text(pem)
    git_init(repo)
    assert validate_paths([repo]).diagnostics == []
    (repo / "untracked.key").write_text(pem)  # would be committed by `git add -A`
    assert found(validate_paths([repo]).diagnostics) == {("untracked.key", "private-key")}
    (repo / "untracked.key").unlink()
    (repo / ".gitignore").write_text("secrets/\n")  # local state no longer ignored
    assert found(validate_paths([repo]).diagnostics) == {("cosign.key", "private-key")}


def test_local_state_is_skipped_outside_git(repo: Path) -> None:
    (repo / ".cosgitops" / "keys").mkdir(parents=True)
    (repo / ".cosgitops" / "keys" / "cosign.key").write_text(private_key_pem())
    assert validate_paths([repo]).diagnostics == []
    nested = repo / "derivatives" / "edge" / "overlay" / ".cosgitops"
    nested.mkdir()
    (nested / "key.pem").write_text(private_key_pem())  # not the local state: content
    assert found(validate_paths([repo]).diagnostics) == {("key.pem", "private-key")}


def test_files_outside_a_repository_are_recognised_by_content(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(derivative_yaml("a", version="1.0"))
    (tmp_path / "b.yaml").write_text("#cloud-config\nusers: {not: a list}\n")
    (tmp_path / "c.yaml").write_text("just: data\n")
    report = validate_paths([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"])
    assert found(report.diagnostics) == {
        ("a.yaml", "yaml-implicit-type"),
        ("b.yaml", "schema"),
        ("c.yaml", "unknown-kind"),
    }
    assert [d.severity for d in report.diagnostics if d.rule == "unknown-kind"] == ["warning"]


def test_nonexistent_path(tmp_path: Path) -> None:
    report = validate_paths([tmp_path / "nope.yaml"])
    assert [(d.rule, d.line, d.column) for d in report.diagnostics] == [("file-unreadable", 1, 1)]


def test_parallel_and_serial_runs_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repository(tmp_path / "big")
    for index in range(30):
        folder = add_derivative(root, f"d-{index:02d}")
        if index % 7 == 0:
            (folder / "derivative.yaml").write_text(derivative_yaml(f"x-{index}", "1.0"))
    monkeypatch.setattr(engine, "PARALLEL_MIN_FOLDERS", 10_000)
    serial = validate_paths([root])
    monkeypatch.setattr(engine, "PARALLEL_MIN_FOLDERS", 4)
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    forked: list[int] = []
    run_forked = engine._run_forked

    def counting(parent: Any, chunks: list[Any]) -> Any:
        forked.append(len(chunks))
        return run_forked(parent, chunks)

    monkeypatch.setattr(engine, "_run_forked", counting)
    parallel = validate_paths([root])
    assert forked == [3]
    assert serial.diagnostics == parallel.diagnostics
    assert serial.files_checked == parallel.files_checked == 1 + 30 * 3
    assert len(serial.errors) == 10  # 5 broken derivatives x (name, version)


# ---------------------------------------------------------------- the library API


def test_load_repository_builds_the_model(repo: Path) -> None:
    add_derivative(
        repo,
        "edge",
        version="2.1.0",
        extra="  release:\n    channels: [beta]\n    upgradeFrom: '>=2.0.0'\n",
    )
    tree = load_repository(repo)
    assert tree.root == repo.resolve()
    assert isinstance(tree.repository, model.Repository)
    assert set(tree.repository.channels) == {"stable", "beta"}
    assert sorted(tree.derivatives) == ["edge", "lab"]
    edge = tree.derivatives["edge"]
    assert edge.version == "2.1.0"
    assert edge.folder == repo.resolve() / "derivatives" / "edge"
    assert edge.release.channels == ("beta",)
    assert edge.release.upgrade_from == ">=2.0.0"


def test_load_repository_raises_with_the_diagnostics(repo: Path) -> None:
    (repo / "derivatives" / "lab" / "derivative.yaml").write_text(derivative_yaml("lab", "1"))
    with pytest.raises(ValidationError) as info:
        load_repository(repo)
    assert "derivatives/lab/derivative.yaml:6:12" in str(info.value)
    assert info.value.hint
    assert [d.rule for d in info.value.diagnostics] == ["yaml-implicit-type"]


def test_load_repository_ignores_warnings(repo: Path) -> None:
    add_derivative(repo, "edge", extra="").joinpath("derivative.yaml").write_text(
        derivative_yaml("edge").replace("base: scratch", "base: quay.io/kairos/core:v1")
    )
    tree = load_repository(repo)
    assert tree.derivatives["edge"].base == "quay.io/kairos/core:v1"


def test_load_repository_needs_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_repository(tmp_path)


def test_find_repository_root(repo: Path, tmp_path: Path) -> None:
    deep = repo / "derivatives" / "edge" / "overlay" / "etc"
    assert find_repository_root(deep) == repo
    assert find_repository_root(deep / "motd") == repo
    assert find_repository_root(repo) == repo
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(ConfigError) as info:
        find_repository_root(outside)
    assert "cosgitops.yaml" in str(info.value) and info.value.hint


def test_diagnostic_paths_are_relative_to_the_current_folder(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "derivatives" / "lab" / "derivative.yaml").write_text("kind: [\n")
    monkeypatch.chdir(repo / "derivatives")
    [diagnostic] = validate_paths([repo]).diagnostics
    assert diagnostic.file == "lab/derivative.yaml"
    monkeypatch.chdir(repo.parent.parent)
    [diagnostic] = validate_paths([repo]).diagnostics
    assert not os.path.isabs(diagnostic.file)


def test_file_names_agree_with_the_model() -> None:
    assert engine.REPOSITORY_FILE == model.REPOSITORY_FILE
    assert engine.DERIVATIVES_DIR == model.DERIVATIVES_DIR
    assert engine.DERIVATIVE_FILE == model.DERIVATIVE_FILE


def test_a_failing_worker_is_redone_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repository(tmp_path / "big")
    for index in range(12):
        add_derivative(root, f"d-{index:02d}", version="1.0" if index == 5 else "1.0.0")
    serial = validate_paths([root])
    parent = os.getpid()
    run_chunk = engine._run_chunk

    def failing_in_children(session: Any, tasks: Any) -> Any:
        if os.getpid() != parent:
            raise RuntimeError("a worker broke")
        return run_chunk(session, tasks)

    monkeypatch.setattr(engine, "_run_chunk", failing_in_children)
    monkeypatch.setattr(engine, "PARALLEL_MIN_FOLDERS", 4)
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert validate_paths([root]).diagnostics == serial.diagnostics
    assert len(serial.errors) == 1


def test_a_repository_ignored_by_an_enclosing_git_repository_is_still_scanned(
    tmp_path: Path,
) -> None:
    """`cosgitops init demo-repo` inside another checkout that ignores demo-repo/."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / ".gitignore").write_text("demo-repo/\n")
    git_init(outer)
    root = make_repository(outer / "demo-repo", "edge")
    (root / "derivatives" / "edge" / "overlay" / "etc" / "tls.key").write_text(private_key_pem())
    (root / "stray.key").write_text(private_key_pem())
    assert found(validate_paths([root]).diagnostics) == {
        ("tls.key", "private-key"),
        ("stray.key", "private-key"),
    }


def test_a_repository_named_through_a_symlink(repo: Path, tmp_path: Path) -> None:
    (repo / "derivatives" / "lab" / "derivative.yaml").write_text("kind: [\n")
    link = tmp_path / "link"
    link.symlink_to(repo)
    report = validate_paths([link])
    assert [d.rule for d in report.diagnostics] == ["yaml-syntax"]


def test_the_quoting_hint_says_when_quoting_is_not_enough(tmp_path: Path) -> None:
    path = tmp_path / "derivative.yaml"
    path.write_text(derivative_yaml("edge", version="1.4"))
    [diagnostic] = validate_paths([path]).diagnostics
    assert diagnostic.rule == "yaml-implicit-type"
    assert diagnostic.hint is not None
    assert diagnostic.hint.startswith('quote it: version: "1.4"; but as a string it is not')
    assert "SemVer" in diagnostic.hint
    path.write_text(derivative_yaml("edge", version="2.0").replace("name: edge", "name: 12"))
    hints = {d.pointer: d.hint for d in validate_paths([path]).diagnostics}
    assert hints["/metadata/name"] == 'quote it: name: "12"'  # "12" is a fine name
