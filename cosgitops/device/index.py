"""The device's view of the signed release index (python-tuf ``ngclient``).

TUF gives the device rollback, freeze, mix-and-match and key-rotation protection:
the trusted metadata lives in ``agent/metadata`` and every refresh must verify
against it. The index may be served over http(s) or read from a local folder
(``file://`` or a plain absolute path) through the small fetchers below.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.device import fstree
from cosgitops.device.choose import ReleaseCandidate
from cosgitops.device.config import AgentConfig
from cosgitops.device.layout import DeviceRoot
from cosgitops.errors import ConfigError, DeviceError, DownloadError, RemoteDataError
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


def _remote_data_error(exc: Exception, what: str) -> RemoteDataError:
    from tuf.api import exceptions as tuf_errors

    hints: tuple[tuple[type[Exception], str], ...] = (
        (
            tuf_errors.ExpiredMetadataError,
            "the index has expired: the publisher must run `cosgitops refresh`; until then "
            "nothing is installed",
        ),
        (
            tuf_errors.BadVersionNumberError,
            "the server offers older index metadata than this device already trusts (a "
            "replay or rollback attack, or a stale mirror); refused",
        ),
        (
            tuf_errors.UnsignedMetadataError,
            "index metadata is not signed by the trusted keys; refused",
        ),
        (
            tuf_errors.LengthOrHashMismatchError,
            "index data does not match its signed hashes; refused",
        ),
    )
    hint = next(
        (text for kind, text in hints if isinstance(exc, kind)),
        "the index failed TUF verification; nothing was applied",
    )
    return RemoteDataError(f"{what}: {type(exc).__name__}: {exc}", hint=hint)


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
        self._problems: dict[str, str] = {}  # version -> why its entry is unusable

    # ------------------------------------------------------------ set-up

    def _new_updater(self, bootstrap: bytes | None) -> Updater:
        from tuf.ngclient.config import UpdaterConfig
        from tuf.ngclient.updater import Updater

        ca_file = (
            self.config.resolve(self.device.agent_dir, self.config.index_ca_file)
            if self.config.index_ca_file
            else None
        )
        for folder in ("metadata", "releases"):  # never a link: python-tuf writes by path
            with fstree.opened_dir(
                self.device.root, ["agent", folder], create=True, shown=str(self.device.root)
            ):
                pass
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
            root = self.device.metadata_dir / "root.json"
            try:
                self._updater = self._new_updater(None)
            except (exceptions.RepositoryError, ValueError, OSError) as exc:
                raise DeviceError(
                    f"this device's trusted index root {root} is unusable: "
                    f"{type(exc).__name__}: {exc}",
                    hint="the index itself was not consulted; copy the publisher's newest "
                    f"metadata/N.root.json that you trust to {root}",
                ) from exc
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
        except (exceptions.DownloadError, exceptions.SlowRetrievalError) as exc:
            raise DownloadError(
                f"{what}: {exc}", hint=f"check that the index at {self.url} is reachable"
            ) from exc
        except exceptions.RepositoryError as exc:
            raise _remote_data_error(exc, what) from exc

    def releases(self) -> tuple[list[ReleaseCandidate], list[str]]:
        """Refresh the metadata and list this derivative's releases (plus problems found).

        The derivative's listing target names its versions; each is then looked up
        through the delegations with ``get_targetinfo`` (public python-tuf API only)."""
        from cosgitops.publish.listing import listing_target_path, parse_listing
        from cosgitops.publish.paths import release_target_path

        updater = self._updater_or_load()
        derivative = self.config.derivative
        self._guard(updater.refresh, "refreshing the release index")
        candidates: list[ReleaseCandidate] = []
        problems: list[str] = []
        self._problems = {}
        listing_path = listing_target_path(derivative)
        listing: Any = self._guard(
            lambda: updater.get_targetinfo(listing_path), "reading the release index"
        )
        if listing is None:
            problems.append(
                f"the index has no release listing for {derivative} ({listing_path}): nothing "
                "is published for it yet, or the index was written by an older publisher "
                "(`cosgitops refresh` adds the listing)"
            )
            return candidates, problems
        data = self._target_bytes(listing, derivative, "versions.json", "the release listing")
        for version in parse_listing(data, derivative):
            path = release_target_path(derivative, version)
            info: Any = self._guard(
                lambda path=path: updater.get_targetinfo(path), "reading the release index"
            )
            if info is None:
                self._problem(problems, version, f"{path}: listed, but not in the index")
                continue
            try:
                candidate = ReleaseCandidate.from_custom(path, info.custom)
            except RemoteDataError as exc:
                self._problem(problems, version, exc.message)
                continue
            if candidate.version != version or candidate.derivative not in ("", derivative):
                self._problem(
                    problems,
                    version,
                    f"{path}: its metadata names {candidate.derivative} {candidate.version}",
                )
                continue
            candidates.append(candidate)
        return candidates, problems

    def _problem(self, problems: list[str], version: str, message: str) -> None:
        problems.append(message)
        self._problems[version] = message

    def problem_for(self, version: str) -> str | None:
        """Why the index entry of ``version`` was left out, if it was (after releases())."""
        from cosgitops.versioning import InvalidVersionError, parse_version

        for listed, message in self._problems.items():
            try:
                if parse_version(listed) == parse_version(version):
                    return message
            except InvalidVersionError:
                continue
        return None

    def _target_bytes(self, info: Any, derivative: str, name: str, what: str) -> bytes:
        """A target's bytes, downloaded through python-tuf (or its verified local copy)."""
        if info.length > self.limits.release_manifest_max_bytes:
            raise RemoteDataError(
                f"{what} of {derivative} is {info.length} bytes, over the limit of "
                f"{self.limits.release_manifest_max_bytes}"
            )
        updater = self._updater_or_load()
        with fstree.opened_dir(
            self.device.root,
            ["agent", "releases", derivative],
            create=True,
            shown=str(self.device.root),
        ) as folder:
            # a real folder all the way down, and no link where python-tuf writes by path
            assert folder is not None
            existing = fstree.lstat_at(name, folder)
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                where = self.device.releases_dir / derivative / name
                raise fstree.ForeignEntryError(
                    f"{where} is a {fstree.kind_name(existing.st_mode)}, not a file the "
                    "agent wrote",
                    hint=f"move {where} out of the device root",
                )
        local = self.device.releases_dir / derivative / name
        cached = updater.find_cached_target(info, str(local))
        if cached is None:
            self._guard(lambda: updater.download_target(info, str(local)), f"downloading {what}")
        with fstree.opened_dir(self.device.root, ["agent", "releases", derivative]) as fd:
            assert fd is not None
            handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            with os.fdopen(handle, "rb") as stream:
                return stream.read(self.limits.release_manifest_max_bytes + 1)

    def manifest(self, candidate: ReleaseCandidate) -> ReleaseManifest:
        """The full release manifest of ``candidate`` (a TUF target, verified by hash)."""
        updater = self._updater_or_load()
        info: Any = self._guard(
            lambda: updater.get_targetinfo(candidate.target_path), "reading the release index"
        )
        if info is None:
            raise RemoteDataError(f"release {candidate.version} vanished from the index")
        raw = self._target_bytes(
            info,
            self.config.derivative,
            f"{candidate.version}.json",
            f"the release manifest of {candidate.version}",
        )
        try:
            data = json.loads(raw)
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
