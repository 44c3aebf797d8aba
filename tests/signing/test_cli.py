"""`cosgitops keygen`, `sign` and `verify` through the real command line entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cosgitops.oci.layout import OCILayoutStore
from cosgitops.signing import keys
from tests.helpers.services import RegistryServer
from tests.oci.images import make_image, push_image
from tests.signing.conftest import run


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def layout_image(workdir: Path) -> str:
    store = OCILayoutStore(workdir / "layout")
    return push_image(store, make_image([{"etc/motd": b"hi\n"}]), tag="1.0").digest


def test_keygen(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    os.environ["COSIGN_PASSWORD"] = "pw"
    code, out, _ = run(capsys, "keygen", "--output-key-prefix", "release")
    assert code == 0
    fingerprint = keys.key_fingerprint(keys.load_public_key("release.pub"))
    assert f"Fingerprint: {fingerprint}" in out
    assert keys.load_private_key("release.key", password=b"pw")
    assert (workdir / "release.key").stat().st_mode & 0o777 == 0o600

    code, _, err = run(capsys, "keygen", "--output-key-prefix", "release")
    assert code == 1 and "already exists" in err and "Traceback" not in err
    code, _, _ = run(capsys, "keygen", "--output-key-prefix", "release", "--force")
    assert code == 0
    assert keys.key_fingerprint(keys.load_public_key("release.pub")) != fingerprint


def test_keygen_without_password_source(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    code, _, err = run(capsys, "keygen")
    assert code == 1
    assert "COSIGN_PASSWORD" in err
    assert not (workdir / "cosign.key").exists()


def test_sign_and_verify_layout(
    capsys: pytest.CaptureFixture[str], workdir: Path, layout_image: str
) -> None:
    os.environ["COSIGN_PASSWORD"] = ""
    assert run(capsys, "keygen")[0] == 0
    assert run(capsys, "keygen", "--output-key-prefix", "other")[0] == 0

    code, out, _ = run(capsys, "sign", "oci:layout:1.0", "--key", "cosign.key")
    assert code == 0
    assert f"Signed oci:{workdir / 'layout'}@{layout_image}" in out
    assert "bundle: written" in out and "legacy: written" in out
    code, out, _ = run(capsys, "sign", f"oci:layout@{layout_image}", "--key", "cosign.key")
    assert "bundle: already present" in out and "legacy: already present" in out

    code, out, _ = run(capsys, "verify", "oci:layout:1.0", "--key", "cosign.pub")
    assert code == 0
    assert "matched: bundle referrer sha256:" in out
    assert "also valid: legacy sha256-" in out

    code, out, err = run(capsys, "verify", "oci:layout:1.0", "--key", "other.pub")
    assert code == 1
    assert out == ""
    assert "does not verify with any trusted key" in err
    assert "hint: the policy trusts key" in err

    code, out, _ = run(capsys, "verify", "oci:layout:1.0", "--key", "other.pub", "--format", "json")
    assert code == 1
    document = json.loads(out)
    assert document["verified"] is False and document["digest"] == layout_image
    assert len(document["signatures"]) == 2

    code, out, _ = run(
        capsys,
        "verify",
        "oci:layout:1.0",
        "--key",
        "other.pub",
        "--key",
        "cosign.pub",
        "--format",
        "json",
    )
    assert code == 0 and json.loads(out)["matched"]["format"] == "bundle"


def test_private_key_from_environment(
    capsys: pytest.CaptureFixture[str], workdir: Path, layout_image: str
) -> None:
    pair = keys.generate_keypair(b"secret")
    os.environ["SIGNING_KEY"] = pair.private_pem.decode()
    os.environ["COSIGN_PASSWORD"] = "secret"
    (workdir / "k.pub").write_bytes(pair.public_pem)
    code, out, _ = run(
        capsys, "sign", "oci:layout:1.0", "--key", "env://SIGNING_KEY", "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["digest"] == layout_image
    assert run(capsys, "verify", "oci:layout:1.0", "--key", "k.pub")[0] == 0

    os.environ["COSIGN_PASSWORD"] = "wrong"
    code, _, err = run(capsys, "sign", "oci:layout:1.0", "--key", "env://SIGNING_KEY")
    assert code == 1 and "wrong password" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["sign", "oci:layout:1.0"],
        ["sign", "oci:layout:1.0", "--key", "k.key", "--keyless"],
        ["verify", "oci:layout:1.0"],
        ["verify", "oci:layout:1.0", "--certificate-identity", "a@b"],
        ["sign", "oci:layout:1.0", "--key", "k.key", "-a", "novalue"],
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], workdir: Path, layout_image: str, argv: list[str]
) -> None:
    os.environ["COSIGN_PASSWORD"] = ""
    keys.write_keypair(workdir / "k", b"")
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err


def test_unsigned_and_missing(
    capsys: pytest.CaptureFixture[str], workdir: Path, layout_image: str
) -> None:
    keys.write_keypair(workdir / "k", b"")
    code, _, err = run(capsys, "verify", "oci:layout:1.0", "--key", "k.pub")
    assert code == 1 and "has no signatures" in err
    code, _, err = run(capsys, "verify", "oci:layout:2.0", "--key", "k.pub")
    assert code == 1 and "does not exist" in err


def test_sign_and_verify_on_registry(
    capsys: pytest.CaptureFixture[str], workdir: Path, registry: RegistryServer
) -> None:
    from cosgitops.oci import open_store
    from cosgitops.oci.store import StoreOptions

    name = f"{registry.host}/fleet/edge"
    digest = push_image(
        open_store(name, StoreOptions(insecure=True)), make_image([{"a": b"b"}]), tag="1.0"
    ).digest
    keys.write_keypair(workdir / "k", b"")
    os.environ["COSIGN_PASSWORD"] = ""
    code, out, err = run(capsys, "sign", f"{name}:1.0", "--key", "k.key", "--insecure")
    assert code == 0, err
    assert f"Signed {name}@{digest}" in out
    code, out, err = run(
        capsys, "verify", f"{name}:1.0", "--key", "k.pub", "--insecure", "--format", "json"
    )
    assert code == 0, err
    assert json.loads(out)["matched"]["keyFingerprint"] == keys.key_fingerprint(
        keys.load_public_key("k.pub")
    )
