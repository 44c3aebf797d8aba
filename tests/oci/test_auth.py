"""Credentials from Docker's config.json and helpers, and the WWW-Authenticate parser."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from cosgitops.config import Limits
from cosgitops.errors import ConfigError
from cosgitops.oci.auth import (
    Challenge,
    Credentials,
    basic_authorization,
    docker_config_dir,
    find_credentials,
    parse_challenge,
    run_credential_helper,
)
from cosgitops.oci.registry import is_loopback_host, registry_error_text, retry_delay


def _config(folder: Path, value: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(value))
    return folder


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_challenges() -> None:
    bearer = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push"'
    )
    assert bearer == Challenge(
        "bearer",
        {
            "realm": "https://auth.example.com/token",
            "service": "registry.example.com",
            "scope": "repository:a/b:pull,push",
        },
    )
    assert bearer.realm == "https://auth.example.com/token"
    assert parse_challenge('Basic realm="x y"') == Challenge("basic", {"realm": "x y"})
    assert parse_challenge('BEARER realm="a\\"b", error=insufficient_scope') == Challenge(
        "bearer", {"realm": 'a"b', "error": "insufficient_scope"}
    )
    assert parse_challenge("") is None
    assert parse_challenge("!!") is None


def test_config_dir_follows_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert docker_config_dir() == tmp_path / "dc"
    assert docker_config_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("DOCKER_CONFIG")
    assert docker_config_dir() == Path.home() / ".docker"


def test_auths_entries(tmp_path: Path) -> None:
    folder = _config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pw")},
                "https://reg.example.com:5000": {"auth": _b64("u1:p1")},
                "plain.example.com": {"username": "u2", "password": "p2"},
                "token.example.com": {"identitytoken": "refresh"},
                "empty.example.com": {},
            }
        },
    )
    hub = find_credentials("docker.io", config_dir=folder)
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hub:pw")
    assert hub.source == str(folder / "config.json")
    assert find_credentials("registry-1.docker.io", config_dir=folder) == hub
    reg = find_credentials("reg.example.com:5000", config_dir=folder)
    assert reg is not None and (reg.username, reg.password) == ("u1", "p1")
    assert find_credentials("reg.example.com", config_dir=folder) is None  # port matters
    plain = find_credentials("plain.example.com", config_dir=folder)
    assert plain is not None and plain.has_password
    token = find_credentials("token.example.com", config_dir=folder)
    assert token is not None and token.identity_token == "refresh" and not token.has_password
    assert find_credentials("empty.example.com", config_dir=folder) is None
    assert find_credentials("other.example.com", config_dir=folder) is None
    assert find_credentials("x", config_dir=tmp_path / "no-config-here") is None


@pytest.mark.parametrize(
    ("content", "message", "hint"),
    [
        ("{not json", "{path} is not valid JSON", "docker login"),
        ("[]", "{path} is not a JSON object", None),
        (
            json.dumps({"auths": {"h": {"auth": "%%%"}}}),
            "the auth entry in {path} is not base64 of user:password",
            "docker login",
        ),
        (
            json.dumps({"auths": {"h": {"auth": _b64("nocolon")}}}),
            "the auth entry in {path} is not base64 of user:password",
            "docker login",
        ),
    ],
)
def test_broken_configs_are_clear_errors(
    tmp_path: Path, content: str, message: str, hint: str | None
) -> None:
    """Each names the file and what is wrong with it, and never echoes the secret."""
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError) as excinfo:
        find_credentials("h", config_dir=tmp_path)
    assert str(excinfo.value) == message.format(path=tmp_path / "config.json")
    assert "nocolon" not in str(excinfo.value) and "%%%" not in str(excinfo.value)
    if hint is not None:
        assert excinfo.value.hint is not None and hint in excinfo.value.hint


def test_secrets_are_not_in_repr() -> None:
    credentials = Credentials("user", "hunter2", "idtok", "somewhere")
    assert "hunter2" not in repr(credentials) and "idtok" not in repr(credentials)
    assert "user" in repr(credentials)
    assert basic_authorization(credentials) == "Basic " + _b64("user:hunter2")


def _helper(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "docker-credential-fake"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_credential_helper_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _helper(
        tmp_path,
        "read -r server\n"
        'case "$server" in\n'
        '  pw.example.com) echo \'{"Username":"u","Secret":"s"}\' ;;\n'
        '  tok.example.com) echo \'{"Username":"<token>","Secret":"refresh"}\' ;;\n'
        '  broken.example.com) echo "secret-in-stderr" >&2; exit 3 ;;\n'
        '  junk.example.com) echo "not json" ;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pw = run_credential_helper("fake", "pw.example.com")
    assert pw == Credentials("u", "s", "", "docker-credential-fake")
    token = run_credential_helper("fake", "tok.example.com")
    assert token is not None and token.identity_token == "refresh" and not token.username
    assert run_credential_helper("fake", "unknown.example.com") is None
    with pytest.raises(ConfigError, match="exit 3") as excinfo:
        run_credential_helper("fake", "broken.example.com")
    assert "secret-in-stderr" not in str(excinfo.value)
    with pytest.raises(ConfigError, match="not JSON"):
        run_credential_helper("fake", "junk.example.com")
    with pytest.raises(ConfigError, match="invalid"):
        run_credential_helper("../evil", "x")
    # credHelpers wins over auths; credsStore is asked with the auths key
    folder = _config(
        tmp_path / "cfg",
        {
            "credHelpers": {"pw.example.com": "fake"},
            "auths": {"pw.example.com": {"auth": _b64("ignored:x")}, "https://tok.example.com": {}},
            "credsStore": "fake",
        },
    )
    assert find_credentials("pw.example.com", config_dir=folder) == pw
    assert find_credentials("tok.example.com", config_dir=folder) is None  # asked "https://tok…"


def test_credential_helper_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _helper(tmp_path, "exec sleep 5\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigError, match="did not answer"):
        run_credential_helper("fake", "x", limits=Limits(credential_helper_timeout_seconds=0.2))


def test_small_pure_helpers() -> None:
    assert is_loopback_host("localhost") and is_loopback_host("127.9.9.9")
    assert is_loopback_host("::1") and is_loopback_host("[::1]")
    assert not is_loopback_host("10.0.0.1") and not is_loopback_host("example.com")
    assert retry_delay(0, 0.5, 10, "3") == 3.0
    assert retry_delay(0, 0.5, 10, "999") == 10
    assert 0.25 <= retry_delay(0, 0.5, 10, None) <= 0.5
    assert retry_delay(10, 0.5, 4, "not a number") <= 4
    assert registry_error_text(b'{"errors":[{"code":"DENIED","message":"no"}]}') == "DENIED: no"
    assert registry_error_text(b"404 page not found") == "404 page not found"
