"""The docker builder: for derivatives with ``packages`` or ``run``, which must execute
inside the image. It renders the same context ``render`` writes, builds it on a real
dockerd through the docker SDK, streams the log behind a progress display, and pushes
the result (or, for an OCI layout target, exports it there).

Registry credentials come from the docker config, as for ``docker push``. dockerd
itself decides whether it may speak plain HTTP to a registry: it does for 127.0.0.0/8,
other hosts must be listed in its ``insecure-registries``.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from cosgitops.builder.image import (
    OS_RELEASE_LABEL,
    encode_os_release_label,
    image_manifest,
)
from cosgitops.builder.inputs import BuildInputs
from cosgitops.builder.layers import GzipWriter, HashingWriter
from cosgitops.builder.render import docker_base_name, label_value, render_context
from cosgitops.builder.result import BuildResult, model_layers
from cosgitops.errors import BuildError, NotFoundError
from cosgitops.jsonbytes import image_json
from cosgitops.model import PlatformImage
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.media import (
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from cosgitops.oci.platform import Platform
from cosgitops.oci.reference import parse_reference
from cosgitops.oci.store import Descriptor, ImageStore, StoreOptions
from cosgitops.progress import NULL_PROGRESS, Progress

LOCAL_REPOSITORY = "cosgitops-build"
# Docker's gzip layer is byte for byte an OCI gzip layer; results name it the OCI way.
_LAYER_TYPES = {DOCKER_LAYER_GZIP: OCI_LAYER_GZIP}
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BUILDER_CHATTER = (" ---> ", "Removing intermediate container", "Successfully built")
_OUTPUT_LINES = 40
_DOCKER_TIMEOUT = 600


def docker_client() -> Any:
    """A docker SDK client for the local daemon, or a BuildError saying how to get one."""
    try:
        import docker

        client = docker.from_env(timeout=_DOCKER_TIMEOUT)
        client.ping()
    except Exception as exc:
        raise BuildError(
            f"cannot reach a docker daemon: {exc}",
            hint="start dockerd (or set DOCKER_HOST); derivatives without packages/run "
            "build without docker (--builder oci)",
        ) from exc
    return client


# ---------------------------------------------------------------- the build log


@dataclass
class BuildLog:
    """Follows the legacy builder's JSON stream: which step runs, and its output."""

    steps: int = 0
    step: int = 0
    instruction: str = ""
    output: deque[str] = field(default_factory=lambda: deque(maxlen=_OUTPUT_LINES))
    image_id: str | None = None

    def feed(self, message: Mapping[str, Any], progress: Progress, task: Any) -> None:
        if "error" in message or "errorDetail" in message:
            detail = message.get("errorDetail") or {}
            error = str(message.get("error") or detail.get("message") or "unknown error")
            self.fail(error)
        aux = message.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = message.get("stream")
        if not isinstance(text, str):
            return
        for raw_line in text.splitlines():
            line = _ANSI_RE.sub("", raw_line)
            match = _STEP_RE.match(line.strip())
            if match:
                self.step, self.steps = int(match.group(1)), int(match.group(2))
                self.instruction = match.group(3)
                self.output.clear()
                progress.note(f"step {self.step}/{self.steps}: {self.instruction}")
                task.advance(1)
            elif line.strip() and not line.startswith(_BUILDER_CHATTER):
                self.output.append(line.rstrip())

    def fail(self, error: str) -> None:
        where = (
            f"step {self.step}/{self.steps} `{self.instruction}`" if self.step else "docker build"
        )
        output = "\n".join(f"  | {line}" for line in self.output)
        message = f"{where} failed: {error.strip()}"
        if output:
            message += f"\n  output of the step (up to {_OUTPUT_LINES} last lines):\n{output}"
        raise BuildError(
            message,
            hint="fix the command or package list in derivative.yaml; `cosgitops render` "
            "writes the Dockerfile so you can reproduce it with `docker build`",
        )


