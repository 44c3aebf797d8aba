"""Running mmdebstrap for a base: the command line (pure) and the run.

mmdebstrap installs the packages into a chroot and writes it as one tarball, sorted and
with times clamped to ``SOURCE_DATE_EPOCH``, so the same packages give the same bytes.
The boot integration (``cosgitops/osbase/overlay``) is copied in right after the
essential packages, before the kernel is installed, so the kernel's own initramfs is
already built with it. The customize hooks install the agent from a wheelhouse, build
GRUB's EFI binary, enable the units, record the package list and trim the tree.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cosgitops.errors import BuildError
from cosgitops.osbase.definition import BaseDefinition

AGENT_VENV = "/usr/lib/cosgitops/venv"
BOOT_DIR = "/usr/lib/cosgitops/boot"
EFI_BINARY = f"{BOOT_DIR}/efi/EFI/BOOT/BOOTX64.EFI"
IMAGE_CFG = f"{BOOT_DIR}/image.cfg"
PACKAGES_FILE = "/usr/lib/cosgitops/base/packages.tsv"
PRESET_FILE = "/usr/lib/systemd/system-preset/80-cosgitops.preset"

# GRUB modules built into BOOTX64.EFI: everything grub.cfg uses, so the ESP needs no
# module folder.
GRUB_MODULES = (
    "part_gpt",
    "fat",
    "ext2",
    "squash4",
    "loopback",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "true",
    "regexp",
    "loadenv",
    "gzio",
    "xzio",
    "lzopio",
    "serial",
    "terminal",
    "sleep",
    "reboot",
    "halt",
    "efi_gop",
    "all_video",
)

# Units an immutable, image-based device does not want: package-manager timers and a
# scrub that holds the boot for many seconds on small machines.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
)

# Kernel module folders (under kernel/) for hardware a headless image-based device
# does not drive.
TRIMMED_MODULE_DIRS = (
    "sound",
    "drivers/gpu",
    "drivers/media",
    "drivers/net/wireless",
    "drivers/infiniband",
    "drivers/staging",
    "drivers/bluetooth",
    "drivers/isdn",
    "drivers/iio",
    "drivers/input/joystick",
    "drivers/input/touchscreen",
    "net/bluetooth",
    "net/wireless",
    "net/mac80211",
)

_MISSING_PACKAGE = (
    re.compile(r"E: Unable to locate package (\S+)"),
    re.compile(r"E: Package '([^']+)' has no installation candidate"),
    re.compile(r"E: Couldn't find any package by (?:glob|regex) '([^']+)'"),
)


@dataclass(frozen=True)
class MmdebstrapPlan:
    argv: tuple[str, ...]
    env: dict[str, str]


def _quote(path: str | Path) -> str:
    return shlex.quote(str(path))


def _enable_commands(preset: Path) -> list[str]:
    """``systemctl enable/disable/mask`` for each line of the overlay's preset file."""
    commands: list[str] = []
    if not preset.is_file():
        return commands
    for line in preset.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] in ("enable", "disable", "mask"):
            commands.append(f'chroot "$1" systemctl {words[0]} {shlex.quote(words[1])}')
    return commands


def _trim_commands(definition: BaseDefinition) -> list[str]:
    trim = definition.trim
    commands: list[str] = []
    if trim.docs:
        # copyright files stay: the licences of what the image ships
        commands.append(
            'find "$1/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete; '
            'find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete; '
            'rm -rf "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/lintian"'
        )
    if trim.locales:
        commands.append(
            'find "$1/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias '
            "-exec rm -rf {} +"
        )
    if trim.kernel_modules:
        dirs = " ".join(shlex.quote(d) for d in TRIMMED_MODULE_DIRS)
        commands.append(
            'for k in "$1"/usr/lib/modules/*; do [ -d "$k/kernel" ] || continue; '
            f'for d in {dirs}; do rm -rf "$k/kernel/$d"; done; '
            'chroot "$1" depmod -a "$(basename "$k")"; done'
        )
    return commands


