"""The trust policy from cosgitops.yaml (spec.signing.trust)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosgitops.errors import ConfigError, KeyFileError
from cosgitops.model import Identity, Repository
from cosgitops.signing import keys
from cosgitops.signing.policy import check_identity, policy_for


def _repository(root: Path, signing: dict[str, object]) -> Repository:
    return Repository.from_data(
        {
            "apiVersion": "cosgitops/v1",
            "kind": "Repository",
            "metadata": {"name": "fleet"},
            "spec": {"signing": signing},
        },
        root,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    keys.write_keypair(tmp_path / "keys" / "edge", b"")
    keys.write_keypair(tmp_path / "keys" / "core", b"")
    return tmp_path


def _fingerprint(root: Path, name: str) -> str:
    return keys.key_fingerprint(keys.load_public_key(str(root / "keys" / f"{name}.pub")))


def test_rules_apply_by_derivative_glob(repo: Path) -> None:
    repository = _repository(
        repo,
        {
            "trust": [
                {"derivatives": ["edge-*"], "keys": ["keys/edge.pub"]},
                {
                    "derivatives": ["*"],
                    "keys": ["keys/core.pub"],
                    "identities": [
                        {
                            "identity": "https://github.com/acme/fleet/.github/workflows/release.yaml@refs/heads/main",
                            "issuer": "https://token.actions.githubusercontent.com",
                        }
                    ],
                },
            ]
        },
    )
    edge = policy_for(repository, "edge-gateway")
    assert [k.fingerprint for k in edge.keys] == [
        _fingerprint(repo, "edge"),
        _fingerprint(repo, "core"),
    ]
    assert len(edge.identities) == 1
    core = policy_for(repository, "kiosk")
    assert [k.fingerprint for k in core.keys] == [_fingerprint(repo, "core")]
    assert (
        core.to_json()["identities"][0]["issuer"] == "https://token.actions.githubusercontent.com"
    )
    assert "key " in core.describe() and "identity https://github.com/acme" in core.describe()


def test_no_matching_rule_is_a_config_error(repo: Path) -> None:
    repository = _repository(
        repo, {"trust": [{"derivatives": ["edge-*"], "keys": ["keys/edge.pub"]}]}
    )
    with pytest.raises(ConfigError, match="no trust rule"):
        policy_for(repository, "kiosk")


def test_rule_without_keys_or_identities_is_refused(repo: Path) -> None:
    repository = _repository(repo, {"trust": [{"derivatives": ["*"]}]})
    with pytest.raises(ConfigError, match="name no key and no identity"):
        policy_for(repository, "kiosk")


def test_keys_from_environment(repo: Path) -> None:
    os.environ["FLEET_PUB"] = (repo / "keys" / "edge.pub").read_text()
    repository = _repository(repo, {"trust": [{"keys": ["env://FLEET_PUB"]}]})
    assert policy_for(repository, "x").keys[0].fingerprint == _fingerprint(repo, "edge")


def test_missing_key_file_is_clear(repo: Path) -> None:
    repository = _repository(repo, {"trust": [{"keys": ["keys/nope.pub"]}]})
    with pytest.raises(KeyFileError, match="does not exist"):
        policy_for(repository, "x")


def test_without_trust_rules_the_signing_key_is_trusted(repo: Path) -> None:
    repository = _repository(repo, {"key": "keys/core.key"})
    assert [k.fingerprint for k in policy_for(repository, "x").keys] == [_fingerprint(repo, "core")]


def test_default_is_the_development_key(tmp_path: Path) -> None:
    key_path, pub_path, created = keys.ensure_development_keypair(tmp_path)
    assert created and key_path == tmp_path / ".cosgitops" / "keys" / "cosign.key"
    assert keys.ensure_development_keypair(tmp_path) == (key_path, pub_path, False)
    assert keys.load_private_key(str(key_path), password=b"")
    policy = policy_for(_repository(tmp_path, {}), "anything")
    assert policy.keys[0].fingerprint == keys.key_fingerprint(keys.load_public_key(str(pub_path)))


def test_keyless_without_trust_rules_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no spec\.signing\.trust"):
        policy_for(_repository(tmp_path, {"keyless": True}), "x")


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (Identity(issuer="https://i"), "needs identity or identityRegexp"),
        (Identity(identity="a@b"), "needs issuer or issuerRegexp"),
        (Identity(identity_regexp="(", issuer="https://i"), "invalid regular expression"),
    ],
)
def test_incomplete_identities_are_refused(identity: Identity, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_identity(identity)