def run_docker_build(
    client: Any,
    context: Path,
    tag: str,
    *,
    platform: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> str:
    """Build ``context`` as ``tag``; returns the image id."""
    import docker

    log = BuildLog()
    task = progress.task(f"docker build {tag}")
    try:
        stream = client.api.build(
            path=str(context),
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            platform=platform,
        )
        for message in stream:
            log.feed(message, progress, task)
    except docker.errors.APIError as exc:
        log.fail(str(exc.explanation or exc))
    finally:
        task.close()
    if log.image_id is None:
        try:
            log.image_id = str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            log.fail("docker reported no image")
    assert log.image_id is not None
    return log.image_id


def label_os_release(
    client: Any, image_id: str, tag: str, *, progress: Progress = NULL_PROGRESS
) -> str:
    """Record the image's final ``/etc/os-release`` in the ``cosgitops.os-release`` label
    (known only after the RUN steps), so daemonless builds on top of it can extend it.
    Returns the id of the relabelled image (the layers are unchanged)."""
    try:
        output = client.containers.run(
            image_id,
            ["cat /etc/os-release"],
            entrypoint=["/bin/sh", "-c"],
            remove=True,
            network_mode="none",
            user="0",
        )
    except Exception:  # noqa: BLE001 - the label is a convenience; the image is complete
        progress.note("could not read /etc/os-release back from the image; label left empty")
        return image_id
    text = bytes(output).decode("utf-8", "replace")
    value = label_value(encode_os_release_label(text))
    with tempfile.TemporaryDirectory(prefix="cosgitops-label-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {image_id}\nLABEL {OS_RELEASE_LABEL}={value}\n", encoding="utf-8"
        )
        return run_docker_build(client, Path(tmp), tag)


# ---------------------------------------------------------------- push


@dataclass
class PushOutcome:
    digest: str
    bytes_uploaded: int


def push_image(
    client: Any, repository: str, tag: str, *, progress: Progress = NULL_PROGRESS
) -> PushOutcome:
    """``docker push repository:tag``; returns the manifest digest the registry stored."""
    import docker

    uploaded: dict[str, int] = {}
    digest: str | None = None
    task = progress.task(f"push {repository}:{tag}")
    try:
        for message in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in message or "errorDetail" in message:
                detail = message.get("errorDetail") or {}
                raise BuildError(
                    f"pushing {repository}:{tag} failed: "
                    f"{message.get('error') or detail.get('message')}",
                    hint="check that dockerd can reach the registry and has credentials "
                    "(docker login); plain HTTP works for 127.0.0.1 only unless dockerd "
                    "lists the registry in insecure-registries",
                )
            current = (message.get("progressDetail") or {}).get("current")
            layer = message.get("id")
            if message.get("status") == "Pushing" and isinstance(current, int) and layer:
                task.advance(max(0, current - uploaded.get(layer, 0)))
                uploaded[layer] = max(current, uploaded.get(layer, 0))
            aux = message.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
                digest = aux["Digest"]
    except docker.errors.APIError as exc:
        raise BuildError(f"pushing {repository}:{tag} failed: {exc.explanation or exc}") from exc
    finally:
        task.close()
    if digest is None:
        raise BuildError(f"docker push of {repository}:{tag} reported no digest")
    return PushOutcome(digest, sum(uploaded.values()))


# ---------------------------------------------------------------- docker save -> OCI layout


def _gzip_member(source: IO[bytes], dest: Path) -> tuple[str, int]:
    with dest.open("wb") as raw:
        out = HashingWriter(raw)
        gz = GzipWriter(cast(IO[bytes], out), mtime=0)
        while chunk := source.read(1024 * 1024):
            gz.write(chunk)
        gz.close()
    return out.digest, out.size


def export_to_layout(
    client: Any,
    image_id: str,
    store: ImageStore,
    *,
    tag: str,
    annotations: Mapping[str, str],
    progress: Progress = NULL_PROGRESS,
) -> tuple[Descriptor, tuple[Descriptor, ...], Platform]:
    """Copy an image from dockerd into ``store`` (``docker save``, layers re-gzipped)."""
    image = client.images.get(image_id)
    with tempfile.TemporaryDirectory(prefix="cosgitops-export-") as tmp:
        archive_path = Path(tmp) / "image.tar"
        with archive_path.open("wb") as handle:
            for chunk in image.save(named=False):
                handle.write(chunk)
        with tarfile.open(archive_path) as archive:
            manifest_file = archive.extractfile("manifest.json")
            if manifest_file is None:
                raise BuildError("docker save produced no manifest.json")
            entry = json.loads(manifest_file.read())[0]
            config_file = archive.extractfile(entry["Config"])
            if config_file is None:
                raise BuildError("docker save produced no image config")
            config = config_file.read()
            layers: list[Descriptor] = []
            for name in entry["Layers"]:
                member = archive.extractfile(name)
                if member is None:
                    raise BuildError(f"docker save produced no layer {name}")
                blob = Path(tmp) / "layer.gz"
                digest, size = _gzip_member(member, blob)
                store.put_blob(blob, digest, size=size, progress=progress)
                layers.append(Descriptor(OCI_LAYER_GZIP, digest, size))
    config_digest = sha256_digest(config)
    store.put_blob(config, config_digest, size=len(config))
    manifest = image_json(
        image_manifest(Descriptor(OCI_CONFIG, config_digest, len(config)), layers, annotations)
    )
    descriptor = store.put_manifest(manifest, OCI_MANIFEST, tag=tag)
    config_json = json.loads(config)
    platform = Platform(
        str(config_json.get("os", "linux")),
        str(config_json.get("architecture", "amd64")),
        config_json.get("variant"),
    )
    return descriptor, tuple(layers), platform


# ---------------------------------------------------------------- OCI layout base -> dockerd


def load_layout_base(client: Any, base: str, name: str, *, options: StoreOptions) -> str:
    """Load an ``oci:PATH[:TAG]`` base into dockerd under the name ``render`` writes in
    ``FROM`` (docker 20.10 cannot read OCI layouts): a ``docker load`` archive whose
    layers are the layout's blobs."""
    from cosgitops.oci import open_store

    reference = parse_reference(base)
    store = open_store(reference, options)
    manifest = store.get_manifest(reference.identifier)
    if manifest.is_index:
        raise BuildError(
            f"the base {base} is an image index; the docker builder needs one platform",
            hint="point the base at a single-platform manifest in the layout",
        )
    value = manifest.json()
    config = Descriptor.from_json(value["config"])
    layers = [Descriptor.from_json(item) for item in value.get("layers") or []]
    docker_name = docker_base_name(base, name)
    with tempfile.TemporaryDirectory(prefix="cosgitops-load-") as tmp:
        archive_path = Path(tmp) / "base.tar"
        with tarfile.open(archive_path, "w") as archive:
            config_bytes = store.read_blob(config.digest, max_bytes=options.limits.config_max_bytes)
            _add_bytes(archive, "config.json", config_bytes)
            names = []
            for index, layer in enumerate(layers):
                blob = Path(tmp) / f"layer-{index}"
                store.download_blob(layer.digest, blob, size=layer.size)
                archive.add(blob, arcname=f"layer-{index}.tar")
                blob.unlink()
                names.append(f"layer-{index}.tar")
            listing = [{"Config": "config.json", "RepoTags": [docker_name], "Layers": names}]
            _add_bytes(archive, "manifest.json", json.dumps(listing).encode())
        with archive_path.open("rb") as handle:
            client.images.load(handle)
    return docker_name


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- the builder


def docker_build(
    inputs: BuildInputs,
    store: ImageStore,
    *,
    remote: bool,
    options: StoreOptions | None = None,
    progress: Progress = NULL_PROGRESS,
    client: Any = None,
) -> BuildResult:
    """Render, ``docker build``, then push to ``store``'s registry (``remote``) or export
    into ``store``'s OCI layout."""
    options = options or StoreOptions()
    derivative, identity = inputs.derivative, inputs.identity
    platforms = [Platform.parse(text) for text in derivative.platforms]
    if len(platforms) > 1:
        raise BuildError(
            f"{derivative.name} lists several platforms; the docker builder builds one",
            hint="build one platform per derivative, or drop packages/run to use the "
            "daemonless builder, which writes multi-platform images",
        )
    client = client or docker_client()
    if derivative.base.startswith("oci:"):
        from cosgitops.builder import base_location

        load_layout_base(
            client, base_location(inputs.repo_root, derivative.base), derivative.name,
            options=options,
        )  # fmt: skip
    reference = store.reference
    repository = (
        f"{reference.registry}/{reference.repository}"
        if remote
        else (f"{LOCAL_REPOSITORY}/{derivative.name}")
    )
    tag = identity.tag
    with tempfile.TemporaryDirectory(prefix="cosgitops-context-") as tmp:
        context = render_context(inputs, Path(tmp) / "context")
        image_id = run_docker_build(
            client,
            context.directory,
            f"{repository}:{tag}",
            platform=str(platforms[0]),
            progress=progress,
        )
    if derivative.needs_docker:
        image_id = label_os_release(client, image_id, f"{repository}:{tag}", progress=progress)
    image = client.images.get(image_id)
    platform = Platform(
        str(image.attrs.get("Os") or "linux"),
        str(image.attrs.get("Architecture") or "amd64"),
        image.attrs.get("Variant"),
    )
    if remote:
        outcome = push_image(client, repository, tag, progress=progress)
        try:
            pushed = store.get_manifest(outcome.digest)
        except NotFoundError as exc:
            raise BuildError(
                f"dockerd pushed {repository}@{outcome.digest} but the registry does not "
                "serve it to us",
                hint="is dockerd pushing to the same registry (and credentials) as cosgitops?",
            ) from exc
        layers = tuple(
            Descriptor(_LAYER_TYPES.get(d.media_type, d.media_type), d.digest, d.size)
            for d in pushed.children()[1:]
        )
        digest, media_type, uploaded = outcome.digest, pushed.media_type, outcome.bytes_uploaded
    else:
        before = store.stats.bytes_uploaded
        descriptor, layers, platform = export_to_layout(
            client, image_id, store, tag=tag, annotations=identity.annotations(), progress=progress
        )
        digest, media_type, uploaded = (
            descriptor.digest,
            OCI_MANIFEST,
            store.stats.bytes_uploaded - before,
        )
    base_layers, base_pinned = _base_info(client, derivative.base, derivative.name)
    return BuildResult(
        derivative=derivative.name,
        version=derivative.version,
        builder="docker",
        name=reference.name,
        digest=digest,
        media_type=media_type,
        tag=tag,
        platforms=(PlatformImage(str(platform), digest, model_layers(layers)),),
        new_layers=tuple(layers[base_layers:]),
        bytes_uploaded=uploaded,
        bytes_downloaded=0,
        created=identity.created,
        revision=identity.revision,
        base=base_pinned,
    )


def _base_info(client: Any, base: str, name: str) -> tuple[int, str | None]:
    """How many layers the base has in dockerd, and its pinned registry name if known."""
    if base == "scratch":
        return 0, None
    try:
        image = client.images.get(docker_base_name(base, name))
    except Exception:  # noqa: BLE001 - only informative: which layers are new
        return 0, None
    layers = len((image.attrs.get("RootFS") or {}).get("Layers") or [])
    digests = [str(d) for d in image.attrs.get("RepoDigests") or []]
    return layers, digests[0] if digests else None
