"""Registry credentials as every OCI tool finds them, and the registry's auth challenge.

Credentials come from Docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``):
``credHelpers`` for the registry, then its ``auths`` entry (``auth`` base64
``user:password``, ``username``/``password`` or ``identitytoken``), then ``credsStore``,
each helper being ``docker-credential-<name> get`` on the PATH.

Secrets never appear in a repr, an error message or a log line: :class:`Credentials`
hides them, and errors name only the registry and where credentials came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import ConfigError
from cosgitops.oci.reference import DOCKER_HUB

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HELPER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONFIG_MAX_BYTES = 4 * 1024 * 1024
_TOKEN_USERNAME = "<token>"  # noqa: S105  # a helper's Username for an identity token


@dataclass(frozen=True)
class Credentials:
    """A username and password, or an identity (refresh) token. Secrets are not shown."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""  # where they were found, for messages: a file or a helper name

    @property
    def has_password(self) -> bool:
        return bool(self.username and self.password)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (or ``Basic realm="…"``)."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if not scheme or not re.match(r"^[A-Za-z]+$", scheme):
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if not match or match.end() == position:
            break
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key] = value
        position = match.end()
    return Challenge(scheme.lower(), params)


def docker_config_dir(override: Path | None = None) -> Path:
    if override is not None:
        return override
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".docker"


def load_docker_config(config_dir: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The parsed ``config.json`` (empty when absent) and its path."""
    path = docker_config_dir(config_dir) / "config.json"
    try:
        with path.open("rb") as handle:
            data = handle.read(_CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}, path
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > _CONFIG_MAX_BYTES:
        raise ConfigError(f"{path} is larger than {_CONFIG_MAX_BYTES} bytes")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid JSON", hint="fix the file or log in again with `docker login`"
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return value, path


def _config_key_host(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000``; Docker Hub's aliases -> ``docker.io``."""
    host = re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0]
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _registry_key(registry: str) -> str:
    return DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry


def _from_auths_entry(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    identity_token = str(entry.get("identitytoken") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ConfigError(
                f"the auth entry in {source} is not base64 of user:password",
                hint="log in again with `docker login`",
            ) from None
        user_part, sep, password_part = decoded.partition(":")
        if not sep:
            raise ConfigError(
                f"the auth entry in {source} is not base64 of user:password",
                hint="log in again with `docker login`",
            )
        username, password = user_part, password_part
    if not (username and password) and not identity_token:
        return None
    return Credentials(username, password, identity_token, source)


def find_credentials(
    registry: str, *, config_dir: Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> Credentials | None:
    """Credentials for ``registry`` (``host[:port]``), or None when there are none."""
    config, path = load_docker_config(config_dir)
    wanted = _registry_key(registry)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _config_key_host(str(key)) == wanted and helper:
                return run_credential_helper(str(helper), str(key), limits=limits)
    auths = config.get("auths") or {}
    server_url = DOCKER_HUB_AUTH_KEY if wanted == DOCKER_HUB else registry
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if _config_key_host(str(key)) == wanted:
                server_url = str(key)
                found = _from_auths_entry(entry, str(path))
                if found is not None:
                    return found
    store = config.get("credsStore")
    if store:
        return run_credential_helper(str(store), server_url, limits=limits)
    return None


def run_credential_helper(
    name: str, server_url: str, *, limits: Limits = DEFAULT_LIMITS
) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``server_url``; None when it has none."""
    if not _HELPER_NAME_RE.match(name):
        raise ConfigError(
            f"credential helper name {name!r} is invalid",
            hint="credsStore/credHelpers values are helper names like 'pass' or 'ecr-login'",
        )
    program = f"docker-credential-{name}"
    executable = shutil.which(program)
    if executable is None:
        raise ConfigError(
            f"credential helper {program} is not on PATH",
            hint=f"install {program}, or remove it from credsStore/credHelpers in config.json",
        )
    try:
        result = subprocess.run(
            [executable, "get"],
            input=server_url.encode(),
            capture_output=True,
            timeout=limits.credential_helper_timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"credential helper {program} did not answer within "
            f"{limits.credential_helper_timeout_seconds:.0f} s",
            hint="unlock the helper's store (it may be waiting for a password) and retry",
        ) from None
    if result.returncode != 0:
        said = (result.stdout + result.stderr).decode("utf-8", "replace").lower()
        if "credentials not found" in said:
            return None
        # The helper's own output is not repeated: it might contain secrets.
        raise ConfigError(
            f"credential helper {program} failed for {server_url} (exit {result.returncode})",
            hint=f"run `echo {server_url} | {program} get` to see why",
        )
    try:
        answer = json.loads(result.stdout)
        username = str(answer.get("Username") or "")
        secret = str(answer.get("Secret") or "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise ConfigError(
            f"credential helper {program} answered something that is not JSON"
        ) from None
    if not secret:
        return None
    if username == _TOKEN_USERNAME:
        return Credentials(identity_token=secret, source=program)
    return Credentials(username, secret, "", program)


def basic_authorization(credentials: Credentials) -> str:
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    return f"Basic {token}"
