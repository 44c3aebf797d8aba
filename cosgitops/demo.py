"""``cosgitops demo``: the whole loop on embedded defaults, offline, without a daemon.

commit (the pre-commit hook validates) → release 1.0.0 (daemonless build into a local
OCI layout, development key, TUF index) → install it on a device root → change one
overlay file and release 1.1.0 → upgrade (only the changed layer is downloaded) →
boot-check commits → release a 1.2.0 whose health check fails → the device rolls back
by itself and never takes 1.2.0 again.

Everything it makes stays in the demo folder: ``repo/`` (the git repository),
``public/`` (the signed index) and ``device/`` (the device root).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.errors import CosgitopsError, UsageError
from cosgitops.progress import human_size

Narrate = Callable[[str], Any]

DERIVATIVE = "example"
HEALTH_FILE = Path("etc") / DERIVATIVE / "health"
# The device's health check: the release must ship a health file saying "ok". 1.2.0
# ships "degraded", as a broken configuration would, and fails it.
HEALTH_COMMAND = f'grep -qx ok "$COSGITOPS_SLOT/{HEALTH_FILE.as_posix()}"'
MAX_BOOT_ATTEMPTS = 2
_DEMO_PARTS = ("repo", "public", "device")


@dataclass
class DemoResult:
    directory: Path
    repo: Path
    public: Path
    device: Path
    seconds: float = 0.0
    upgrade_bytes: int = 0  # downloaded by the 1.0.0 -> 1.1.0 upgrade
    image_size: int = 0  # compressed size of the whole 1.1.0 image
    hook: str = ""  # which pre-commit hook ran
    status: dict[str, Any] = field(default_factory=dict)  # the device at the end

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "repo": str(self.repo),
            "public": str(self.public),
            "device": str(self.device),
            "seconds": round(self.seconds, 2),
            "upgradeBytes": self.upgrade_bytes,
            "imageSize": self.image_size,
            "hook": self.hook,
            "device_status": self.status,
        }


class DemoError(CosgitopsError):
    """A demo step did not do what the story says it does."""


def prepare_demo_directory(
    directory: Path, force: bool, parts: tuple[str, ...], replaced: str
) -> None:
    """Make ``directory`` ready for a demo: new or empty, or (``force``) holding only an
    earlier demo's ``parts``, which are removed. ``replaced`` says what --force removes."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder", hint="choose another folder")
    if directory.is_dir() and any(directory.iterdir()):
        if not force:
            raise UsageError(
                f"{directory} is not empty",
                hint="choose a new folder, or pass --force to replace an earlier demo",
            )
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in parts)
        if foreign:
            raise UsageError(
                f"{directory} holds {', '.join(foreign[:5])}, which no demo made",
                hint=f"--force only replaces {replaced}",
            )
        for part in parts:
            path = directory / part
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)


def _prepare(directory: Path, force: bool) -> None:
    prepare_demo_directory(
        directory, force, _DEMO_PARTS, "an earlier demo's repo/, public/ and device/"
    )


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # The hook runs `cosgitops validate`: make this installation's scripts findable even
    # when the demo was started by full path from a virtual environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=repo,
            env=_git_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DemoError("git is not installed", hint="install git and run the demo again") from exc
    if check and result.returncode != 0:
        raise DemoError(
            f"git {' '.join(args)} failed: {(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


def _install_hook(repo: Path) -> str:
    """The real pre-commit framework when it is installed, else a plain git hook."""
    if importlib.util.find_spec("pre_commit") is None:
        hook = repo / ".git" / "hooks" / "pre-commit"
        hook.write_text(
            "#!/bin/sh\n"
            "# Installed by `cosgitops demo` (the pre-commit framework is not installed).\n"
            "files=$(git diff --cached --name-only --diff-filter=ACMR)\n"
            '[ -z "$files" ] && exit 0\n'
            f'exec "{sys.executable}" -m cosgitops validate $files\n'
        )
        hook.chmod(0o755)
        return "git hook (cosgitops validate)"
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"],
        cwd=repo,
        env=_git_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"pre-commit install failed: {result.stderr.strip()[-2000:]}")
    return "pre-commit (cosgitops-validate hook)"


def _commit(repo: Path, message: str) -> subprocess.CompletedProcess[str]:
    _git(repo, "add", "-A")
    return _git(repo, "commit", "-q", "-m", message, check=False)


def _set_version(derivative_file: Path, version: str) -> None:
    text = derivative_file.read_text()
    updated, count = re.subn(r"(?m)^(\s*version:\s*).*$", rf"\g<1>{version}", text, count=1)
    if count != 1:
        raise DemoError(f"no spec.version line in {derivative_file}")
    derivative_file.write_text(updated)


