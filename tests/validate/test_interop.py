"""Every real cloud-config shipped in cOS/Elemental and Kairos images validates with
zero errors: a validator that rejects real, working configs is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cosgitops.validate import validate_paths


def yip_files(interop: Path) -> list[Path]:
    return sorted(path for path in (interop / "yip").rglob("*") if path.is_file())


def test_every_real_yip_file_has_zero_errors(interop: Path) -> None:
    files = yip_files(interop)
    assert len(files) >= 70
    for path in files:
        report = validate_paths([path], as_kind="cloud-config")
        assert report.errors == [], f"{path}: {[d.format() for d in report.errors]}"
        assert report.files_checked == 1


def test_known_typos_in_real_files_are_warned_about(interop: Path) -> None:
    """The real files hold a misspelt 'permsisions' (a silent no-op in yip) and a plain
    text password: both are warnings, with a hint and a location."""
    report = validate_paths([interop / "yip"], as_kind="cloud-config")
    assert report.ok
    typos = [d for d in report.warnings if d.rule == "yip-unknown-key"]
    assert typos and all("permissions" in (d.hint or "") for d in typos)
    grub = [d for d in typos if d.file.endswith("kairos/08_grub.yaml")]
    assert [(d.line, d.column) for d in grub] == [(82, 9)]  # once, though aliased thrice
    passwords = [d for d in report.warnings if d.rule == "yip-plaintext-password"]
    assert [d.file.rsplit("/", 1)[-1] for d in passwords] == ["10_accounting.yaml"]


def test_the_cli_accepts_the_whole_folder(interop: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cosgitops",
            "validate",
            "--as",
            "cloud-config",
            "--format",
            "json",
            str(interop / "yip"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"ok": true' in result.stdout
