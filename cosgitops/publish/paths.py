"""Where things live in the published index (pure; shared with the device agent).

One rule, used by the publisher and by devices, maps a derivative to its shard, its
delegated role and its target paths (docs/formats.md, "The release index")::

    shard      = first hex character of sha256(derivative name)
    role       = the derivative name, delegated by role "shard-<h>"
    target     = releases/<h>/<derivative>/<version>.json
    on disk    = targets/releases/<h>/<derivative>/<sha256>.<version>.json
    channel    = channels/<derivative>/<channel>.json   (Elemental export)

The shard level keeps the top-level targets role at 16 delegations however many
derivatives a fleet has, so one device's refresh stays small.
"""

from __future__ import annotations

import hashlib
import re

from cosgitops.errors import PublishError
from cosgitops.versioning import InvalidVersionError, parse_version

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
CHANNELS_DIR = "channels"
RELEASES_PREFIX = "releases"
LOCK_FILE = ".cosgitops-publish.lock"

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
SHARD_DIGITS = "0123456789abcdef"
SHARD_ROLES = tuple(f"shard-{digit}" for digit in SHARD_DIGITS)
RESERVED_ROLE_NAMES = frozenset(TOP_LEVEL_ROLES) | frozenset(SHARD_ROLES)

# A derivative name is a DNS label (docs/formats.md): safe in paths, URLs and role names.
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z", re.ASCII)
_CHANNEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z", re.ASCII)


def check_derivative_name(name: str) -> str:
    """Return ``name`` if it can be a derivative role; :class:`PublishError` if not."""
    if not isinstance(name, str) or not _DNS_LABEL_RE.match(name):
        raise PublishError(
            f"derivative name {name!r} is not a DNS label",
            hint="use lowercase letters, digits and '-', at most 63 characters",
        )
    if name in RESERVED_ROLE_NAMES:
        raise PublishError(
            f"derivative name {name!r} is reserved for a role of the index",
            hint=f"rename the derivative; {', '.join(TOP_LEVEL_ROLES)} and shard-0..f are taken",
        )
    return name


def check_channel_name(name: str) -> str:
    if not isinstance(name, str) or not _CHANNEL_RE.match(name):
        raise PublishError(
            f"channel name {name!r} is not valid",
            hint="use lowercase letters, digits, '.', '_' and '-' (e.g. stable, beta)",
        )
    return name


def check_version(version: str) -> str:
    try:
        parse_version(version)
    except InvalidVersionError as exc:
        raise PublishError(f"release version {version!r}: {exc.message}", hint=exc.hint) from exc
    return version


def shard_of(derivative: str) -> str:
    """The shard digit (``0``-``f``) of ``derivative``."""
    return hashlib.sha256(derivative.encode("utf-8")).hexdigest()[0]


def shard_role(digit: str) -> str:
    return f"shard-{digit}"


def shard_role_for(derivative: str) -> str:
    """The role that delegates to ``derivative``'s role."""
    return shard_role(shard_of(check_derivative_name(derivative)))


def role_for(derivative: str) -> str:
    """The delegated TUF role holding ``derivative``'s releases."""
    return check_derivative_name(derivative)


def shard_paths(digit: str) -> list[str]:
    """Path patterns delegated to shard ``digit``.

    python-tuf matches a pattern part by part (``*`` never spans a ``/``), hence one
    ``*`` for the derivative folder and one for the file.
    """
    return [f"{RELEASES_PREFIX}/{digit}/*/*"]


def derivative_paths(derivative: str) -> list[str]:
    return [f"{RELEASES_PREFIX}/{shard_of(derivative)}/{derivative}/*"]


def release_target_path(derivative: str, version: str) -> str:
    """The TUF target path of one release: ``releases/<h>/<derivative>/<version>.json``."""
    check_derivative_name(derivative)
    check_version(version)
    return f"{RELEASES_PREFIX}/{shard_of(derivative)}/{derivative}/{version}.json"


def parse_release_target_path(path: str) -> tuple[str, str] | None:
    """``(derivative, version)`` for a release target path, or None if it is not one."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != RELEASES_PREFIX or not parts[3].endswith(".json"):
        return None
    derivative, version = parts[2], parts[3][: -len(".json")]
    try:
        check_derivative_name(derivative)
        check_version(version)
    except PublishError:
        return None
    if shard_of(derivative) != parts[1]:
        return None
    return derivative, version


def consistent_target_file(target_path: str, sha256_hex: str) -> str:
    """The file name a consistent-snapshot client fetches: ``<dir>/<sha256>.<name>``."""
    folder, _, name = target_path.rpartition("/")
    return f"{folder}/{sha256_hex}.{name}" if folder else f"{sha256_hex}.{name}"


def metadata_file(role: str, version: int | None = None) -> str:
    """``N.<role>.json`` (consistent snapshot) or ``<role>.json`` (timestamp)."""
    return f"{role}.json" if version is None else f"{version}.{role}.json"


def channel_file(derivative: str, channel: str) -> str:
    return f"{CHANNELS_DIR}/{check_derivative_name(derivative)}/{check_channel_name(channel)}.json"