def run_demo(directory: Path, *, force: bool = False, narrate: Narrate | None = None) -> DemoResult:
    """Run the whole story in ``directory``; raise :class:`DemoError` if a step misbehaves."""
    from cosgitops.device.agent import DeviceAgent, DeviceSetup
    from cosgitops.device.config import HealthCheck
    from cosgitops.release import release
    from cosgitops.scaffold import init_repository

    say: Narrate = narrate or (lambda _line: None)
    started = time.monotonic()
    directory = Path(directory).absolute()
    _prepare(directory, force)
    result = DemoResult(directory, directory / "repo", directory / "public", directory / "device")
    repo, public, device_root = result.repo, result.public, result.device
    derivative_file = repo / "derivatives" / DERIVATIVE / "derivative.yaml"
    overlay = repo / "derivatives" / DERIVATIVE / "overlay"

    def step(title: str) -> None:
        say("")
        say(f"== {title}")

    def release_now(label: str) -> None:
        report = release(repo, public_dir=public)
        for outcome in report.outcomes:
            if outcome.status == "failed":
                raise DemoError(f"release of {outcome.name} failed: {outcome.error}")
            if outcome.status == "released":
                say(
                    f"   {label}: built {outcome.name} {outcome.version} -> "
                    f"{outcome.image.rsplit('/', 1)[-1]}"
                )
                say(f"   signed by {outcome.signer} (DEVELOPMENT key), published to {public}")

    # -------------------------------------------------------------- 1. repository
    step("1. A git repository is the fleet's source of truth")
    init_repository(repo, name="demo-fleet")
    _set_version(derivative_file, "1.0.0")
    (overlay / HEALTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    (overlay / HEALTH_FILE).write_text("ok\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "cosgitops demo")
    _git(repo, "config", "user.email", "demo@cosgitops.invalid")
    _git(repo, "config", "commit.gpgsign", "false")
    result.hook = _install_hook(repo)
    say(f"   cosgitops init {repo}; pre-commit hook: {result.hook}")

    broken = derivative_file.read_text()
    derivative_file.write_text(broken.replace("version: 1.0.0", "version: 1.0"))
    refused = _commit(repo, "example 1.0 (broken version)")
    if refused.returncode == 0:
        raise DemoError("the pre-commit hook accepted a derivative with version 1.0")
    first_error = next(
        (line for line in (refused.stdout + refused.stderr).splitlines() if "error" in line),
        "error: (see the hook output)",
    )
    say("   git commit with `version: 1.0` -> refused by the hook:")
    say(f"     {first_error.strip()}")
    derivative_file.write_text(broken)
    accepted = _commit(repo, "example 1.0.0")
    if accepted.returncode != 0:
        raise DemoError(f"the hook refused a valid commit: {accepted.stdout}{accepted.stderr}")
    say("   fixed to `version: 1.0.0` -> the hook passes, commit accepted")

    # -------------------------------------------------------------- 2. release 1.0.0
    step("2. Release 1.0.0: daemonless build, sign, publish a TUF index")
    release_now("release")

    # -------------------------------------------------------------- 3. install a device
    step("3. Install 1.0.0 on a device")
    agent = DeviceAgent(device_root)
    setup = DeviceSetup(
        index_url=str(public),
        derivative=DERIVATIVE,
        trusted_root=public / "metadata" / "1.root.json",
        channel="stable",
        keys=(repo / ".cosgitops" / "keys" / "cosign.pub",),
        checks=(HealthCheck("health-file", HEALTH_COMMAND, 10.0),),
        max_attempts=MAX_BOOT_ATTEMPTS,
        machine_id="cosgitops-demo-device",
    )
    installed = agent.install(setup)
    say(f"   {installed.summary}")
    boot = agent.boot_check()
    say(f"   boot-check: {boot.outcome}")

    # -------------------------------------------------------------- 4. release 1.1.0
    step("4. Change one overlay file, release 1.1.0, upgrade the device")
    motd = overlay / "etc" / "motd"
    motd.write_text(motd.read_text() + "Now with release 1.1.0.\n")
    _set_version(derivative_file, "1.1.0")
    if _commit(repo, "example 1.1.0: new motd").returncode != 0:
        raise DemoError("the hook refused the 1.1.0 commit")
    release_now("release")
    upgrade = agent.upgrade()
    result.upgrade_bytes = upgrade.cache.bytes_downloaded
    result.image_size = upgrade.image_bytes
    say(f"   {upgrade.summary}")
    say(
        f"   downloaded {human_size(upgrade.cache.bytes_downloaded)} "
        f"({len(upgrade.cache.downloaded)} layer(s)) of a {human_size(upgrade.image_bytes)} "
        f"image; reused {len(upgrade.cache.reused)} cached layer(s)"
    )
    boot = agent.boot_check()
    if boot.outcome != "committed":
        raise DemoError(f"boot-check after 1.1.0 said {boot.outcome}, expected committed")
    say("   reboot -> boot-check: health check passed, 1.1.0 committed")

    # -------------------------------------------------------------- 5. a bad release
    step("5. Release 1.2.0 with a broken health file: the device rolls back")
    (overlay / HEALTH_FILE).write_text("degraded\n")
    _set_version(derivative_file, "1.2.0")
    if _commit(repo, "example 1.2.0: degraded health").returncode != 0:
        raise DemoError("the hook refused the 1.2.0 commit")
    release_now("release")
    bad = agent.upgrade()
    say(f"   {bad.summary}")
    outcome = ""
    for attempt in range(1, MAX_BOOT_ATTEMPTS + 1):
        boot = agent.boot_check()
        outcome = boot.outcome
        say(f"   reboot {attempt} -> boot-check: {outcome}")
        if outcome == "rolled-back":
            break
    if outcome != "rolled-back":
        raise DemoError(f"the failing 1.2.0 was not rolled back (last boot-check: {outcome})")
    status = agent.status()
    active = status.state.active
    if active is None or active.version != "1.1.0":
        raise DemoError("after the rollback the active slot is not 1.1.0")
    check = agent.check()
    say(f"   active again: 1.1.0; rejected: {', '.join(r.version for r in status.rejected)}")
    say(f"   device check now: {check.choice.summary}")
    result.status = agent.status().to_json()
    result.seconds = time.monotonic() - started
    return result
