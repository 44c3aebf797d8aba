"""Building small repositories on disk for validation tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cosgitops.validate import Diagnostic

REPOSITORY = """\
apiVersion: cosgitops/v1
kind: Repository
metadata:
  name: fleet
spec:
  channels:
    stable: {}
    beta: {}
"""


def derivative_yaml(name: str, version: str = "1.0.0", extra: str = "") -> str:
    return (
        "apiVersion: cosgitops/v1\n"
        "kind: Derivative\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  version: {version}\n"
        "  base: scratch\n" + extra
    )


def make_repository(root: Path, *names: str, repository: str = REPOSITORY) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cosgitops.yaml").write_text(repository)
    for name in names:
        add_derivative(root, name)
    return root


def add_derivative(root: Path, name: str, version: str = "1.0.0", extra: str = "") -> Path:
    folder = root / "derivatives" / name
    (folder / "oem").mkdir(parents=True, exist_ok=True)
    (folder / "overlay" / "etc").mkdir(parents=True, exist_ok=True)
    (folder / "derivative.yaml").write_text(derivative_yaml(name, version, extra))
    (folder / "oem" / "10_hello.yaml").write_text(
        "name: hello\nstages:\n  boot:\n    - commands: [echo hello]\n"
    )
    (folder / "overlay" / "etc" / "motd").write_text("hello\n")
    return folder


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True, timeout=60
    ).stdout


def git_init(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")


def found(diagnostics: list[Diagnostic]) -> set[tuple[str, str]]:
    """(file name relative to nothing in particular, rule) pairs, for compact asserts."""
    return {(d.file.rsplit("/", 1)[-1], d.rule) for d in diagnostics}


def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
