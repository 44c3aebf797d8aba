"""bases/<name>/base.yaml: loading, defaults and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.errors import ConfigError, NotFoundError
from cosgitops.osbase.definition import REQUIRED_PACKAGES, load_base
from cosgitops.osbase.mmdebstrap import missing_packages, plan_mmdebstrap

VALID = """\
apiVersion: cosgitops/v1
kind: Base
metadata:
  name: debian
spec:
  version: 1.0.0
  packages: [openssh-server, busybox]
  kernelCmdline: quiet
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / "bases" / name / "base.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_defaults_and_packages(tmp_path: Path) -> None:
    write(tmp_path, "debian", VALID)
    base = load_base(tmp_path, "debian")
    assert base.platform == "linux/amd64" and base.suite == "bookworm"
    assert base.sources[0] == "deb http://deb.debian.org/debian bookworm main"
    assert base.all_packages[: len(REQUIRED_PACKAGES)] == REQUIRED_PACKAGES
    assert base.all_packages.count("busybox") == 1 and "openssh-server" in base.all_packages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID.replace("1.0.0", "'1.0'"), r"base.yaml:6:12: "),
        (VALID.replace("kind: Base", "kind: Derivative"), r"base.yaml:2:7: .*Base"),
        (VALID.replace("openssh-server", "Bad_Name"), r"base.yaml:7:14: "),
        (VALID + "  suite: trixie\n", r"base.yaml:9:10: "),
    ],
)
def test_refused_with_location(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "debian", text)
    with pytest.raises(ConfigError, match=message):
        load_base(tmp_path, "debian")


def test_name_must_match_folder(tmp_path: Path) -> None:
    write(tmp_path, "other", VALID)
    with pytest.raises(ConfigError, match="folder is 'other'"):
        load_base(tmp_path, "other")


def test_missing_base_lists_the_others(tmp_path: Path) -> None:
    write(tmp_path, "debian", VALID)
    with pytest.raises(NotFoundError) as caught:
        load_base(tmp_path, "nope")
    assert "debian" in (caught.value.hint or "")


def test_mmdebstrap_plan(tmp_path: Path) -> None:
    write(tmp_path, "debian", VALID)
    base = load_base(tmp_path, "debian")
    plan = plan_mmdebstrap(
        base,
        output=tmp_path / "out.tar",
        overlay=tmp_path / "overlay",
        wheelhouse=tmp_path / "wheels",
        agent_requirement="cosgitops==0.1.0",
        epoch=1234,
        sources=["deb [trusted=yes] copy:///mirror ./"],
    )
    argv = list(plan.argv)
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    assert argv[-3:] == [
        "bookworm",
        str(tmp_path / "out.tar"),
        "deb [trusted=yes] copy:///mirror ./",
    ]
    include = next(a for a in argv if a.startswith("--include="))
    assert "linux-image-amd64" in include and "openssh-server" in include
    assert f"--essential-hook=sync-in {tmp_path / 'overlay'} /" in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert any("cosgitops==0.1.0" in hook for hook in hooks)
    assert any("grub-mkimage" in hook and "squash4" in hook for hook in hooks)
    assert any('set cos_image_cmdline="%s"' in hook and '"quiet"' in hook for hook in hooks)
    assert plan.env["SOURCE_DATE_EPOCH"] == "1234"


def test_missing_packages_from_apt_output() -> None:
    log = (
        "I: running apt-get update...\n"
        "E: Unable to locate package no-such-thing\n"
        "E: Package 'ghost' has no installation candidate\n"
        "E: Unable to locate package no-such-thing\n"
    )
    assert missing_packages(log) == ["no-such-thing", "ghost"]
