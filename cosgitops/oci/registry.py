"""A registry client for the distribution API v2, as an
:class:`~cosgitops.oci.store.ImageStore` bound to one repository.

Manifests and blobs are checked against their digests on every read; blobs the
registry already has are not uploaded again; large blobs go up in PATCH chunks;
``mount_blob`` asks for a cross-repository mount. Auth follows the registry's
``WWW-Authenticate`` challenge (Basic, or Bearer through its token endpoint) with
credentials from Docker's config (:mod:`cosgitops.oci.auth`). TLS is verified
(optionally against a custom CA); plain HTTP is allowed only for loopback registries.
Requests that fail with 429/5xx or a broken connection are retried with backoff.
``requests`` is imported only when the first request is made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from cosgitops.config import MiB
from cosgitops.errors import (
    AuthenticationError,
    CosgitopsError,
    DownloadError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    RemoteDataError,
    UsageError,
)
from cosgitops.fsutil import fsync_dir
from cosgitops.oci.auth import (
    Challenge,
    Credentials,
    basic_authorization,
    docker_config_dir,
    find_credentials,
    parse_challenge,
)
from cosgitops.oci.digest import Digester, check_digest_format, sha256_digest
from cosgitops.oci.media import ALL_MANIFEST_TYPES, OCI_INDEX
from cosgitops.oci.reference import Reference, check_tag, is_digest
from cosgitops.oci.store import (
    Descriptor,
    ManifestData,
    StoreOptions,
    TransferStats,
    filter_referrers,
    manifest_media_type,
    referrers_tag,
)
from cosgitops.progress import Progress, ProgressTask

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_DOWNLOAD_CHUNK = 1 * MiB
# Small network reads: when a connection breaks, the bytes of the unfinished read are
# lost, and a resume starts after the last complete one.
_NETWORK_CHUNK = 64 * 1024
_TOKEN_MIN_LIFETIME = 60.0
_CLIENT_ID = "cosgitops"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_scheme(reference: Reference, options: StoreOptions) -> str:
    """``https``, or ``http`` when ``insecure`` is asked for a loopback registry."""
    if not options.insecure:
        return "https"
    if is_loopback_host(reference.host) or options.limits.unsafe_allow_plain_http_non_loopback:
        return "http"
    raise UsageError(
        f"plain HTTP (--insecure) is refused for {reference.registry}: it is not a loopback "
        "registry, and credentials and images would travel unprotected",
        hint="use the registry over TLS (pass its CA certificate if it is private); only "
        "Limits.unsafe_allow_plain_http_non_loopback overrides this",
    )


def retry_delay(attempt: int, base: float, cap: float, retry_after: str | None) -> float:
    """Exponential backoff with jitter, or the server's ``Retry-After`` (both capped)."""
    if retry_after:
        with contextlib.suppress(ValueError):
            return max(0.0, min(float(retry_after), cap))
    delay: float = min(cap, base * 2.0**attempt)
    return delay * (0.5 + random.random() / 2)  # noqa: S311


