"""``cosgitops disk``: a released derivative as a bootable cOS disk, refused before
anything is written when it cannot boot or does not fit, and booted for real (a tiny
GRUB payload as the image's boot integration reads what the agent put on COS_STATE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosgitops.bootdisk.build import AGENT_ON_OEM, BLOBS_ON_PERSISTENT, build_disk
from cosgitops.bootdisk.read import DiskImage, read_grubenv
from cosgitops.bootdisk.tools import DiskSizeError
from cosgitops.device.agent import DeviceAgent
from cosgitops.device.flatten import FlattenApplier, SquashfsImage
from cosgitops.errors import CosgitopsError, IntegrityError, NotFoundError
from cosgitops.release import release
from cosgitops.vm.machine import Machine
from tests.bootdisk.test_bootable import bzimage
from tests.helpers.tinyboot import grub_efi

EFI = Path("usr/lib/cosgitops/boot/efi/EFI/BOOT")
# The payload stands in for the boot integration: it reads what the disk writer and the
# agent put on COS_STATE, as the real grub.cfg does, and boots nothing.
PAYLOAD = r"""
search --no-floppy --label COS_STATE --set=state
load_env -f ($state)/grubenv
echo "COSGITOPS {\"event\": \"grubenv\", \"active\": \"$cos_active\"}"
loopback active ($state)$cos_active
cat (active)/etc/os-release
cat (active)/etc/motd
search --no-floppy --label COS_RECOVERY --set=recovery
loopback recovery ($recovery)$cos_recovery
echo "COSGITOPS {\"event\": \"done\"}"
halt
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repository(root: Path, *, bootable: bool = True) -> Path:
    from cosgitops.scaffold import init_repository

    repo = root / "repo"
    init_repository(repo, name="fleet")
    overlay = repo / "derivatives" / "example" / "overlay"
    if bootable:
        (overlay / "boot").mkdir(parents=True)
        (overlay / "boot" / "vmlinuz-6.1.0-test").write_bytes(bzimage())
        (overlay / "boot" / "vmlinuz").symlink_to("vmlinuz-6.1.0-test")
        (overlay / "boot" / "initrd.img").write_bytes(b"\x1f\x8b not really an initrd")
        grub_efi(overlay / EFI / "BOOTX64.EFI", PAYLOAD)
        (overlay / EFI / "grub.cfg").write_text("# the boot integration's grub.cfg\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "fleet")
    report = release(repo)
    assert report.ok, [(o.name, o.error) for o in report.outcomes]
    return repo


def next_version(repo: Path, version: str, motd: str) -> None:
    folder = repo / "derivatives" / "example"
    (folder / "overlay" / "etc" / "motd").write_text(motd)
    definition = yaml.safe_load((folder / "derivative.yaml").read_text())
    definition["spec"]["version"] = version
    (folder / "derivative.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    _git(repo, "commit", "-q", "-am", version)
    assert release(repo).ok


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("bootable"))


def test_the_disk_holds_the_verified_release_and_the_configured_agent(
    repo: Path, tmp_path: Path
) -> None:
    output = tmp_path / "disk.img"
    result = build_disk(repo, "example", output)
    assert (result.version, result.derivative) == ("0.1.0", "example")
    assert result.signer and result.boot.kernel == "/boot/vmlinuz-6.1.0-test"
    disk = DiskImage(output)
    state = disk.read_json("COS_STATE", "/state.json")
    active, recovery = state["slots"]["active"], state["slots"]["recovery"]
    assert active["digest"] == result.digest == recovery["digest"]
    assert active["format"] == "squashfs" and active["storage"].startswith("state/slots/")
    assert recovery["storage"].startswith("recovery/slots/")
    env = read_grubenv(output)
    assert env["cos_active"] == active["storage"].removeprefix("state")
    assert env["cos_recovery"] == recovery["storage"].removeprefix("recovery")
    # a fresh disk's first boot is assessed: tentative, with the configured tries
    assert env["cos_passive"] == "" and env["cos_tentative"] == "1"
    assert env["cos_tries"] == "xxx" and state["boot"]["pending"] is True
    # the images on the disk are the ones the journal names, byte for byte
    copied = tmp_path / "active.squashfs"
    disk.copy_out("COS_STATE", env["cos_active"], copied)
    assert (
        "sha256:" + __import__("hashlib").sha256(copied.read_bytes()).hexdigest()
        == (active["fileDigest"])
    )
    assert SquashfsImage(copied).read_text("/etc/motd")
    # the agent folder on COS_OEM, the layer cache on COS_PERSISTENT
    agent = f"/{AGENT_ON_OEM}"
    names = disk.listdir("COS_OEM", agent)
    assert {"config.yaml", "machine-id", "metadata", "releases", "trust"} <= set(names)
    assert "lock" not in names and "blobs" not in names
    config = yaml.safe_load(disk.read_text("COS_OEM", f"{agent}/config.yaml"))
    assert config["spec"]["derivative"] == "example"
    assert config["spec"]["index"]["url"] == "file:///run/cosgitops/medium/public"
    assert config["spec"]["slots"]["format"] == "squashfs"
    assert disk.read_text("COS_OEM", f"{agent}/machine-id").strip() == result.machine_id
    assert "root.json" in disk.listdir("COS_OEM", f"{agent}/metadata")
    cached = disk.listdir("COS_PERSISTENT", f"/{BLOBS_ON_PERSISTENT}/sha256")
    assert sorted(cached) == sorted(d.split(":")[1] for d in active["layers"])
    assert disk.listdir("COS_GRUB", "/EFI/BOOT") == ["BOOTX64.EFI", "grub.cfg"]
    # a second disk is another machine
    other = build_disk(repo, "example", tmp_path / "other.img", index_url="https://updates.example")
    assert other.machine_id != result.machine_id
    other_config = DiskImage(other.disk.path).read_text("COS_OEM", f"{agent}/config.yaml")
    assert "https://updates.example" in other_config
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "active.squashfs",
        "disk.img",
        "other.img",
    ]


