"""The device's view of the signed release index (python-tuf ``ngclient``).

TUF gives the device rollback, freeze, mix-and-match and key-rotation protection:
the trusted metadata lives in ``agent/metadata`` and every refresh must verify
against it. The index may be served over http(s) or read from a local folder
(``file://`` or a plain absolute path) through the small fetchers below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.device.choose import ReleaseCandidate
from cosgitops.device.config import AgentConfig
from cosgitops.device.layout import DeviceRoot
from cosgitops.errors import ConfigError, DownloadError, RemoteDataError
from cosgitops.model import ReleaseManifest

if TYPE_CHECKING:
    from tuf.ngclient.fetcher import FetcherInterface
    from tuf.ngclient.updater import Updater

_CHUNK = 64 * 1024


@dataclass
class FetchStats:
    requests: int = 0
    bytes: int = 0
    urls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "bytes": self.bytes}


def normalise_index_url(url: str) -> str:
    """``/srv/public`` -> ``file:///srv/public``; trailing slashes dropped."""
    if url.startswith("/"):
        url = "file://" + url
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ConfigError(
            f"index URL {url!r} is not http(s), file:// or an absolute path",
            hint="set spec.index.url to where the published index folder is served",
        )
    return url.rstrip("/")


def _fetchers() -> tuple[type[FetcherInterface], Any]:
    from tuf.api import exceptions
    from tuf.ngclient.fetcher import FetcherInterface

    return FetcherInterface, exceptions


def make_fetcher(url: str, *, ca_file: Path | None, limits: Limits, stats: FetchStats) -> Any:
    """A python-tuf fetcher for ``url``'s scheme that counts requests and bytes."""
    interface, exceptions = _fetchers()

    class FileFetcher(interface):  # type: ignore[misc, valid-type]
        """Reads a published index straight from a folder: no server needed."""

        def _fetch(self, url: str) -> Iterator[bytes]:
            parsed = urlparse(url)
            path = Path(unquote(parsed.path))
            stats.requests += 1
            stats.urls.append(url)
            try:
                handle = path.open("rb")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise exceptions.DownloadHTTPError(f"{path} does not exist", 404) from None
            return self._chunks(handle)

        @staticmethod
        def _chunks(handle: Any) -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(_CHUNK):
                    stats.bytes += len(chunk)
                    yield chunk

    class HttpFetcher(interface):  # type: ignore[misc, valid-type]
        """requests-based, with a custom CA bundle and byte counting."""

        def __init__(self) -> None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = "cosgitops-device-agent"
            self._verify: bool | str = str(ca_file) if ca_file else True
            self._requests = requests

        def _fetch(self, url: str) -> Iterator[bytes]:
            stats.requests += 1
            stats.urls.append(url)
            try:
                response = self._session.get(
                    url,
                    stream=True,
                    timeout=limits.http_timeout_seconds,
                    verify=self._verify,
                )
            except self._requests.Timeout as exc:
                raise exceptions.SlowRetrievalError(str(exc)) from exc
            except self._requests.RequestException as exc:
                raise exceptions.DownloadError(f"GET {url}: {exc}") from exc
            if response.status_code >= 400:
                response.close()
                raise exceptions.DownloadHTTPError(
                    f"GET {url}: HTTP {response.status_code}", response.status_code
                )
            return self._chunks(response)

        def _chunks(self, response: Any) -> Iterator[bytes]:
            try:
                for chunk in response.iter_content(_CHUNK):
                    stats.bytes += len(chunk)
                    yield chunk
            except self._requests.RequestException as exc:
                raise exceptions.DownloadError(str(exc)) from exc
            finally:
                response.close()

    if url.startswith("file://"):
        return FileFetcher()
    return HttpFetcher()


