"""The per-derivative release listing: one TUF target naming a derivative's versions.

python-tuf's client has no public call that lists a delegated role's targets, so the
publisher writes ``releases/<h>/<derivative>/versions.json`` beside the releases, in
the same delegated role, and keeps it in step with that role's release targets on every
commit. A device looks it up with ``get_targetinfo``, downloads it with
``download_target`` (verified by length and hash, cached until it changes) and then
looks up each listed release with ``get_targetinfo`` (docs/formats.md, "The release
index"). Pure: bytes in, values or :class:`RemoteDataError` out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cosgitops.errors import RemoteDataError
from cosgitops.publish import paths
from cosgitops.versioning import InvalidVersionError, parse_version

LISTING_NAME = "versions.json"
LISTING_SCHEMA_VERSION = 1


def listing_target_path(derivative: str) -> str:
    """``releases/<h>/<derivative>/versions.json``."""
    paths.check_derivative_name(derivative)
    return f"{paths.RELEASES_PREFIX}/{paths.shard_of(derivative)}/{derivative}/{LISTING_NAME}"


def is_listing_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == paths.RELEASES_PREFIX and parts[3] == LISTING_NAME


def listing_bytes(derivative: str, versions: Iterable[str]) -> bytes:
    """The listing's content: compact JSON, versions in SemVer order (oldest first)."""
    ordered = sorted(set(versions), key=parse_version)
    document = {
        "schemaVersion": LISTING_SCHEMA_VERSION,
        "derivative": derivative,
        "versions": ordered,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def parse_listing(data: bytes, derivative: str) -> list[str]:
    """The versions a listing names; :class:`RemoteDataError` for anything malformed."""
    where = f"the release listing of {derivative}"
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteDataError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("schemaVersion") != LISTING_SCHEMA_VERSION:
        raise RemoteDataError(
            f"{where} has schemaVersion "
            f"{document.get('schemaVersion') if isinstance(document, dict) else None!r}, not "
            f"{LISTING_SCHEMA_VERSION}",
            hint="upgrade the agent to read indexes from a newer publisher",
        )
    if document.get("derivative") != derivative:
        raise RemoteDataError(f"{where} names derivative {document.get('derivative')!r}")
    versions = document.get("versions")
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise RemoteDataError(f"{where}: versions is not a list of strings")
    for version in versions:
        try:
            parse_version(version)
        except InvalidVersionError as exc:
            raise RemoteDataError(f"{where}: {exc.message}") from exc
    return list(dict.fromkeys(versions))