def test_refusals_come_before_anything_is_written(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(DiskSizeError, match="needs at least"):
        build_disk(repo, "example", tmp_path / "disk.img", size=128 * 1024 * 1024)
    with pytest.raises(NotFoundError, match="no derivative 'nope'"):
        build_disk(repo, "nope", tmp_path / "disk.img")
    with pytest.raises(NotFoundError):
        build_disk(repo, "example", tmp_path / "disk.img", version="9.9.9")
    assert list(tmp_path.iterdir()) == []


def test_an_image_that_cannot_boot_is_refused(tmp_path: Path) -> None:
    repo = make_repository(tmp_path, bootable=False)  # the scaffold's scratch example
    # the device agent refuses the image before the disk writer ever sees it
    with pytest.raises(CosgitopsError, match="no kernel at /boot/vmlinuz") as caught:
        build_disk(repo, "example", tmp_path / "out" / "disk.img")
    assert "no boot integration" in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_cli(repo: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cosgitops", *args], capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip

    done = run("disk", "example", "-C", str(repo), "-o", str(tmp_path / "d.qcow2"),
               "--format", "qcow2", "--size", "1G", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["disk"]["format"] == "qcow2" and report["disk"]["size"] == 1024**3
    refused = run(
        "disk", "example", "-C", str(repo), "-o", str(tmp_path / "d.img"), "--size", "10M"
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        "error: the disk needs at least" in refused.stderr and "hint: pass --size" in refused.stderr
    )
    bad = run("disk", "example", "-C", str(repo), "-o", str(tmp_path / "d.img"), "--size", "big")
    assert bad.returncode == 2 and "is not a size" in bad.stderr
    medium = run("medium", "example", "-C", str(repo), "-o", str(tmp_path / "medium"),
                 "--image", str(tmp_path / "medium.img"))  # fmt: skip
    assert medium.returncode == 0, medium.stderr
    assert "example 0.1.0" in medium.stdout
    assert json.loads((tmp_path / "medium" / "medium.json").read_text())["derivative"] == "example"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.qcow2", "medium", "medium.img"]


def test_the_flatten_applier_upgrades_from_the_cache(tmp_path: Path) -> None:
    """The agent with slots flattened straight from its layer cache: an upgrade fetches
    the changed layer only, keeps the old image as passive, and a tampered cache blob is
    caught by its digest and dropped."""
    repo = make_repository(tmp_path)

    class Agent(DeviceAgent):
        def _applier(self) -> FlattenApplier:
            return FlattenApplier(self.device, self.limits)

    from cosgitops.device.agent import DeviceSetup

    public = repo / "public"
    agent = Agent(tmp_path / "device")
    setup = DeviceSetup(
        index_url=str(public), derivative="example", slot_format="squashfs",
        trusted_root=public / "metadata" / "1.root.json",
        keys=(repo / ".cosgitops" / "keys" / "cosign.pub",), platform="linux/amd64",
    )  # fmt: skip
    agent.install(setup)
    next_version(repo, "0.2.0", "release 0.2.0\n")
    upgrade = agent.upgrade()
    assert upgrade.installed is not None and upgrade.installed.version == "0.2.0"
    state = agent.journal.load()
    assert state.passive is not None and state.passive.version == "0.1.0"
    assert state.active is not None
    changed = [layer for layer in state.active.layers if layer not in state.passive.layers]
    assert upgrade.cache.downloaded == changed and upgrade.cache.reused  # the oem layer
    image = SquashfsImage(agent.slots.location(state.active))
    assert image.read_text("/etc/motd") == "release 0.2.0\n"
    assert agent.status(verify=True).verified["active"] is True
    assert not (tmp_path / "device" / "state" / "transition.squashfs").exists()
    # a cached layer altered on disk: refused, and dropped from the cache
    next_version(repo, "0.3.0", "release 0.3.0\n")
    layer = upgrade.cache.reused[0]  # the 0.3.0 image shares it
    cached = tmp_path / "device" / "agent" / "blobs" / "sha256" / layer.split(":")[1]
    cached.write_bytes(cached.read_bytes()[:-1] + b"!")
    with pytest.raises(IntegrityError, match="does not match its digest"):
        agent.upgrade(force=True)
    assert not cached.exists()
    assert agent.journal.load().active.version == "0.2.0"  # type: ignore[union-attr]


@pytest.mark.boot
def test_the_disk_boots_and_grub_finds_what_the_agent_wrote(repo: Path, tmp_path: Path) -> None:
    result = build_disk(repo, "example", tmp_path / "disk.img")
    with Machine(result.disk.path, tmp_path / "vm") as machine:
        boot = machine.boot(tmp_path / "serial" / "01-first-boot.log", timeout=240)
    assert boot.outcome == "poweroff", boot.serial_log.read_text(errors="replace")
    grubenv = boot.event("grubenv")
    assert grubenv is not None
    assert grubenv["active"] == read_grubenv(result.disk.path)["cos_active"]
    assert boot.event("done") is not None
    log = boot.serial_log.read_text(errors="replace")
    assert 'VERSION_ID="0.1.0"' in log or "VERSION_ID=0.1.0" in log
    assert (
        repo / "derivatives" / "example" / "overlay" / "etc" / "motd"
    ).read_text().strip() in log
