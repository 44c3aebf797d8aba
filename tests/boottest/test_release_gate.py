"""The release gate: `spec.release.bootTest: required` makes `release` (and `publish`)
refuse an image without a passing boot attestation that verifies under the trust
policy; a passing attestation is named, by digest, in the signed release manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosgitops import model
from cosgitops.boottest.attestation import attach_attestation
from cosgitops.errors import RemoteDataError
from cosgitops.oci import open_store
from cosgitops.oci.store import ImageStore
from cosgitops.publish.reader import open_index
from cosgitops.release import release
from cosgitops.signing.signers import KeySigner, key_signer
from tests.boottest.helpers import synthetic_result

NAME = "example"
VERSION = "0.1.0"


def _repository(root: Path, *, boot_test: str | None = "required") -> Path:
    from cosgitops.scaffold import init_repository

    init_repository(root, name="fleet")
    path = root / "derivatives" / NAME / "derivative.yaml"
    definition = yaml.safe_load(path.read_text())
    if boot_test is not None:
        definition["spec"]["release"]["bootTest"] = boot_test
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fleet"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def _store(repo: Path) -> ImageStore:
    return open_store(f"oci:{repo / '.cosgitops' / 'registry' / NAME}")


def _built_digest(repo: Path) -> str:
    found = _store(repo).resolve(VERSION)
    assert found is not None, "release builds and pushes before the gate"
    return found.digest


def _dev_signer(repo: Path) -> KeySigner:
    return key_signer(str(repo / ".cosgitops" / "keys" / "cosign.key"), password=b"")


def _stranger(tmp_path: Path) -> KeySigner:
    from cosgitops.signing.keys import write_keypair

    private, _public = write_keypair(tmp_path / "stranger", b"")
    return key_signer(str(private), password=b"")


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    return _repository(tmp_path / "repo")


def test_required_refuses_an_image_without_an_attestation(gated: Path) -> None:
    report = release(gated)
    assert not report.ok
    (outcome,) = report.outcomes
    assert outcome.status == "failed"
    assert "requires a passing boot test (spec.release.bootTest: required)" in outcome.error
    assert "has no boot attestation" in outcome.error
    assert f"cosgitops boot-test {NAME}" in outcome.hint
    assert not (gated / "public" / "metadata" / "1.root.json").exists()


def test_a_passing_attestation_opens_the_gate_and_is_named_in_the_manifest(gated: Path) -> None:
    assert not release(gated).ok
    digest = _built_digest(gated)
    attached = attach_attestation(
        _store(gated), synthetic_result(digest, version=VERSION), _dev_signer(gated)
    )

    report = release(gated)
    assert report.ok, report.failed
    (outcome,) = report.outcomes
    assert outcome.status == "released"
    assert outcome.boot_test is not None and outcome.boot_test.attestation == attached.digest
    manifest = open_index(gated / "public").manifest(NAME, VERSION)
    assert manifest.digest == digest
    assert manifest.boot_test is not None
    assert manifest.boot_test.attestation == attached.digest
    assert manifest.boot_test.result == "passed"
    assert manifest.boot_test.from_version == "1.0.0"
    assert manifest.boot_test.signer.startswith("key ")
    assert report.to_json()["derivatives"][0]["bootTest"]["attestation"] == attached.digest
    assert f"passed from 1.0.0 ({attached.digest[:19]})" in report.markdown()


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("failing", "the boot test failed at step 'health'"),
        ("stranger", "does not verify with any trusted key"),
        ("other-digest", "the signed payload names sha256:"),
    ],
)
def test_an_attestation_that_does_not_pass_keeps_the_gate_shut(
    gated: Path, tmp_path: Path, how: str, reason: str
) -> None:
    assert not release(gated).ok
    digest = _built_digest(gated)
    store = _store(gated)
    if how == "failing":
        attach_attestation(
            store, synthetic_result(digest, version=VERSION, fail_at="health"), _dev_signer(gated)
        )
    elif how == "stranger":
        attach_attestation(store, synthetic_result(digest, version=VERSION), _stranger(tmp_path))
    else:
        other = synthetic_result("sha256:" + "ab" * 32, version=VERSION)
        from cosgitops.boottest.attestation import sign_attestation

        bundle = sign_attestation(other, _dev_signer(gated), name="x")
        # attached to this image, but signed for another digest
        attach_attestation(
            store, synthetic_result(digest, version=VERSION), _dev_signer(gated), bundle=bundle
        )

    report = release(gated)
    assert not report.ok
    (outcome,) = report.outcomes
    assert outcome.status == "failed"
    assert "no boot attestation of" in outcome.error and reason in outcome.error
    assert not (gated / "public" / "metadata" / "1.root.json").exists()


def test_publish_applies_the_same_gate(gated: Path) -> None:
    assert not release(gated).ok  # built, pushed and signed; refused at the gate
    result = subprocess.run(
        [sys.executable, "-m", "cosgitops", "publish", "-C", str(gated)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "requires a passing boot test" in result.stderr
    assert "Traceback" not in result.stderr


def test_optional_publishes_without_one_and_names_one_when_present(tmp_path: Path) -> None:
    plain = _repository(tmp_path / "plain", boot_test=None)
    report = release(plain)
    assert report.ok and report.outcomes[0].boot_test is None
    manifest = open_index(plain / "public").manifest(NAME, VERSION)
    assert manifest.boot_test is None
    assert "bootTest" not in manifest.to_json()  # old readers see the manifest they know

    proven = _repository(tmp_path / "proven", boot_test="optional")
    subprocess.run(
        [sys.executable, "-m", "cosgitops", "build", NAME, "-C", str(proven)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    from cosgitops.signing.keys import ensure_development_keypair

    ensure_development_keypair(proven)
    digest = _built_digest(proven)
    failing = synthetic_result(digest, version=VERSION, fail_at="fallback")
    attach_attestation(_store(proven), failing, _dev_signer(proven))
    attached = attach_attestation(
        _store(proven), synthetic_result(digest, version=VERSION), _dev_signer(proven)
    )
    report = release(proven)
    assert report.ok
    manifest = open_index(proven / "public").manifest(NAME, VERSION)
    assert manifest.boot_test is not None and manifest.boot_test.attestation == attached.digest


def test_the_cli_table_shows_the_boot_test(gated: Path) -> None:
    assert not release(gated).ok
    digest = _built_digest(gated)
    attach_attestation(
        _store(gated),
        synthetic_result(digest, version=VERSION, from_version=None),
        _dev_signer(gated),
    )
    result = subprocess.run(
        [sys.executable, "-m", "cosgitops", "release", "-C", str(gated)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert "BOOT TEST" in header
    assert "passed fresh install (sha256:" in row


def test_the_schema_takes_required_or_optional_only(tmp_path: Path) -> None:
    from cosgitops.validate import validate_paths

    repo = _repository(tmp_path / "repo", boot_test="sometimes")
    report = validate_paths([repo])
    errors = [d for d in report.diagnostics if d.severity == "error"]
    assert errors, "an unknown bootTest value must be an error"
    assert any(d.pointer == "/spec/release/bootTest" for d in errors), errors
    for value in ("required", "optional"):
        ok = _repository(tmp_path / value, boot_test=value)
        assert not [d for d in validate_paths([ok]).diagnostics if d.severity == "error"]


def test_release_manifests_without_the_field_still_read(tmp_path: Path) -> None:
    from tests.publish import factory

    old = factory.manifest("kiosk", "1.0.0").to_json()
    assert "bootTest" not in old
    assert model.ReleaseManifest.from_json(old).boot_test is None

    named = dict(old)
    named["bootTest"] = {
        "attestation": "sha256:" + "c" * 64,
        "result": "passed",
        "signer": "key 0123",
        "from": {"version": "0.9.0", "digest": "sha256:" + "d" * 64},
        "finished": "2026-01-01T00:00:00Z",
    }
    parsed = model.ReleaseManifest.from_json(json.loads(json.dumps(named)))
    assert parsed.boot_test is not None and parsed.boot_test.from_version == "0.9.0"
    assert parsed.to_json() == named

    for broken in ({"attestation": "nope", "result": "passed"}, {"result": "passed"}, "text"):
        with pytest.raises(RemoteDataError, match="malformed release manifest"):
            model.ReleaseManifest.from_json({**old, "bootTest": broken})


def test_release_publishes_the_image_that_was_boot_tested(gated: Path) -> None:
    """A rebuild need not give the same digest (the docker builder is not reproducible):
    the release takes the boot-tested image the version's tag holds instead."""
    assert not release(gated).ok
    tested = _built_digest(gated)
    attach_attestation(_store(gated), synthetic_result(tested, version=VERSION), _dev_signer(gated))
    motd = gated / "derivatives" / NAME / "overlay" / "etc" / "motd"
    motd.write_text("a rebuild now makes another image\n")

    report = release(gated)
    assert report.ok, report.failed
    manifest = open_index(gated / "public").manifest(NAME, VERSION)
    assert manifest.digest == tested
    assert manifest.boot_test is not None
    assert _built_digest(gated) == tested  # the tag did not move