def _loaded_role(updater: Updater, role: str) -> Any:
    """The verified metadata of a delegated ``role`` once a lookup has loaded it.

    python-tuf has no public call to list a delegated role's targets; after
    ``get_targetinfo`` has walked targets -> shard -> derivative, the verified role sits
    in the updater's trusted set. This is the one place that reads python-tuf internals;
    every path found here is looked up again through the public ``get_targetinfo``.
    """
    trusted = getattr(updater, "_trusted_set", None)
    if trusted is None:
        return None
    try:
        signed = trusted[role]
    except KeyError:
        return None
    return signed if getattr(signed, "type", None) == "targets" else None


def _remote_data_error(exc: Exception, what: str) -> RemoteDataError:
    name = type(exc).__name__
    hints = {
        "ExpiredMetadataError": "the index has expired: the publisher must run "
        "`cosgitops refresh`; until then nothing is installed",
        "BadVersionNumberError": "the server offers older index metadata than this device "
        "already trusts (a replay or rollback attack, or a stale mirror); refused",
        "UnsignedMetadataError": "index metadata is not signed by the trusted keys; refused",
        "LengthOrHashMismatchError": "index data does not match its signed hashes; refused",
    }
    return RemoteDataError(
        f"{what}: {name}: {exc}",
        hint=hints.get(name, "the index failed TUF verification; nothing was applied"),
    )


