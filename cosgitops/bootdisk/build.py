"""``cosgitops disk``: a released derivative as a bootable cOS disk.

The release is installed by the device agent itself into a staged device root, exactly
as a device installs it (TUF-verified index, signature checked for the pinned digest,
layers into the layer cache), except that each slot is flattened straight into a
squashfs image (:class:`cosgitops.device.flatten.FlattenApplier`): the form GRUB boots
and the cOS-disk backend keeps on COS_STATE. The staged root then becomes the
partitions, as the boot script assembles them again on the device::

    COS_STATE       state/   state.json, grubenv, slots/<active>.squashfs
    COS_RECOVERY    recovery/  slots/<recovery>.squashfs
    COS_OEM         oem/ + .cosgitops/agent/ (config.yaml, trust/, metadata/, releases/,
                    machine-id, rejected.json)
    COS_PERSISTENT  persistent/ + .cosgitops/blobs/ (the layer cache: the first upgrade
                    downloads only the layers that changed)
    COS_GRUB        the image's /usr/lib/cosgitops/boot/efi/ (BOOTX64.EFI, grub.cfg)

Before the disk is written, the image must be able to boot (a kernel, an initrd, the
boot integration, the disk's platform) and the disk must fit an explicit size; a
refusal leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.bootdisk.bootable import BootFiles, check_bootable, copy_boot_integration
from cosgitops.bootdisk.image import DiskContent, DiskResult, ImageFormat, plan_disk
from cosgitops.bootdisk.image import write_disk_image as _write_disk_image
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import ConfigError, NotFoundError
from cosgitops.progress import NULL_PROGRESS, Progress

AGENT_ON_OEM = Path(".cosgitops") / "agent"
BLOBS_ON_PERSISTENT = Path(".cosgitops") / "blobs"
_LEFT_OUT = ("lock", "tmp")  # agent files that belong to one running agent only


@dataclass(frozen=True)
class BuiltDisk:
    disk: DiskResult
    derivative: str
    version: str
    digest: str  # the signed image digest
    signer: str
    boot: BootFiles
    index_url: str  # where the device looks for updates
    machine_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "derivative": self.derivative,
            "version": self.version,
            "digest": self.digest,
            "signer": self.signer,
            "indexUrl": self.index_url,
            "machineId": self.machine_id,
            "boot": self.boot.to_json(),
            "disk": self.disk.to_json(),
        }


def _device_agent(root: Path, limits: Limits, progress: Progress) -> Any:
    from cosgitops.device.agent import DeviceAgent

    return DeviceAgent(root, limits=limits, progress=progress)


def _trust(
    repository: Any, derivative: str, keys: Sequence[Path]
) -> tuple[tuple[Path, ...], tuple[Any, ...]]:
    """The public keys (files) and keyless identities the device trusts for ``derivative``."""
    if keys:
        return tuple(Path(key) for key in keys), ()
    rules = repository.signing.rules_for(derivative)
    if not repository.signing.trust:
        from cosgitops.signing.keys import DEVELOPMENT_KEY

        key = repository.signing.key or DEVELOPMENT_KEY
        if repository.signing.keyless or not key.endswith(".key") or key.startswith("env://"):
            raise ConfigError(
                f"cosgitops.yaml names no key devices can trust for {derivative}",
                hint="add spec.signing.trust, or pass --key PUBLIC_KEY",
            )
        return (repository.root / (key[: -len(".key")] + ".pub"),), ()
    files: list[Path] = []
    identities: list[Any] = []
    for rule in rules:
        for source in rule.keys:
            if source.startswith("env://"):
                raise ConfigError(
                    f"trust key {source} is not a file a disk can carry",
                    hint="pass the public key with --key",
                )
            path = repository.root / source
            if path not in files:
                files.append(path)
        identities.extend(identity for identity in rule.identities if identity not in identities)
    if not files and not identities:
        raise ConfigError(f"no trust rule in cosgitops.yaml covers {derivative}")
    return tuple(files), tuple(identities)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)


def _partitions(root: Path, work: Path, oem: Path | None) -> DiskContent:
    """The staged device root rearranged as the partitions hold it."""
    oem_dir, persistent_dir = root / "oem", root / "persistent"
    agent = root / "agent"
    if (agent / "blobs").exists():
        _move(agent / "blobs", persistent_dir / BLOBS_ON_PERSISTENT)
    for name in _LEFT_OUT:
        target = agent / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    _move(agent, oem_dir / AGENT_ON_OEM)
    if oem is not None:
        shutil.copytree(oem, oem_dir, dirs_exist_ok=True, symlinks=True)
    esp = work / "esp"
    esp.mkdir()
    return DiskContent(
        esp=esp,
        oem=oem_dir,
        recovery=root / "recovery",
        state=root / "state",
        persistent=persistent_dir,
    )


def _set_index_url(agent: Any, url: str) -> None:
    from cosgitops.device.config import dump_agent_config
    from cosgitops.fsutil import atomic_write_text

    config = dataclasses.replace(agent.config, index_url=url)
    atomic_write_text(agent.device.config_file, dump_agent_config(config).decode())


def default_index_url(repository: Any) -> str:
    """Where the device looks for updates: the repository's publish URL, else the index
    on an attached update medium."""
    if repository.publish.url:
        return str(repository.publish.url)
    from cosgitops.device.medium import INDEX_DIR, MOUNT_POINT

    return f"file://{MOUNT_POINT / INDEX_DIR}"


def build_disk(
    repo: Path,
    derivative: str,
    output: Path,
    *,
    version: str | None = None,
    channel: str | None = None,
    size: int | None = None,
    image_format: ImageFormat = "raw",
    index_url: str | None = None,
    keys: Sequence[Path] = (),
    oem: Path | None = None,
    platform: str = "linux/amd64",
    max_attempts: int = 3,
    update_interval: float = 3600.0,
    public_dir: Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
) -> BuiltDisk:
    """Write a bootable disk of ``derivative``'s release (newest on its channel, or
    ``version``) to ``output``."""
    from cosgitops.device.agent import DeviceSetup
    from cosgitops.device.cosdisk import GrubBootLoader
    from cosgitops.device.state import BootAssessment
    from cosgitops.validate import find_repository_root, load_repository

    started = time.monotonic()
    tree = load_repository(find_repository_root(repo), limits=limits)
    repository = tree.repository
    spec = tree.derivatives.get(derivative)
    if spec is None:
        raise NotFoundError(
            f"no derivative {derivative!r} in {tree.root}",
            hint=f"derivatives: {', '.join(sorted(tree.derivatives)) or 'none'}",
        )
    public = Path(public_dir) if public_dir else repository.root / repository.publish.dir
    trusted_root = public / "metadata" / "1.root.json"
    if not trusted_root.is_file():
        raise NotFoundError(
            f"no published index in {public}", hint="release it first: cosgitops release"
        )
    if oem is not None and not Path(oem).is_dir():
        raise NotFoundError(f"the OEM folder {oem} does not exist")
    key_files, identities = _trust(repository, derivative, keys)
    channel = channel or spec.release.channels[0]
    device_url = index_url or default_index_url(repository)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}.stage-", dir=output.parent))
    try:
        root = work / "device"
        agent = _device_agent(root, limits, progress)
        machine_id = secrets.token_hex(16)
        setup = DeviceSetup(
            index_url=str(public),
            derivative=derivative,
            trusted_root=trusted_root,
            channel=channel,
            keys=key_files,
            identities=identities,
            platform=platform,
            slot_backend="cos-disk",
            update_interval_seconds=update_interval,
            max_attempts=max_attempts,
            machine_id=machine_id,
        )
        report = agent.install(setup, version=version)
        installed = report.installed
        assert installed is not None
        # The first boot of a fresh disk is assessed too: if it fails, GRUB falls back
        # to the recovery image instead of booting a broken release forever.
        state = agent.journal.save(
            dataclasses.replace(agent.journal.load(), boot=BootAssessment(pending=True))
        )
        boot = check_bootable(agent.slots.location(installed), platform=platform)
        if state.recovery is not None:
            check_bootable(agent.slots.location(state.recovery), platform=platform)
        _set_index_url(agent, device_url)
        GrubBootLoader(agent.device).follow(state, max_attempts)
        content = _partitions(root, work, Path(oem) if oem is not None else None)
        copy_boot_integration(agent.slots.location(installed), content.esp)
        plan_disk(content, size=size)  # refuses a size that is too small, before writing
        disk = _write_disk_image(
            content, output, size=size, image_format=image_format, progress=progress
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltDisk(
        disk=dataclasses.replace(disk, seconds=time.monotonic() - started),
        derivative=derivative,
        version=installed.version,
        digest=installed.digest,
        signer=report.signer,
        boot=boot,
        index_url=device_url,
        machine_id=machine_id,
    )
