"""Rules for derivative.yaml and cosgitops.yaml beyond their schemas (pure).

Each check reads values that already passed (or failed) the schema and only looks at
values of the right type, so a schema error is never reported twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from functools import lru_cache
from typing import Any

from cosgitops.validate.diagnostics import Finding

RESERVED_OS_RELEASE = frozenset(("IMAGE_REPO", "IMAGE_TAG", "IMAGE", "TIMESTAMP"))


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def version_hint(version: str) -> str | None:
    """The versioning module's advice for a string that is not SemVer."""
    from cosgitops.versioning import InvalidVersionError, parse_version

    try:
        parse_version(version)
    except InvalidVersionError as exc:
        return exc.hint
    return None


def check_derivative(
    data: Any,
    *,
    folder_name: str | None,
    channels: Collection[str] | None,
) -> Iterator[Finding]:
    """Semantic rules for one derivative. ``folder_name`` is its folder under
    ``derivatives/`` (None when the file stands alone); ``channels`` the channels
    cosgitops.yaml declares (None when unknown)."""
    if not isinstance(data, dict):
        return
    name = _get(data, "metadata", "name")
    if folder_name is not None and isinstance(name, str) and name != folder_name:
        yield Finding(
            ("metadata", "name"),
            "name-matches-folder",
            f"metadata.name {name!r} differs from its folder name {folder_name!r}",
            f"rename the folder to derivatives/{name}/ or write name: {folder_name}",
        )
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    yield from _check_base(spec)
    release = spec.get("release")
    upgrade_from = _get(release, "upgradeFrom")
    if isinstance(upgrade_from, str):
        problem = _range_problem(upgrade_from)
        if problem is not None:
            yield Finding(
                ("spec", "release", "upgradeFrom"),
                "upgrade-range",
                problem[0],
                problem[1] or "write comparators such as '>=1.2.0' or '>=1.2.0 <2.0.0'",
            )
    if channels is not None:
        yield from _check_channels(release, channels)
    os_release = spec.get("osRelease")
    if isinstance(os_release, dict):
        for key in os_release:
            if key in RESERVED_OS_RELEASE:
                yield Finding(
                    ("spec", "osRelease", key),
                    "os-release-reserved",
                    f"{key} is set by cosgitops at build time; this value is overwritten",
                    "remove it from osRelease",
                    "warning",
                    at_key=True,
                )


def _check_base(spec: Mapping[str, Any]) -> Iterator[Finding]:
    base = spec.get("base", "scratch")
    if not isinstance(base, str) or not base:
        return
    if base == "scratch":
        for key in ("packages", "run"):
            if spec.get(key):
                yield Finding(
                    ("spec", key),
                    "base-scratch-commands",
                    f"spec.{key} needs a base image with a shell and package manager; "
                    "scratch has none",
                    "set spec.base to a cOS/Elemental/Kairos base image, or remove "
                    f"spec.{key} and ship files through the overlay",
                    at_key=True,
                )
        return
    finding = _base_finding(base)
    if finding is not None:
        yield finding


@lru_cache(maxsize=1024)  # fleets share a few bases; parse each once per run
def _base_finding(base: str) -> Finding | None:
    from cosgitops.errors import InvalidReferenceError
    from cosgitops.oci.reference import parse_reference

    try:
        reference = parse_reference(base)
    except InvalidReferenceError as exc:
        return Finding(
            ("spec", "base"),
            "base-reference",
            exc.message,
            exc.hint or "write REGISTRY/REPO:TAG@sha256:DIGEST, oci:PATH or scratch",
        )
    if not reference.is_pinned:
        return Finding(
            ("spec", "base"),
            "base-unpinned",
            f"base {base!r} is not pinned by digest: release refuses to build it",
            "append @sha256:<digest> of the image you tested (`skopeo inspect "
            f"docker://{base}` prints it) so every build uses the same bytes",
            "warning",
        )
    return None


@lru_cache(maxsize=1024)
def _range_problem(text: str) -> tuple[str, str | None] | None:
    from cosgitops.versioning import InvalidVersionError, parse_range

    try:
        parse_range(text)
    except InvalidVersionError as exc:
        return exc.message, exc.hint
    return None


def _check_channels(release: Any, channels: Collection[str]) -> Iterator[Finding]:
    declared = ", ".join(sorted(channels)) or "none"
    named = _get(release, "channels")
    if named is None:
        if "stable" not in channels:
            path: tuple[str, ...] = ("spec", "release") if isinstance(release, dict) else ("spec",)
            yield Finding(
                path,
                "channel-undeclared",
                "release.channels defaults to [stable], which cosgitops.yaml does not declare",
                f"name a declared channel in release.channels ({declared})",
            )
        return
    if not isinstance(named, list):
        return
    for index, channel in enumerate(named):
        if isinstance(channel, str) and channel not in channels:
            yield Finding(
                ("spec", "release", "channels", index),
                "channel-undeclared",
                f"channel {channel!r} is not declared in cosgitops.yaml",
                f"declare it under spec.channels in cosgitops.yaml, or use one of: {declared}",
            )


def declared_channels(repository: Any) -> set[str]:
    """Channels cosgitops.yaml declares (``stable`` when it declares none)."""
    channels = _get(repository, "spec", "channels")
    if isinstance(channels, dict) and channels:
        return {str(name) for name in channels}
    return {"stable"}


def check_repository(data: Any) -> Iterator[Finding]:
    registry = _get(data, "spec", "registry")
    if not isinstance(registry, str) or not registry or registry.startswith("oci:"):
        return
    from cosgitops.errors import InvalidReferenceError
    from cosgitops.oci.reference import parse_reference

    problem = None
    if "@" in registry or ("/" in registry and ":" in registry.rsplit("/", 1)[-1]):
        problem = "a registry prefix names a repository, without a tag or digest"
    else:
        try:
            parse_reference(registry.rstrip("/") + "/probe")
        except InvalidReferenceError as exc:
            problem = exc.message
    if problem:
        yield Finding(
            ("spec", "registry"),
            "registry-reference",
            f"registry {registry!r}: {problem}",
            "write HOST/PATH such as ghcr.io/acme/fleet, or oci:PATH for a local layout",
        )
