"""`cosgitops verify REF --boot-test`: a person inspects an image's boot attestations (the
steps, times, QEMU and firmware, serial-log digests) and the command exits 1 unless a
passing one is signed under the same trust as the image."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cosgitops.boottest.attestation import attach_attestation
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.signing import sign_image
from cosgitops.signing.keys import write_keypair
from cosgitops.signing.signers import KeySigner, key_signer
from tests.boottest.helpers import synthetic_result
from tests.oci.images import make_image, push_image
from tests.signing.conftest import run


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[KeySigner, Path]:
    private, public = write_keypair(tmp_path / "keys" / "release", b"")
    return key_signer(str(private), password=b""), public


@pytest.fixture
def signed_image(tmp_path: Path, keypair: tuple[KeySigner, Path]) -> tuple[OCILayoutStore, str]:
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/motd": b"hello\n"}]), tag="1.1.0")
    sign_image(layout, image.digest, keypair[0])
    return layout, image.digest


def test_a_passing_attestation_is_shown_and_accepted(
    capsys: pytest.CaptureFixture[str],
    keypair: tuple[KeySigner, Path],
    signed_image: tuple[OCILayoutStore, str],
) -> None:
    layout, digest = signed_image
    attached = attach_attestation(layout, synthetic_result(digest), keypair[0])
    reference = f"oci:{layout.path}:1.1.0"
    code, out, err = run(capsys, "verify", reference, "--key", str(keypair[1]), "--boot-test")
    assert code == 0, err
    assert f"Verified oci:{layout.path}@{digest}" in out
    assert f"Boot test of oci:{layout.path}@{digest}: passed" in out
    assert f"matched: attestation {attached.digest}, signed by key " in out
    assert "edge-gateway 1.1.0" in out and "from 1.0.0" in out
    for step in ("disk", "boot-from", "upgrade", "boot-candidate", "health", "fallback"):
        assert f"  {step} " in out
    assert "qemu: QEMU emulator version 7.2.19" in out and "accelerator: tcg" in out
    assert "serial log 02-boot-from.log: sha256:" in out

    code, out, err = run(
        capsys, "verify", reference, "--key", str(keypair[1]), "--boot-test", "--format", "json"
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["verified"] is True  # the image signature
    boot = document["bootTest"]
    assert boot["verified"] is True
    assert boot["matched"]["attestation"] == attached.digest
    assert boot["matched"]["predicate"]["candidate"]["digest"] == digest
    assert boot["matched"]["predicate"]["steps"][0]["name"] == "disk"


def test_a_failing_or_untrusted_attestation_fails_the_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keypair: tuple[KeySigner, Path],
    signed_image: tuple[OCILayoutStore, str],
) -> None:
    layout, digest = signed_image
    reference = f"oci:{layout.path}@{digest}"
    code, out, err = run(capsys, "verify", reference, "--key", str(keypair[1]), "--boot-test")
    assert code == 1
    assert "NOT PROVEN (0 attestation(s) found)" in out
    assert "has no boot attestation" in err and "hint: run `cosgitops boot-test" in err

    failing = attach_attestation(layout, synthetic_result(digest, fail_at="health"), keypair[0])
    stranger_key, _ = write_keypair(tmp_path / "stranger", b"")
    attach_attestation(
        layout, synthetic_result(digest), key_signer(str(stranger_key), password=b"")
    )
    code, out, err = run(capsys, "verify", reference, "--key", str(keypair[1]), "--boot-test")
    assert code == 1
    assert "NOT PROVEN (2 attestation(s) found)" in out
    # the failing one is trusted, so its steps are shown for inspection
    assert f"not accepted: attestation {failing.digest} (signed by key " in out
    assert "the boot test failed at step 'health'" in out
    assert re.search(r"health +failed +12\.5s +health check .web. exited 1", out)
    assert "does not verify with any trusted key" in out
    assert "error: no boot attestation of" in err
    assert "Traceback" not in err

    code, out, _ = run(
        capsys, "verify", reference, "--key", str(keypair[1]), "--boot-test", "--format", "json"
    )
    assert code == 1
    document = json.loads(out)
    assert document["verified"] is True and document["bootTest"]["verified"] is False
    assert len(document["bootTest"]["attestations"]) == 2


def test_without_the_flag_verify_ignores_attestations(
    capsys: pytest.CaptureFixture[str],
    keypair: tuple[KeySigner, Path],
    signed_image: tuple[OCILayoutStore, str],
) -> None:
    layout, digest = signed_image
    attach_attestation(layout, synthetic_result(digest, fail_at="health"), keypair[0])
    code, out, err = run(capsys, "verify", f"oci:{layout.path}@{digest}", "--key", str(keypair[1]))
    assert code == 0, err
    assert "Boot test" not in out and "attestation" not in out