def plan_mmdebstrap(
    definition: BaseDefinition,
    *,
    output: Path,
    overlay: Path,
    wheelhouse: Path,
    agent_requirement: str,
    epoch: int,
    sources: Sequence[str] | None = None,
    mode: str = "auto",
) -> MmdebstrapPlan:
    """The mmdebstrap command that builds ``definition`` into the tarball ``output``."""
    wheels = "/tmp/cosgitops-wheelhouse"  # noqa: S108 - a path inside the chroot
    cmdline = definition.kernel_cmdline.replace("\\", "\\\\").replace('"', '\\"')
    modules = " ".join(GRUB_MODULES)
    customize = [
        f'mkdir -p "$1{wheels}"',
        f"sync-in {_quote(wheelhouse)} {wheels}",
        f'chroot "$1" python3 -m venv {AGENT_VENV}',
        f'chroot "$1" {AGENT_VENV}/bin/pip install --quiet --no-index --disable-pip-version-check '
        f"--find-links {wheels} {shlex.quote(agent_requirement)}",
        # the device never installs Python packages: pip and setuptools only take space
        f'chroot "$1" {AGENT_VENV}/bin/pip uninstall --quiet --yes pip setuptools',
        f'rm -rf "$1{wheels}"',
        f'ln -sf {AGENT_VENV}/bin/cosgitops "$1/usr/bin/cosgitops"',
        f'chroot "$1" grub-mkimage --format=x86_64-efi --prefix=/EFI/BOOT --output={EFI_BINARY} '
        f"{modules}",
        f'printf \'set cos_image_cmdline="%s"\\n\' "{cmdline}" > "$1{IMAGE_CFG}"',
        f'mkdir -p "$1{os.path.dirname(PACKAGES_FILE)}"',
        "chroot \"$1\" dpkg-query --show --showformat='${Package}\\t${Version}\\n' "
        f'| LC_ALL=C sort > "$1{PACKAGES_FILE}"',
        *_enable_commands(overlay / PRESET_FILE.lstrip("/")),
        *(f'chroot "$1" systemctl mask {unit}' for unit in MASKED_UNITS),
        *_trim_commands(definition),
        # a machine without an identity of its own until it boots (ephemeral /etc),
        # and mount points the boot script needs on a read-only root
        ': > "$1/etc/machine-id"',
        'mkdir -p "$1/oem" "$1/usr/local"',
    ]
    argv: list[str] = [
        "mmdebstrap",
        f"--mode={mode}",
        "--variant=minbase",
        f"--architectures={definition.architecture}",
        "--include=" + ",".join(definition.all_packages),
        f"--essential-hook=sync-in {_quote(overlay)} /",
        *(f"--customize-hook={command}" for command in customize),
        definition.suite,
        str(output),
        *(sources if sources is not None else definition.sources),
    ]
    env = {"SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
    return MmdebstrapPlan(tuple(argv), env)


def missing_packages(log: str) -> list[str]:
    """Package names apt could not find, from mmdebstrap's output."""
    names: list[str] = []
    for pattern in _MISSING_PACKAGE:
        for match in pattern.finditer(log):
            if match.group(1) not in names:
                names.append(match.group(1))
    return names


def run_mmdebstrap(
    plan: MmdebstrapPlan,
    definition: BaseDefinition,
    *,
    log_file: Path,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run ``plan``; a failure raises :class:`BuildError` naming what went wrong."""
    if shutil.which(plan.argv[0]) is None:
        raise BuildError(
            "building a base needs mmdebstrap",
            hint="install it (apt-get install mmdebstrap) and run the build again",
        )
    # the host's pip settings (find-links, index) must not leak into the chroot's pip
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(plan.env)
    env["PIP_CONFIG_FILE"] = os.devnull
    tail: list[str] = []
    with log_file.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            list(plan.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            tail.append(line)
            del tail[:-400]
            if on_line is not None:
                on_line(line.rstrip("\n"))
        status = process.wait()
    if status == 0:
        return
    text = "".join(tail)
    missing = missing_packages(text)
    if missing:
        own = [name for name in missing if name in definition.packages]
        raise BuildError(
            f"base {definition.name}: the package(s) {', '.join(missing)} do not exist in "
            f"{definition.distribution} {definition.suite} ({', '.join(definition.sources)})",
            hint=(
                f"fix the name in spec.packages of {definition.folder / 'base.yaml'}"
                if own
                else "check the mirrors in spec.mirrors"
            ),
        )
    errors = [line.strip() for line in tail if line.startswith("E:")]
    lines = text.strip().splitlines()
    detail = "; ".join(errors[-3:]) or (lines[-1] if lines else "no output")
    raise BuildError(
        f"base {definition.name}: mmdebstrap failed with exit code {status}: {detail}",
        hint=f"the whole log is in {log_file}",
    )
