"""``render``: a Dockerfile (from ``templates/Dockerfile.j2``) plus the files it copies,
so that plain ``docker build DIR`` builds the derivative without cosgitops.

The context holds the same files, modes and symlinks the daemonless builder packs
(both go through :mod:`cosgitops.builder.inputs`), normalised the same way.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cosgitops.builder.image import (
    IMAGE_KEYS,
    OS_RELEASE_LABEL,
    ImageIdentity,
    encode_os_release_label,
    format_os_release_value,
)
from cosgitops.builder.inputs import CLOUD_CONFIG_TARGET, BuildInputs
from cosgitops.builder.layers import LAYER_EPOCH, LayerEntry, sorted_entries
from cosgitops.errors import UsageError
from cosgitops.model import Derivative
from cosgitops.oci.reference import parse_reference

MARKER = ".cosgitops-render"
DOCKERFILE = "Dockerfile"
OS_RELEASE_FILE = "os-release"
_LAYOUT_BASE_REPO = "cosgitops-base"


@dataclass(frozen=True)
class RenderedContext:
    directory: Path
    dockerfile: Path
    base_image: str  # what FROM names (a docker name, also for an oci: base)
    files: int


def docker_base_name(base: str, derivative: str) -> str:
    """The name ``FROM`` uses: the base itself, or a local docker name for an OCI layout."""
    if base == "scratch":
        return "scratch"
    reference = parse_reference(base)
    if not reference.is_oci_layout:
        return base
    tag = reference.tag or "latest"
    return f"{_LAYOUT_BASE_REPO}/{derivative}:{tag}"


def label_value(value: str) -> str:
    # Dockerfile LABEL values undergo variable substitution and backslash escapes.
    escaped = re.sub(r'([\\"$])', r"\\\1", value.replace("\n", " "))
    return f'"{escaped}"'


def _run_line(command: str) -> str:
    """Shell form when it fits one Dockerfile line, else exec form (JSON) which can
    carry newlines and trailing backslashes verbatim."""
    if "\n" in command or "\r" in command or command.rstrip().endswith("\\"):
        import json

        return json.dumps(["/bin/sh", "-c", command])
    return command


def os_release_script(identity: ImageIdentity) -> str:
    """One shell line that merges the os-release additions into the image's own file
    (or a fresh one), replacing a symlink rather than writing through it."""
    identity.os_release_text(None)  # refuses keys that are not os-release keys
    additions = identity.os_release_additions()
    keys = "|".join(sorted(additions))
    fresh = " ".join(shlex.quote(line) for line in identity.fresh_os_release().splitlines())
    lines = " ".join(
        shlex.quote(f"{key}={format_os_release_value(value)}") for key, value in additions.items()
    )
    return (
        "set -eu; f=/etc/os-release; "
        'if [ -e "$f" ]; then old=$(cat "$f"); '
        "elif [ -e /usr/lib/os-release ]; then old=$(cat /usr/lib/os-release); "
        f"else old=$(printf '%s\\n' {fresh}); fi; "
        'rm -f "$f"; '
        f"{{ printf '%s\\n' \"$old\" | grep -v -E '^({keys})=' || true; "
        f"printf '%s\\n' {lines}; }} > \"$f\""
    )


def dockerfile_text(
    derivative: Derivative,
    identity: ImageIdentity,
    *,
    has_overlay: bool,
    has_oem: bool,
) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from cosgitops.resources import data_dir

    merge = derivative.needs_docker
    labels = dict(identity.annotations())
    # Computed at build time when merging, so no label can describe it here; an empty
    # value also hides a stale one inherited from the base.
    labels[OS_RELEASE_LABEL] = (
        "" if merge else encode_os_release_label(identity.os_release_text(None))
    )
    environment = Environment(
        loader=FileSystemLoader(str(data_dir("templates"))),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - a Dockerfile, not HTML
    )
    template = environment.get_template("Dockerfile.j2")
    base_is_layout = derivative.base.startswith("oci:")
    return template.render(
        name=derivative.name,
        version=derivative.version,
        revision=identity.revision,
        image=f"{identity.repo}:{identity.tag}",
        base=derivative.base,
        base_image=docker_base_name(derivative.base, derivative.name),
        base_is_layout=base_is_layout,
        packages=" ".join(shlex.quote(p) for p in derivative.packages),
        has_overlay=has_overlay,
        overlay=derivative.overlay,
        has_oem=has_oem,
        run=[_run_line(command) for command in derivative.run],
        merge_os_release=merge,
        os_release_script=os_release_script(identity) if merge else "",
        os_release_keys=[*identity.os_release_additions()] if merge else [*IMAGE_KEYS],
        labels=[(key, label_value(value)) for key, value in sorted(labels.items())],
    )


def materialise(entries: Iterable[LayerEntry], dest: Path, *, strip: str = "", epoch: int) -> int:
    """Write layer entries as real files under ``dest`` (``strip`` drops a path prefix)."""
    count = 0
    for entry in sorted_entries(entries):
        path = entry.path
        if strip:
            if path == strip or not path.startswith(strip + "/"):
                continue
            path = path[len(strip) + 1 :]
        target = dest / path
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind == "symlink":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(entry.link_target or "", target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.data is not None:
                target.write_bytes(entry.data)
            else:
                assert entry.source is not None
                shutil.copyfile(entry.source, target)
            os.chmod(target, entry.mode)
        if entry.kind != "symlink":
            os.utime(target, (epoch, epoch))
        if entry.kind != "dir":
            count += 1
    return count


def _prepare_destination(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"{dest} exists and is not a folder", hint="choose another -o folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise UsageError(
            f"{dest} is not empty and was not rendered by cosgitops",
            hint="render into an empty or new folder",
        )


def render_context(inputs: BuildInputs, dest: Path) -> RenderedContext:
    """Write the build context for ``inputs`` to ``dest`` (replacing an earlier render)."""
    derivative, identity = inputs.derivative, inputs.identity
    dest = dest.absolute()
    _prepare_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.render-", dir=dest.parent))
    try:
        overlay_files = materialise(inputs.overlay, staging / "overlay", epoch=LAYER_EPOCH)
        oem_files = materialise(
            inputs.cloud_config, staging / "oem", strip=CLOUD_CONFIG_TARGET, epoch=LAYER_EPOCH
        )
        files = overlay_files + oem_files
        text = dockerfile_text(
            derivative, identity, has_overlay=overlay_files > 0, has_oem=oem_files > 0
        )
        (staging / DOCKERFILE).write_text(text, encoding="utf-8")
        if not derivative.needs_docker:
            (staging / OS_RELEASE_FILE).write_text(identity.os_release_text(None))
        (staging / MARKER).write_text(f"{derivative.name} {derivative.version}\n")
        (staging / ".dockerignore").write_text(f"{MARKER}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RenderedContext(
        dest, dest / DOCKERFILE, docker_base_name(derivative.base, derivative.name), files
    )
