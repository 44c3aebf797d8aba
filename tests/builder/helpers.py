"""Builders' test helpers: a real git repository holding derivatives, and base images
made locally (a busybox-static root, random incompressible layers), stored in an OCI
layout and, through skopeo, in a loopback registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cosgitops.builder.layers import (
    DIR_MODE,
    EXEC_MODE,
    LINK_MODE,
    LayerEntry,
    content_entries,
    write_layer,
)
from cosgitops.jsonbytes import image_json
from cosgitops.model import Derivative, Repository
from cosgitops.oci import media
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.platform import Platform
from cosgitops.oci.store import Descriptor

COMMIT_DATE = "2024-03-04T05:06:07+00:00"
COMMIT_EPOCH = 1709528767
BUSYBOX = Path("/usr/bin/busybox")
APPLETS = (
    "sh", "cat", "echo", "grep", "rm", "printf", "ls", "mkdir", "test", "[", "true", "false",
    "tee", "chmod", "sed", "env", "sleep",
)  # fmt: skip


def git(root: Path, *args: str) -> str:
    env = dict(os.environ)
    env["GIT_AUTHOR_DATE"] = COMMIT_DATE
    env["GIT_COMMITTER_DATE"] = COMMIT_DATE
    result = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def derivative_yaml(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "cosgitops/v1",
        "kind": "Derivative",
        "metadata": {"name": name, "description": f"{name} test image"},
        "spec": {"version": "1.0.0", "base": "scratch", **spec},
    }
    return yaml.safe_dump(body, sort_keys=False)


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def make_repo(
    root: Path,
    derivatives: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, str | bytes] | None = None,
    *,
    registry: str | None = None,
) -> Path:
    """A committed git repository with ``cosgitops.yaml`` and the given derivatives."""
    root.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"channels": {"stable": {}}}
    if registry:
        spec["registry"] = registry
    repository = {
        "apiVersion": "cosgitops/v1",
        "kind": "Repository",
        "metadata": {"name": "test-fleet"},
        "spec": spec,
    }
    (root / "cosgitops.yaml").write_text(yaml.safe_dump(repository, sort_keys=False))
    for name, spec_values in derivatives.items():
        write_files(
            root, {f"derivatives/{name}/derivative.yaml": derivative_yaml(name, **spec_values)}
        )
    write_files(root, files or {})
    git(root, "init", "-q")
    commit_all(root, "initial")
    return root


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def load(root: Path) -> tuple[Repository, dict[str, Derivative]]:
    """The repository and its derivatives, straight from the YAML (no validation)."""
    repository = Repository.from_data(yaml.safe_load((root / "cosgitops.yaml").read_text()), root)
    derivatives = {}
    for path in sorted((root / "derivatives").glob("*/derivative.yaml")):
        derivative = Derivative.from_data(yaml.safe_load(path.read_text()), path.parent)
        derivatives[derivative.name] = derivative
    return repository, derivatives


# ---------------------------------------------------------------- base images


def busybox_entries(extra: Mapping[str, bytes] | None = None) -> list[LayerEntry]:
    """A busybox-static root: /usr/bin/busybox, applet links in /bin, a few folders."""
    entries = [
        LayerEntry(d, "dir", DIR_MODE)
        for d in ("bin", "etc", "sbin", "tmp", "usr", "usr/bin", "var", "var/log", "root")
    ]
    entries.append(LayerEntry("usr/bin/busybox", "file", EXEC_MODE, source=BUSYBOX))
    entries += [
        LayerEntry(f"bin/{applet}", "symlink", LINK_MODE, link_target="/usr/bin/busybox")
        for applet in APPLETS
    ]
    if extra:
        entries += content_entries(
            extra, executable=[p for p in extra if p.startswith(("sbin/", "bin/", "usr/"))]
        )
    return entries


@dataclass
class BaseImage:
    layout: Path
    tag: str
    digest: str  # manifest or index digest
    layer_digests: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def reference(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def random_entries(name: str, size: int) -> list[LayerEntry]:
    """One file of incompressible bytes: a layer whose size is what it weighs."""
    return content_entries({f"var/lib/{name}.bin": os.urandom(size)})


def write_base_layout(
    layout: Path,
    layer_entries: Sequence[Sequence[LayerEntry]],
    *,
    tag: str = "1",
    per_platform: bool = False,
    platforms: Sequence[str] = ("linux/amd64",),
    labels: Mapping[str, str] | None = None,
    epoch: int = 1_600_000_000,
) -> BaseImage:
    """Write an image (an index when several platforms) into an OCI layout."""
    store = OCILayoutStore(layout)
    work = layout.parent / f".work-{layout.name}"
    blobs = [write_layer(entries, work, epoch) for entries in layer_entries]
    for blob in blobs:
        store.put_blob(blob.path, blob.digest, size=blob.size)
    descriptors = []
    for text in platforms:
        platform = Platform.parse(text)
        platform_blobs = list(blobs)
        if per_platform:
            marker = content_entries({"etc/platform": f"{platform}\n".encode()})
            extra = write_layer(marker, work, epoch)
            store.put_blob(extra.path, extra.digest, size=extra.size)
            platform_blobs.append(extra)
        config = {
            **platform.to_json(),
            "created": "2020-09-13T12:26:40Z",
            "config": {
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": dict(labels or {}),
            },
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in platform_blobs]},
            "history": [
                {"created": "2020-09-13T12:26:40Z", "created_by": "test"} for _ in platform_blobs
            ],
        }
        config_bytes = image_json(config)
        store.put_blob(config_bytes, sha256_digest(config_bytes), size=len(config_bytes))
        manifest = image_json(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_MANIFEST,
                "config": Descriptor(
                    media.OCI_CONFIG, sha256_digest(config_bytes), len(config_bytes)
                ).to_json(),
                "layers": [b.descriptor.to_json() for b in platform_blobs],
            }
        )
        single = len(platforms) == 1
        descriptor = store.put_manifest(manifest, media.OCI_MANIFEST, tag=tag if single else None)
        descriptors.append(
            Descriptor(
                media.OCI_MANIFEST, descriptor.digest, descriptor.size, platform=platform.to_json()
            )
        )
    if len(platforms) == 1:
        digest = descriptors[0].digest
    else:
        index = image_json(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_INDEX,
                "manifests": [d.to_json() for d in descriptors],
            }
        )
        digest = store.put_manifest(index, media.OCI_INDEX, tag=tag).digest
    shutil.rmtree(work, ignore_errors=True)
    return BaseImage(layout, tag, digest, [b.digest for b in blobs], sum(b.size for b in blobs))


def skopeo_copy(source: str, dest: str, *, all_platforms: bool = False) -> None:
    """Copy with the real skopeo (plain HTTP to the loopback registry)."""
    args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--src-tls-verify=false"]
    if all_platforms:
        args.append("--all")
    subprocess.run([*args, source, dest], check=True, capture_output=True, timeout=300)


def skopeo_inspect(reference: str, *, raw: bool = False, config: bool = False) -> Any:
    args = ["skopeo", "inspect", "--tls-verify=false"]
    if raw:
        args.append("--raw")
    if config:
        args.append("--config")
    result = subprocess.run([*args, reference], check=True, capture_output=True, timeout=120)
    return json.loads(result.stdout)
