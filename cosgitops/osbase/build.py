"""``cosgitops base build NAME``: a bootable OS base image from distribution packages.

mmdebstrap installs the packages (with the boot integration and the agent) into one
tarball; :mod:`cosgitops.osbase.rootfs` splits it into reproducible layers; the image
goes to ``<registry>/bases/<name>`` tagged with the base's version, where derivatives
name it as ``spec.base``. The config carries the base's ``/etc/os-release`` (label
``cosgitops.os-release``, which derivatives extend) and its package list (label
``cosgitops.packages``, carried into every release manifest).

The same inputs give the same image: the packages (pinned by the mirror's state), the
definition, the boot integration files and the agent wheelhouse. Their digest is kept
in the label ``cosgitops.base.inputs``, so a build whose inputs are already in the
store is skipped (``demo --boot`` reuses a base from an earlier run that way).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops import __version__
from cosgitops.builder.image import (
    OS_RELEASE_LABEL,
    HistoryStep,
    ImageIdentity,
    image_config,
    image_manifest,
    parse_os_release,
)
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import BuildError, GitError
from cosgitops.jsonbytes import image_json
from cosgitops.model import Repository
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.media import OCI_CONFIG, OCI_MANIFEST
from cosgitops.oci.platform import Platform
from cosgitops.oci.reference import Reference
from cosgitops.oci.store import Descriptor, ImageStore, StoreOptions
from cosgitops.osbase.definition import BaseDefinition, load_base
from cosgitops.osbase.mmdebstrap import PACKAGES_FILE, plan_mmdebstrap, run_mmdebstrap
from cosgitops.osbase.rootfs import OS_RELEASE_SOURCES, pack_rootfs, read_members
from cosgitops.progress import NULL_PROGRESS, Progress

PACKAGES_LABEL = "cosgitops.packages"
INPUTS_LABEL = "cosgitops.base.inputs"
BOOT_LABEL = "cosgitops.boot"  # the image carries the cosgitops boot integration
BASE_LABEL = "cosgitops.base"
WHEELHOUSE_ENV = "COSGITOPS_WHEELHOUSE"
IMAGE_PATH = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def overlay_dir() -> Path:
    """The boot integration files every base gets (shipped inside the package)."""
    return Path(__file__).resolve().parent / "overlay"


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class BaseBuildResult:
    name: str
    version: str
    reference: str  # NAME@sha256:… as stored
    digest: str
    layers: tuple[tuple[str, str, int], ...]  # (part, digest, size)
    packages: tuple[Package, ...]
    seconds: float
    reused: bool  # an image with the same inputs was already there
    spec_base: str = ""  # what a derivative writes as spec.base (configured name, pinned)

    @property
    def size(self) -> int:
        return sum(size for _part, _digest, size in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "image": self.reference,
            "specBase": self.spec_base,
            "digest": self.digest,
            "size": self.size,
            "layers": [
                {"part": part, "digest": digest, "size": size} for part, digest, size in self.layers
            ],
            "packages": len(self.packages),
            "reused": self.reused,
            "seconds": round(self.seconds, 1),
        }


def parse_packages(text: str) -> tuple[Package, ...]:
    """``dpkg-query`` lines (``name<TAB>version``) as packages, sorted by name."""
    packages = []
    for line in text.splitlines():
        name, _, version = line.partition("\t")
        if name and version:
            packages.append(Package(name.strip(), version.strip()))
    return tuple(sorted(packages, key=lambda package: package.name))


def packages_label(packages: Sequence[Package]) -> str:
    return json.dumps([p.to_json() for p in packages], separators=(",", ":"))


def packages_from_config(config: dict[str, Any] | None) -> tuple[Package, ...]:
    """The package list an image config's label carries (a base's, or a derivative's
    inherited from its base); empty when there is none or it is malformed."""
    labels = ((config or {}).get("config") or {}).get("Labels") or {}
    raw = labels.get(PACKAGES_LABEL)
    if not isinstance(raw, str):
        return ()
    try:
        items = json.loads(raw)
    except ValueError:
        return ()
    if not isinstance(items, list):
        return ()
    return tuple(
        Package(str(item["name"]), str(item["version"]))
        for item in items
        if isinstance(item, dict) and "name" in item and "version" in item
    )


def base_target(repository: Repository, name: str, target: str | None = None) -> Reference:
    """Where a base's image is stored: ``<registry>/bases/<name>``."""
    from cosgitops.builder import resolve_target

    return resolve_target(repository, f"bases/{name}", push=True, target=target).reference


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        info = path.lstat()
        digest.update(f"{relative}\0{info.st_mode:o}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def inputs_digest(definition: BaseDefinition, wheelhouse: Path, sources: Sequence[str]) -> str:
    """A digest over everything a base build reads, except the mirror's contents."""
    digest = hashlib.sha256()
    digest.update((definition.folder / "base.yaml").read_bytes())
    digest.update(_tree_digest(overlay_dir()).encode())
    for wheel in sorted(wheelhouse.glob("*.whl")):
        digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
    digest.update("\n".join(sources).encode())
    digest.update(__version__.encode())
    return "sha256:" + digest.hexdigest()


# The day each suite was released. File times in a base are clamped to it rather than to
# the commit: a commit that adds one package must leave the layers it does not touch
# bit for bit the same, or every device downloads the whole base again.
SUITE_EPOCHS = {"bookworm": 1686355200, "trixie": 1754697600}  # 2023-06-10, 2025-08-09


def file_epoch(suite: str, commit_epoch: int) -> int:
    """The time a base's file times are clamped to (``SOURCE_DATE_EPOCH`` wins)."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return commit_epoch
    return SUITE_EPOCHS.get(suite, commit_epoch)


def _epoch(repository: Repository) -> tuple[int, str]:
    from cosgitops import gitrepo

    if os.environ.get("SOURCE_DATE_EPOCH"):
        return gitrepo.source_date_epoch(repository.root), ""
    try:
        commit = gitrepo.commit_info(repository.root)
    except GitError:
        return 0, ""
    return commit.time, commit.sha


def _reusable(store: ImageStore, tag: str, inputs: str) -> tuple[str, dict[str, Any]] | None:
    from cosgitops.oci.transfer import read_image_config

    try:
        descriptor = store.resolve(tag)
        if descriptor is None:
            return None
        manifest = store.get_manifest(descriptor.digest)
        config = read_image_config(store, manifest)
    except Exception:  # noqa: BLE001 - anything unreadable is simply rebuilt
        return None
    labels = (config.get("config") or {}).get("Labels") or {}
    if labels.get(INPUTS_LABEL) != inputs:
        return None
    return manifest.digest, manifest.json()


def build_base(
    repository: Repository,
    name: str,
    *,
    wheelhouse: Path | None = None,
    sources: Sequence[str] | None = None,
    target: str | None = None,
    options: StoreOptions | None = None,
    reuse: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
) -> BaseBuildResult:
    """Build the base ``name`` of ``repository`` and store it; see the module docstring.

    ``sources`` replaces the definition's apt sources for this build (a local mirror);
    they are part of the inputs digest, not of the image."""
    from cosgitops.oci import open_store
    from cosgitops.osbase.wheels import agent_wheelhouse

    started = time.monotonic()
    definition = load_base(repository.root, name, limits=limits)
    apt_sources = tuple(sources) if sources else definition.sources
    reference = base_target(repository, name, target)
    store = open_store(reference, options or StoreOptions(limits=limits))
    tag = definition.version.replace("+", "_")
    with tempfile.TemporaryDirectory(prefix="cosgitops-base-") as tmp:
        work = Path(tmp)
        wheels, requirement = agent_wheelhouse(wheelhouse, work / "wheelhouse", progress)
        inputs = inputs_digest(definition, wheels, apt_sources)
        if reuse and (found := _reusable(store, tag, inputs)) is not None:
            digest, manifest = found
            progress.note(f"base {name} {definition.version}: unchanged inputs, reusing {digest}")
            config = _read_config(store, manifest)
            return BaseBuildResult(
                name,
                definition.version,
                f"{reference.name}@{digest}",
                digest,
                _layer_summary(manifest),
                packages_from_config(config),
                time.monotonic() - started,
                reused=True,
                spec_base=_spec_base(repository, name, tag, digest, target),
            )
        epoch, revision = _epoch(repository)
        files_epoch = file_epoch(definition.suite, epoch)
        tarball = work / "rootfs.tar"
        plan = plan_mmdebstrap(
            definition,
            output=tarball,
            overlay=overlay_dir(),
            wheelhouse=wheels,
            agent_requirement=requirement,
            epoch=files_epoch,
            sources=apt_sources,
        )
        task = progress.task(f"mmdebstrap {definition.suite} ({name})", total=None)
        try:
            run_mmdebstrap(
                plan,
                definition,
                log_file=work / "mmdebstrap.log",
                on_line=lambda line: task.advance(1) if line.startswith("I:") else None,
            )
        except BuildError as error:
            kept = _keep_log(work / "mmdebstrap.log", repository)
            if kept is not None:
                error.hint = f"{error.hint}; the log is kept at {kept}"
            raise
        finally:
            task.close()
        found_files = read_members(tarball, (*OS_RELEASE_SOURCES, PACKAGES_FILE.lstrip("/")))
        packages = parse_packages(found_files.get(PACKAGES_FILE.lstrip("/"), b"").decode())
        if not packages:
            raise BuildError(f"base {name}: the image holds no package list")
        debian = next((found_files[p].decode() for p in OS_RELEASE_SOURCES if p in found_files), "")
        identity = ImageIdentity(
            repo=f"{repository.registry.rstrip('/')}/bases/{name}",
            version=definition.version,
            revision=revision,
            epoch=epoch,
            title=name,
            description=definition.description,
            os_release={
                "VARIANT": f"cosgitops base {name}",
                "VARIANT_ID": f"cosgitops-{name}",
                "COSGITOPS_BASE": name,
                "COSGITOPS_BASE_VERSION": definition.version,
                **definition.os_release,
            },
        )
        os_release = identity.os_release_text(debian or None)
        packed = pack_rootfs(
            tarball, work / "layers", epoch=files_epoch, os_release=os_release, progress=progress
        )
        tarball.unlink()
        labels = {
            **identity.annotations(),
            OS_RELEASE_LABEL: os_release,
            PACKAGES_LABEL: packages_label(packages),
            INPUTS_LABEL: inputs,
            BOOT_LABEL: "1",
            BASE_LABEL: f"{name}:{definition.version}",
        }
        platform = Platform.parse(definition.platform)
        config = image_config(
            None,
            platform=platform,
            diff_ids=[blob.diff_id for _part, blob in packed.layers],
            history=[
                HistoryStep(f"cosgitops base: {part}", f"{blob.entries} entries")
                for part, blob in packed.layers
            ],
            labels=labels,
            epoch=epoch,
        )
        config["config"]["Env"] = list(IMAGE_PATH)
        config["config"]["Cmd"] = ["/bin/bash"]
        config_bytes = image_json(config)
        for _part, blob in packed.layers:
            store.put_blob(blob.path, blob.digest, size=blob.size, progress=progress)
        store.put_blob(config_bytes, sha256_digest(config_bytes), size=len(config_bytes))
        manifest_bytes = image_json(
            image_manifest(
                Descriptor(OCI_CONFIG, sha256_digest(config_bytes), len(config_bytes)),
                [blob.descriptor for _part, blob in packed.layers],
                identity.annotations(),
            )
        )
        stored = store.put_manifest(manifest_bytes, OCI_MANIFEST, tag=tag)
    progress.note(
        f"base {name} {definition.version}: {len(packages)} packages, {packed.entries} entries, "
        f"{len(packed.layers)} layers"
    )
    return BaseBuildResult(
        name,
        definition.version,
        f"{reference.name}@{stored.digest}",
        stored.digest,
        tuple((part, blob.digest, blob.size) for part, blob in packed.layers),
        packages,
        time.monotonic() - started,
        reused=False,
        spec_base=_spec_base(repository, name, tag, stored.digest, target),
    )


def _spec_base(repository: Repository, name: str, tag: str, digest: str, target: str | None) -> str:
    where = target or f"{repository.registry.rstrip('/')}/bases/{name}"
    return f"{where}:{tag}@{digest}"


def _read_config(store: ImageStore, manifest: dict[str, Any]) -> dict[str, Any]:
    from cosgitops.config import DEFAULT_LIMITS

    descriptor = Descriptor.from_json(manifest["config"])
    data = store.read_blob(descriptor.digest, max_bytes=DEFAULT_LIMITS.config_max_bytes)
    value: dict[str, Any] = json.loads(data)
    return value


def _layer_summary(manifest: dict[str, Any]) -> tuple[tuple[str, str, int], ...]:
    return tuple(
        (f"layer {index}", str(layer["digest"]), int(layer["size"]))
        for index, layer in enumerate(manifest.get("layers") or [])
    )


def _keep_log(log: Path, repository: Repository) -> Path | None:
    if not log.is_file():
        return None
    keep = repository.root / ".cosgitops" / "logs" / "base-mmdebstrap.log"
    try:
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(log.read_bytes())
    except OSError:
        return None
    return keep


__all__ = [
    "BaseBuildResult",
    "Package",
    "build_base",
    "packages_from_config",
    "parse_os_release",
]