class ReleaseIndex:
    """One refresh of the index for one device (python-tuf updaters are single-use)."""

    def __init__(
        self, device: DeviceRoot, config: AgentConfig, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.device = device
        self.config = config
        self.limits = limits
        self.url = normalise_index_url(config.index_url)
        self.stats = FetchStats()
        self._updater: Updater | None = None

    # ------------------------------------------------------------ set-up

    def _new_updater(self, bootstrap: bytes | None) -> Updater:
        from tuf.ngclient.config import UpdaterConfig
        from tuf.ngclient.updater import Updater

        ca_file = (
            self.config.resolve(self.device.agent_dir, self.config.index_ca_file)
            if self.config.index_ca_file
            else None
        )
        self.device.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.device.releases_dir.mkdir(parents=True, exist_ok=True)
        max_bytes = self.limits.metadata_max_bytes
        return Updater(
            metadata_dir=str(self.device.metadata_dir),
            metadata_base_url=f"{self.url}/metadata/",
            target_dir=str(self.device.releases_dir),
            target_base_url=f"{self.url}/targets/",
            fetcher=make_fetcher(self.url, ca_file=ca_file, limits=self.limits, stats=self.stats),
            config=UpdaterConfig(
                root_max_length=max_bytes,
                snapshot_max_length=max_bytes,
                targets_max_length=max_bytes,
            ),
            bootstrap=bootstrap,
        )

    def trust(self, root_json: bytes) -> None:
        """Install ``root_json`` as the device's trust anchor (at install time only)."""
        from tuf.api import exceptions

        try:
            self._updater = self._new_updater(root_json)
        except (exceptions.RepositoryError, ValueError) as exc:
            raise RemoteDataError(
                f"the trusted root metadata is not valid TUF root metadata: {exc}",
                hint="pass the publisher's metadata/1.root.json (or a later root.json)",
            ) from exc

    def _updater_or_load(self) -> Updater:
        if self._updater is None:
            from tuf.api import exceptions

            if not (self.device.metadata_dir / "root.json").exists():
                raise ConfigError(
                    f"no trusted index root in {self.device.metadata_dir}",
                    hint="set the device up with `cosgitops device install --trusted-root ...`",
                )
            try:
                self._updater = self._new_updater(None)
            except exceptions.RepositoryError as exc:
                raise _remote_data_error(exc, "local trusted metadata") from exc
        return self._updater

    # ------------------------------------------------------------ reading

    def _guard(self, action: Any, what: str) -> Any:
        from tuf.api import exceptions

        try:
            return action()
        except exceptions.DownloadLengthMismatchError as exc:
            raise RemoteDataError(
                f"{what}: {exc}", hint="index data is larger than signed"
            ) from exc
        except exceptions.DownloadError as exc:
            raise DownloadError(
                f"{what}: {exc}", hint=f"check that the index at {self.url} is reachable"
            ) from exc
        except exceptions.RepositoryError as exc:
            raise _remote_data_error(exc, what) from exc

    def releases(self) -> tuple[list[ReleaseCandidate], list[str]]:
        """Refresh the metadata and list this derivative's releases (plus problems found)."""
        from cosgitops.publish.paths import parse_release_target_path, release_target_path

        updater = self._updater_or_load()
        derivative = self.config.derivative
        self._guard(updater.refresh, "refreshing the release index")
        probe = release_target_path(derivative, "0.0.0")
        self._guard(lambda: updater.get_targetinfo(probe), "reading the release index")
        role = _loaded_role(updater, derivative)
        candidates: list[ReleaseCandidate] = []
        problems: list[str] = []
        if role is None:
            return candidates, problems
        for path in sorted(role.targets):
            parsed = parse_release_target_path(path)
            if parsed is None or parsed[0] != derivative:
                problems.append(f"{path}: not a release path of {derivative}")
                continue
            info: Any = self._guard(
                lambda path=path: updater.get_targetinfo(path), "reading the release index"
            )
            if info is None:
                problems.append(f"{path}: not reachable through the delegations")
                continue
            try:
                candidate = ReleaseCandidate.from_custom(path, info.custom)
            except RemoteDataError as exc:
                problems.append(exc.message)
                continue
            if candidate.version != parsed[1] or candidate.derivative not in ("", derivative):
                problems.append(
                    f"{path}: its metadata names {candidate.derivative} {candidate.version}"
                )
                continue
            candidates.append(candidate)
        return candidates, problems

    def manifest(self, candidate: ReleaseCandidate) -> ReleaseManifest:
        """The full release manifest of ``candidate`` (a TUF target, verified by hash)."""
        updater = self._updater_or_load()
        info: Any = self._guard(
            lambda: updater.get_targetinfo(candidate.target_path), "reading the release index"
        )
        if info is None:
            raise RemoteDataError(f"release {candidate.version} vanished from the index")
        if info.length > self.limits.release_manifest_max_bytes:
            raise RemoteDataError(
                f"release manifest of {candidate.version} is {info.length} bytes, over the "
                f"limit of {self.limits.release_manifest_max_bytes}"
            )
        local = self.device.releases_dir / self.config.derivative / f"{candidate.version}.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        cached = updater.find_cached_target(info, str(local))
        if cached is None:
            self._guard(
                lambda: updater.download_target(info, str(local)),
                f"downloading the release manifest of {candidate.version}",
            )
        try:
            data = json.loads(local.read_bytes())
        except ValueError as exc:
            raise RemoteDataError(f"release manifest {candidate.version} is not JSON") from exc
        manifest = ReleaseManifest.from_json(data)
        if (
            manifest.version != candidate.version
            or manifest.image != candidate.image
            or manifest.derivative != self.config.derivative
        ):
            raise RemoteDataError(
                f"release manifest {candidate.target_path} disagrees with its index entry "
                f"({manifest.derivative} {manifest.version} {manifest.image})",
                hint="the publisher wrote inconsistent metadata; nothing was applied",
            )
        return manifest

    def trusted_versions(self) -> dict[str, int]:
        """Versions of the trusted top-level metadata on disk (for status output)."""
        versions: dict[str, int] = {}
        for role in ("root", "timestamp", "snapshot", "targets"):
            path = self.device.metadata_dir / f"{role}.json"
            try:
                versions[role] = int(json.loads(path.read_bytes())["signed"]["version"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return versions


def index_files_exist(url: str) -> bool:
    """True when a local index folder (file:// or path) has published metadata."""
    normalised = normalise_index_url(url)
    if not normalised.startswith("file://"):
        return True
    return os.path.isfile(
        os.path.join(unquote(urlparse(normalised).path), "metadata", "1.root.json")
    )
