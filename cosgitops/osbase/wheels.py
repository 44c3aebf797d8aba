"""The wheelhouse a base installs the agent from: the running cosgitops and its
dependencies, as wheels for the base's Python (Debian 12: CPython 3.11 on x86-64).

Given a wheelhouse (``--wheelhouse`` or ``$COSGITOPS_WHEELHOUSE``) nothing is
downloaded; otherwise the running cosgitops is packed as a wheel (from its source
checkout, or re-packed from the installed files) and pip downloads the dependencies.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from cosgitops import __version__
from cosgitops.errors import BuildError, ConfigError
from cosgitops.progress import Progress

WHEELHOUSE_ENV = "COSGITOPS_WHEELHOUSE"
# Debian 12's python3
TARGET_PYTHON = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
TARGET_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")


def requirement() -> str:
    return f"cosgitops=={__version__}"


def _has_agent_wheel(folder: Path) -> bool:
    prefix = f"cosgitops-{__version__}-"
    return any(wheel.name.startswith(prefix) for wheel in folder.glob("*.whl"))


def _source_checkout() -> Path | None:
    top = Path(__file__).resolve().parent.parent.parent
    return top if (top / "pyproject.toml").is_file() and (top / "cosgitops").is_dir() else None


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def repack_installed(dest: Path) -> Path:
    """A wheel of the installed cosgitops distribution, from its own files."""
    from importlib import metadata

    distribution = metadata.distribution("cosgitops")
    files = distribution.files or []
    name = f"cosgitops-{__version__}-py3-none-any.whl"
    dist_info = f"cosgitops-{__version__}.dist-info"
    wheel = dest / name
    records: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(files, key=str):
            relative = str(item)
            if relative.startswith((".", "/")) or "__pycache__" in relative:
                continue
            if relative.startswith(dist_info) and relative.endswith(
                ("RECORD", "INSTALLER", "direct_url.json", "REQUESTED")
            ):
                continue
            data = Path(str(item.locate())).read_bytes()
            archive.writestr(relative, data)
            records.append(_record_line(relative, data))
        if not any(line.startswith(f"{dist_info}/WHEEL,") for line in records):
            data = (
                b"Wheel-Version: 1.0\nGenerator: cosgitops\nRoot-Is-Purelib: true\n"
                b"Tag: py3-none-any\n"
            )
            archive.writestr(f"{dist_info}/WHEEL", data)
            records.append(_record_line(f"{dist_info}/WHEEL", data))
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return wheel


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(
            f"pip {args[0]} failed: {(result.stderr or result.stdout).strip()[-1500:]}",
            hint=f"build one with `pip wheel --wheel-dir DIR cosgitops` and pass --wheelhouse DIR "
            f"(or set {WHEELHOUSE_ENV})",
        )


def agent_wheelhouse(given: Path | None, scratch: Path, progress: Progress) -> tuple[Path, str]:
    """The wheelhouse to install from, and the requirement naming the agent in it."""
    chosen = given or (Path(os.environ[WHEELHOUSE_ENV]) if os.environ.get(WHEELHOUSE_ENV) else None)
    if chosen is not None:
        if not chosen.is_dir():
            raise ConfigError(f"the wheelhouse {chosen} is not a folder")
        if not _has_agent_wheel(chosen):
            raise ConfigError(
                f"the wheelhouse {chosen} holds no cosgitops {__version__} wheel",
                hint=f"refill it with `pip wheel --wheel-dir {chosen} <this cosgitops>`",
            )
        return chosen, requirement()
    scratch.mkdir(parents=True, exist_ok=True)
    source = _source_checkout()
    progress.note("packing the cosgitops agent and downloading its dependencies (pip)")
    if source is not None:
        _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(scratch), str(source))
    else:
        repack_installed(scratch)
    _pip(
        "download",
        "--quiet",
        "--only-binary=:all:",
        *TARGET_PYTHON,
        *(f"--platform={platform}" for platform in TARGET_PLATFORMS),
        "--find-links",
        str(scratch),
        "--dest",
        str(scratch),
        requirement(),
    )
    return scratch, requirement()