def registry_error_text(body: bytes) -> str:
    """The ``errors`` of a distribution error body, shortened, for a message."""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors]
        text = "; ".join(parts)
    except (ValueError, AttributeError, UnicodeDecodeError, TypeError):
        text = body[:200].decode("utf-8", "replace").strip()
    return text[:300]


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class _ChunkFailedError(Exception):
    """A chunk of an upload failed in a way a fresh upload may not (5xx, broken link)."""

    def __init__(self, cause: CosgitopsError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Token:
    value: str = field(repr=False)
    expires: float


@dataclass
class _AuthState:
    scheme: str | None = None  # "basic" or "bearer" once the registry has challenged
    challenge: Challenge | None = None
    tokens: dict[str, _Token] = field(default_factory=dict)


class RegistryStore:
    """One repository in a registry, e.g. ``ghcr.io/acme/fleet/edge-gateway``."""

    def __init__(
        self,
        reference: Reference,
        options: StoreOptions | None = None,
        *,
        credentials: Credentials | None = None,
    ) -> None:
        if reference.is_oci_layout:
            raise UsageError(f"{reference} is an OCI layout, not a registry reference")
        self.options = options or StoreOptions()
        self.limits = self.options.limits
        self.reference = Reference("registry", reference.registry, reference.repository)
        self.stats = TransferStats()
        self.base_url = f"{choose_scheme(reference, self.options)}://{reference.api_host}"
        self._session: requests.Session | None = None
        self._credentials = credentials
        self._credentials_loaded = credentials is not None
        self._auth = _AuthState()

    def __repr__(self) -> str:
        return f"RegistryStore({str(self.reference)!r})"

    @property
    def registry(self) -> str:
        return self.reference.registry

    def _url(self, kind: str, target: str = "") -> str:
        return f"{self.base_url}/v2/{self.reference.repository}/{kind}/{target}"

    # -- HTTP with auth and retries -------------------------------------------------------

    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            session = requests.Session()
            # No .netrc or environment CA bundle: credentials come only from Docker's
            # config, and the CA only from the options. Proxies are applied per request.
            session.trust_env = False
            session.verify = str(self.options.ca_file) if self.options.ca_file else True
            session.headers["User-Agent"] = "cosgitops"
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scopes(self, actions: str, extra: tuple[str, ...]) -> tuple[str, ...]:
        return (f"repository:{self.reference.repository}:{actions}", *extra)

    def _authorization(self, url: str, scopes: tuple[str, ...]) -> str | None:
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            return None  # never hand our credentials to another host (e.g. blob storage)
        if self._auth.scheme == "basic" and self._credentials is not None:
            return basic_authorization(self._credentials)
        if self._auth.scheme == "bearer" and self._auth.challenge is not None:
            token = self._auth.tokens.get(" ".join(scopes))
            if token is None or token.expires <= time.monotonic():
                # The registry's challenge is known: ask for this scope up front rather
                # than eat another 401.
                token = self._fetch_token(self._auth.challenge, scopes, self._load_credentials())
                self._auth.tokens[" ".join(scopes)] = token
            return f"Bearer {token.value}"
        return None

    def _load_credentials(self) -> Credentials | None:
        if not self._credentials_loaded:
            self._credentials = find_credentials(
                self.reference.registry,
                config_dir=self.options.docker_config_dir,
                limits=self.limits,
            )
            self._credentials_loaded = True
        return self._credentials

    def _login_hint(self) -> str:
        config = docker_config_dir(self.options.docker_config_dir) / "config.json"
        return (
            f"log in with `docker login {self.registry}` (cosgitops reads {config}: auths, "
            "credsStore and credHelpers), or set DOCKER_CONFIG to the folder holding "
            "config.json"
        )

    def _authenticate(self, header: str | None, scopes: tuple[str, ...]) -> None:
        challenge = parse_challenge(header or "")
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            raise AuthenticationError(
                f"{self.registry} asks for authentication this client does not support "
                f"({(header or 'no WWW-Authenticate header')[:80]})",
                hint=self._login_hint(),
            )
        credentials = self._load_credentials()
        self._auth.challenge = challenge
        self._auth.scheme = challenge.scheme
        if challenge.scheme == "basic":
            if credentials is None or not credentials.has_password:
                raise AuthenticationError(
                    f"{self.registry} requires a username and password, and none were found",
                    hint=self._login_hint(),
                )
            return
        self._auth.tokens[" ".join(scopes)] = self._fetch_token(challenge, scopes, credentials)

    def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...], credentials: Credentials | None
    ) -> _Token:
        realm = challenge.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuthenticationError(f"{self.registry} names an invalid token endpoint")
        if (
            parts.scheme == "http"
            and credentials is not None
            and not is_loopback_host(parts.hostname)
            and not self.limits.unsafe_allow_plain_http_non_loopback
        ):
            raise AuthenticationError(
                f"{self.registry}'s token endpoint {parts.hostname} is plain HTTP; "
                "credentials are not sent over it",
                hint="the registry must use an https token endpoint",
            )
        service = challenge.params.get("service")
        wanted = list(scopes)
        offered = challenge.params.get("scope")
        if offered:
            wanted += [s for s in offered.split(" ") if s and s not in wanted]
        session = self.session()
        self.stats.requests += 1
        try:
            if credentials is not None and credentials.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": credentials.identity_token,
                    "client_id": _CLIENT_ID,
                    "scope": " ".join(wanted),
                }
                if service:
                    form["service"] = service
                response = session.post(
                    realm,
                    data=form,
                    timeout=self.limits.http_timeout_seconds,
                    proxies=self._proxies(realm),
                )
            else:
                params: list[tuple[str, str]] = [("scope", s) for s in wanted]
                if service:
                    params.append(("service", service))
                auth = (
                    (credentials.username, credentials.password)
                    if credentials is not None and credentials.has_password
                    else None
                )
                response = session.get(
                    realm,
                    params=params,
                    auth=auth,
                    timeout=self.limits.http_timeout_seconds,
                    proxies=self._proxies(realm),
                )
        except self._transport_errors() as exc:
            raise DownloadError(
                f"cannot reach the token endpoint of {self.registry} ({type(exc).__name__})",
                hint="check the network and retry",
            ) from None
        with response:
            if response.status_code in (401, 403):
                who = f"the credentials from {credentials.source}" if credentials else "anonymous"
                raise AuthenticationError(
                    f"{self.registry}'s token endpoint refused {who} access ({' '.join(wanted)})",
                    hint=self._login_hint(),
                )
            if response.status_code != 200:
                raise RegistryError(
                    f"{self.registry}'s token endpoint answered {response.status_code}"
                )
            body = self._read_limited(response, self.limits.manifest_max_bytes, "token")
        try:
            answer = json.loads(body)
            value = str(answer.get("token") or answer.get("access_token") or "")
            lifetime = float(answer.get("expires_in") or _TOKEN_MIN_LIFETIME)
        except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
            raise RemoteDataError(f"{self.registry}'s token endpoint answered no JSON") from None
        if not value:
            raise RemoteDataError(f"{self.registry}'s token endpoint answered no token")
        lifetime = max(lifetime, _TOKEN_MIN_LIFETIME)
        return _Token(value, time.monotonic() + lifetime - 10)

    def _proxies(self, url: str) -> dict[str, str]:
        import requests.utils

        host = urlsplit(url).hostname or ""
        if is_loopback_host(host):
            return {}
        return dict(requests.utils.get_environ_proxies(url))

    @staticmethod
    def _transport_errors() -> tuple[type[BaseException], ...]:
        import requests

        return (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        actions: str = "pull",
        extra_scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], Any] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """Send one request: authenticate on a 401 challenge, retry 429/5xx and broken
        connections with backoff. The caller checks the final status."""
        import requests

        scopes = self._scopes(actions, extra_scopes)
        attempts = self.limits.http_retries + 1 if retry else 1
        authenticated = False
        attempt = 0
        while True:
            send_headers = dict(headers or {})
            authorization = self._authorization(url, scopes)
            if authorization:
                send_headers["Authorization"] = authorization
            data = body() if callable(body) else body
            self.stats.requests += 1
            try:
                response = self.session().request(
                    method,
                    url,
                    headers=send_headers,
                    data=data,
                    stream=stream,
                    timeout=self.limits.http_timeout_seconds,
                    allow_redirects=method in ("GET", "HEAD"),
                    proxies=self._proxies(url),
                )
            except requests.exceptions.SSLError:
                raise RegistryError(
                    f"TLS verification of {self.registry} failed",
                    hint="if the registry uses a private CA, pass its certificate "
                    "(StoreOptions.ca_file / --ca-file); never turn verification off",
                ) from None
            except self._transport_errors() as exc:
                attempt += 1
                if attempt < attempts:
                    time.sleep(self._delay(attempt - 1, None))
                    continue
                raise DownloadError(
                    f"cannot reach {self.registry} ({type(exc).__name__}) after "
                    f"{attempt} attempt(s)",
                    hint="check that the registry is up and reachable, then retry",
                ) from None
            log.debug("%s %s -> %s", method, urlsplit(url).path, response.status_code)
            if response.status_code == 401 and not authenticated:
                authenticated = True
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                self._authenticate(challenge, scopes)
                continue
            if response.status_code in _RETRY_STATUSES:
                attempt += 1
                if attempt < attempts:
                    retry_after = response.headers.get("Retry-After")
                    response.close()
                    time.sleep(self._delay(attempt - 1, retry_after))
                    continue
            return response

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        return retry_delay(
            attempt,
            self.limits.http_backoff_seconds,
            self.limits.http_backoff_max_seconds,
            retry_after,
        )

    def _error(self, response: requests.Response, what: str) -> CosgitopsError:
        """The error for an unexpected status (the response is consumed and closed)."""
        status = response.status_code
        body = b""
        with response, contextlib.suppress(*self._transport_errors()):
            body = next(response.iter_content(64 * 1024), b"")
        details = registry_error_text(body)
        suffix = f" ({details})" if details else ""
        if status == 401:
            credentials = self._credentials
            if credentials is None:
                message = f"{self.registry} requires authentication for {what}{suffix}"
            else:
                message = (
                    f"{self.registry} refused the credentials from {credentials.source} "
                    f"for {what}{suffix}"
                )
            return AuthenticationError(message, hint=self._login_hint())
        if status == 403:
            return AuthenticationError(
                f"{self.registry} denied access to {what}{suffix}",
                hint=f"the account lacks permission on {self.reference.repository}; "
                "ask the registry's administrator for pull/push rights",
            )
        if status == 404:
            return NotFoundError(
                f"{what} not found in {self.reference}{suffix}",
                hint="check the repository, tag or digest (and that you may read it)",
            )
        if status in _RETRY_STATUSES:
            return DownloadError(
                f"{self.registry} answered {status} for {what} after "
                f"{self.limits.http_retries + 1} attempts{suffix}",
                hint="the registry is failing or overloaded; retry later",
            )
        return RegistryError(f"{self.registry} answered {status} for {what}{suffix}")

    def _read_limited(self, response: requests.Response, limit: int, what: str) -> bytes:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            response.close()
            raise RemoteDataError(
                f"{what} from {self.registry} is {length} bytes, over the limit of {limit}"
            )
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > limit:
                    raise RemoteDataError(
                        f"{what} from {self.registry} is over the limit of {limit} bytes"
                    )
                chunks.append(chunk)
        except self._transport_errors() as exc:
            raise DownloadError(
                f"reading {what} from {self.registry} broke off ({type(exc).__name__})",
                hint="retry",
            ) from None
        finally:
            response.close()
        self.stats.bytes_downloaded += total
        return b"".join(chunks)

    # -- manifests ---------------------------------------------------------------------------

    def _check_identifier(self, identifier: str) -> str:
        if identifier.startswith("sha256:") or ":" in identifier:
            return check_digest_format(identifier)
        return check_tag(identifier)

    def resolve(self, identifier: str) -> Descriptor | None:
        self._check_identifier(identifier)
        response = self.request(
            "HEAD", self._url("manifests", identifier), headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            raise self._error(response, f"manifest {identifier}")
        response.close()
        digest = response.headers.get("Docker-Content-Digest")
        length = response.headers.get("Content-Length", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not digest or not length.isdigit() or media_type not in ALL_MANIFEST_TYPES:
            return self.get_manifest(identifier).descriptor
        check_digest_format(digest)
        if is_digest(identifier) and digest != identifier:
            raise IntegrityError(
                f"{self.registry} answered digest {digest} for manifest {identifier}",
                hint="the registry is misbehaving or tampered with; nothing was used",
            )
        return Descriptor(media_type, digest, int(length))

    def get_manifest(self, identifier: str) -> ManifestData:
        self._check_identifier(identifier)
        what = f"manifest {identifier}"
        response = self.request(
            "GET",
            self._url("manifests", identifier),
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        if response.status_code != 200:
            raise self._error(response, what)
        header_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        header_digest = response.headers.get("Docker-Content-Digest")
        data = self._read_limited(response, self.limits.manifest_max_bytes, what)
        digest = sha256_digest(data)
        expected = identifier if is_digest(identifier) else header_digest
        if expected and expected != digest:
            raise IntegrityError(
                f"{what} from {self.registry} does not match its digest: expected "
                f"{expected}, got {digest}",
                hint="the registry or something between us and it altered the manifest; "
                "nothing was used",
            )
        media_type = header_type if header_type in ALL_MANIFEST_TYPES else ""
        declared = manifest_media_type(data)
        manifest = ManifestData(data, media_type or declared, digest)
        manifest.json()
        return manifest

    def put_manifest(self, data: bytes, media_type: str, *, tag: str | None = None) -> Descriptor:
        if len(data) > self.limits.manifest_max_bytes:
            raise RemoteDataError(
                f"manifest of {len(data)} bytes exceeds {self.limits.manifest_max_bytes}"
            )
        manifest = ManifestData.from_bytes(data, media_type)
        manifest.json()
        target = check_tag(tag) if tag is not None else manifest.digest
        response = self.request(
            "PUT",
            self._url("manifests", target),
            actions="pull,push",
            headers={"Content-Type": media_type},
            body=data,
        )
        if response.status_code not in (200, 201):
            raise self._error(response, f"manifest upload {target}")
        response.close()
        self.stats.bytes_uploaded += len(data)
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != manifest.digest:
            raise RegistryError(
                f"{self.registry} stored the manifest under {answered}, not {manifest.digest}",
                hint="the registry rewrote the manifest; use a registry that stores it as sent",
            )
        subject = manifest.subject()
        if subject is not None and not response.headers.get("OCI-Subject"):
            self._add_to_referrers_tag(subject, manifest)
        return manifest.descriptor

    def _add_to_referrers_tag(self, subject: str, manifest: ManifestData) -> None:
        """The tag-schema fallback for registries without the referrers API: keep an OCI
        index of ``subject``'s referrers under the tag ``sha256-<hex>``."""
        tag = referrers_tag(subject)
        try:
            current = self.get_manifest(tag)
            entries = current.children() if current.media_type == OCI_INDEX else []
        except NotFoundError:
            entries = []
        if any(entry.digest == manifest.digest for entry in entries):
            return
        entries.append(manifest.referrer_descriptor())
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [entry.to_json() for entry in entries],
        }
        self.put_manifest(json.dumps(index).encode(), OCI_INDEX, tag=tag)

    def list_tags(self) -> list[str]:
        url = _with_query(self._url("tags", "list"), {"n": "1000"})
        tags: list[str] = []
        for _page in range(self.limits.registry_max_pages):
            response = self.request("GET", url, stream=True)
            if response.status_code == 404:
                response.close()
                return []
            if response.status_code != 200:
                raise self._error(response, "tag list")
            link = response.headers.get("Link", "")
            body = self._read_limited(response, self.limits.manifest_max_bytes, "tag list")
            try:
                page = json.loads(body).get("tags") or []
                tags += [str(t) for t in page]
            except (ValueError, AttributeError, UnicodeDecodeError):
                raise RemoteDataError(
                    f"{self.registry} answered a tag list that is not JSON"
                ) from None
            next_url = _next_link(link)
            if next_url is None:
                return sorted(set(tags))
            url = urljoin(self.base_url, next_url)
        raise RemoteDataError(
            f"{self.reference} has more than {self.limits.registry_max_pages} pages of tags"
        )

    def referrers(self, digest: str, *, artifact_type: str | None = None) -> list[Descriptor]:
        check_digest_format(digest)
        url = self._url("referrers", digest)
        if artifact_type:
            url = _with_query(url, {"artifactType": artifact_type})
        response = self.request("GET", url, headers={"Accept": OCI_INDEX}, stream=True)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if response.status_code == 200 and content_type == OCI_INDEX:
            filtered = "artifactType" in response.headers.get("OCI-Filters-Applied", "")
            body = self._read_limited(response, self.limits.manifest_max_bytes, "referrers")
            found = ManifestData.from_bytes(body, OCI_INDEX).children()
            return found if filtered else filter_referrers(found, artifact_type)
        if response.status_code not in (404, 400, 405) and response.status_code != 200:
            raise self._error(response, f"referrers of {digest}")
        response.close()
        # No referrers API (distribution 2.x): the tag-schema fallback.
        try:
            index = self.get_manifest(referrers_tag(digest))
        except NotFoundError:
            return []
        if index.media_type != OCI_INDEX:
            return []
        return filter_referrers(index.children(), artifact_type)

    # -- blobs --------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        check_digest_format(digest)
        response = self.request("HEAD", self._url("blobs", digest))
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._error(response, f"blob {digest}")

    def read_blob(self, digest: str, *, max_bytes: int) -> bytes:
        check_digest_format(digest)
        what = f"blob {digest}"
        response = self.request("GET", self._url("blobs", digest), stream=True)
        if response.status_code != 200:
            raise self._error(response, what)
        data = self._read_limited(response, max_bytes, what)
        actual = sha256_digest(data)
        if actual != digest:
            raise IntegrityError(
                f"{what} from {self.registry} does not match its digest (got {actual})",
                hint="the registry's copy is corrupt or was tampered with; nothing was used",
            )
        return data

    def download_blob(
        self,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        check_digest_format(digest)
        limit = self.limits.blob_max_bytes if size is None else size
        if limit > self.limits.blob_max_bytes:
            raise RemoteDataError(
                f"blob {digest} of {size} bytes exceeds the limit of "
                f"{self.limits.blob_max_bytes} bytes"
            )
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        digester = Digester()
        if part.exists():
            if part.stat().st_size > limit:
                part.unlink()
            else:
                with part.open("rb") as handle:
                    while chunk := handle.read(_DOWNLOAD_CHUNK):
                        digester.update(chunk)
        task = progress.task(f"pull {digest[:19]}", total=size) if progress else None
        try:
            transferred, digester = self._download_into(digest, part, digester, limit, task)
        finally:
            if task:
                task.close()
        problem = None
        if size is not None and digester.size != size:
            problem = f"has {digester.size} bytes, expected {size}"
        elif digester.digest != digest:
            problem = f"does not match its digest (got {digester.digest})"
        if problem:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"blob {digest} from {self.registry} {problem}",
                hint="the registry's copy is corrupt or was tampered with; nothing was used",
            )
        os.replace(part, dest)
        fsync_dir(dest.parent)
        return transferred

    def _download_into(
        self, digest: str, part: Path, digester: Digester, limit: int, task: ProgressTask | None
    ) -> tuple[int, Digester]:
        """Stream the blob into ``part`` after what it holds (``digester`` has hashed
        that), resuming with Range when the connection breaks. Returns the bytes received
        over the network and the digester over the whole of ``part``."""
        what = f"blob {digest}"
        transferred = 0
        breaks = 0
        while True:
            headers = {"Range": f"bytes={digester.size}-"} if digester.size else {}
            response = self.request("GET", self._url("blobs", digest), headers=headers, stream=True)
            if response.status_code == 416 and digester.size:
                response.close()
                return transferred, digester  # .part holds everything; the caller verifies
            if response.status_code == 206:
                start = response.headers.get("Content-Range", "").removeprefix("bytes ")
                if not start.startswith(f"{digester.size}-"):
                    response.close()
                    raise RemoteDataError(f"{self.registry} answered the wrong range for {what}")
                mode = "ab"
            elif response.status_code == 200:
                digester = Digester()  # a whole answer: the server ignored Range
                mode = "wb"
            else:
                raise self._error(response, what)
            try:
                with response, part.open(mode) as handle:
                    for chunk in response.iter_content(_NETWORK_CHUNK):
                        if digester.size + len(chunk) > limit:
                            raise RemoteDataError(
                                f"{what} from {self.registry} is larger than {limit} bytes",
                                hint="the registry sent more than the manifest promised",
                            )
                        handle.write(chunk)
                        digester.update(chunk)
                        transferred += len(chunk)
                        self.stats.bytes_downloaded += len(chunk)
                        if task:
                            task.advance(len(chunk))
                    handle.flush()
                    os.fsync(handle.fileno())
            except self._transport_errors() as exc:
                breaks += 1
                if breaks > self.limits.http_retries:
                    raise DownloadError(
                        f"download of {what} from {self.registry} broke off after "
                        f"{digester.size} bytes ({type(exc).__name__})",
                        hint="run the same command again: it resumes from the partial file",
                    ) from None
                time.sleep(self._delay(breaks - 1, None))
                continue
            except RemoteDataError:
                part.unlink(missing_ok=True)
                raise
            return transferred, digester

    def put_blob(
        self,
        source: bytes | Path,
        digest: str,
        *,
        size: int,
        progress: Progress | None = None,
    ) -> bool:
        check_digest_format(digest)
        if size > self.limits.blob_max_bytes:
            raise RemoteDataError(
                f"blob {digest} of {size} bytes exceeds the limit of "
                f"{self.limits.blob_max_bytes} bytes"
            )
        if self.has_blob(digest):
            self.stats.blobs_skipped += 1
            return False
        task = progress.task(f"push {digest[:19]}", total=size) if progress else None
        try:
            for restart in range(self.limits.http_retries + 1):
                try:
                    self._upload(source, digest, size, task)
                    return True
                except _ChunkFailedError as failure:
                    if restart == self.limits.http_retries:
                        raise failure.cause from None
                    time.sleep(self._delay(restart, None))
        finally:
            if task:
                task.close()
        return True  # pragma: no cover (the loop returns or raises)

    def _start_upload(self) -> str:
        response = self.request("POST", self._url("blobs", "uploads/"), actions="pull,push")
        response.close()
        if response.status_code != 202:
            raise self._error(response, "blob upload")
        return self._location(response)

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.registry} started an upload but gave no Location")
        return urljoin(self.base_url + "/", location)

    def _upload(self, source: bytes | Path, digest: str, size: int, task: Any) -> None:
        location = self._start_upload()
        chunk_size = max(1, self.limits.registry_upload_chunk_bytes)
        digester = Digester()
        try:
            if size <= chunk_size:
                data = source if isinstance(source, bytes) else Path(source).read_bytes()
                digester.update(data)
                self._check_source(digester, digest, size)
                final_body: bytes = data
            else:
                for chunk in _read_chunks(source, chunk_size):
                    digester.update(chunk)
                    if digester.size > size:
                        break
                    start = digester.size - len(chunk)
                    # A chunk is not retried on its own (the session's state is then
                    # unknown): put_blob restarts the whole upload instead.
                    try:
                        response = self.request(
                            "PATCH",
                            location,
                            actions="pull,push",
                            headers={
                                "Content-Type": "application/octet-stream",
                                "Content-Range": f"{start}-{digester.size - 1}",
                            },
                            body=chunk,
                            retry=False,
                        )
                    except DownloadError as exc:
                        raise _ChunkFailedError(exc) from None
                    response.close()
                    if response.status_code in _RETRY_STATUSES:
                        raise _ChunkFailedError(self._error(response, f"chunk upload of {digest}"))
                    if response.status_code != 202:
                        raise self._error(response, f"chunk upload of {digest}")
                    self.stats.bytes_uploaded += len(chunk)
                    if task:
                        task.advance(len(chunk))
                    location = self._location(response)
                self._check_source(digester, digest, size)
                final_body = b""
        except BaseException:
            self._cancel_upload(location)
            raise
        response = self.request(
            "PUT",
            _with_query(location, {"digest": digest}),
            actions="pull,push",
            headers={"Content-Type": "application/octet-stream"},
            body=final_body,
        )
        response.close()
        if response.status_code != 201:
            raise self._error(response, f"upload of blob {digest}")
        if final_body:
            self.stats.bytes_uploaded += len(final_body)
            if task:
                task.advance(len(final_body))

    @staticmethod
    def _check_source(digester: Digester, digest: str, size: int) -> None:
        if digester.size != size or digester.digest != digest:
            raise IntegrityError(
                f"the blob to upload does not match {digest} ({size} bytes): got "
                f"{digester.digest} ({digester.size} bytes)",
                hint="the local file changed or is corrupt; nothing was uploaded",
            )

    def _cancel_upload(self, location: str) -> None:
        with contextlib.suppress(CosgitopsError):
            self.request("DELETE", location, actions="pull,push", retry=False).close()

    def mount_blob(self, digest: str, source_repository: str) -> bool:
        check_digest_format(digest)
        if source_repository == self.reference.repository:
            return self.has_blob(digest)
        url = _with_query(
            self._url("blobs", "uploads/"), {"mount": digest, "from": source_repository}
        )
        try:
            response = self.request(
                "POST",
                url,
                actions="pull,push",
                extra_scopes=(f"repository:{source_repository}:pull",),
            )
        except (AuthenticationError, RegistryError):
            return False
        response.close()
        if response.status_code == 201:
            self.stats.blobs_mounted += 1
            return True
        if response.status_code == 202:
            self._cancel_upload(self._location(response))
        return False


def _read_chunks(source: bytes | Path, chunk_size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk_size):
            yield source[start : start + chunk_size]
        return
    with Path(source).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def _next_link(header: str) -> str | None:
    """The target of ``Link: <url>; rel="next"``."""
    for part in header.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return target.strip().strip("<>")
    return None


def blob_url_path(repository: str, digest: str) -> str:
    """The API path of a blob (for tests and diagnostics)."""
    return f"/v2/{repository}/blobs/{quote(digest)}"
