"""Independent readers accept the boot attestation as it sits in the registry.

* sigstore-python (its own verifier and identity policy, and its `sigstore verify
  identity` command with the image digest as input) verifies a keyless attestation
  signed through the Sigstore instance of tests/signing/sigstore_stack.py: sigstore-python
  cannot verify a bundle signed with a plain key (it needs a certificate).
* the npm `@sigstore/verify` library verifies a key-signed attestation with the
  release's public key (run by node, offline, when the package is installed: `.ci/run`
  puts it under .ci/cache/npm).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosgitops.boottest.attestation import attach_attestation, verify_attestation
from cosgitops.boottest.predicate import PREDICATE_TYPE
from cosgitops.model import Identity
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.signing.keys import write_keypair
from cosgitops.signing.policy import identity_policy
from cosgitops.signing.signers import key_signer, keyless_signer
from tests.boottest.helpers import synthetic_result
from tests.oci.images import make_image, push_image
from tests.signing.sigstore_stack import SigstoreStack

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://issuer.example.test"
EMAIL = "release@example.test"
NPM_PACKAGES = ("@sigstore/verify@4.1.3", "@sigstore/bundle@5.0.1")


@pytest.fixture(scope="module")
def stack() -> Iterator[SigstoreStack]:
    with SigstoreStack() as running:
        running.add_issuer(ISSUER)
        yield running


@pytest.fixture(autouse=True)
def loopback_without_proxy() -> None:
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    os.environ["no_proxy"] = "127.0.0.1,localhost"


def _bundle_blob(layout: OCILayoutStore, attestation: str) -> bytes:
    layer = layout.get_manifest(attestation).json()["layers"][0]["digest"]
    return layout.read_blob(layer, max_bytes=1 << 20)


def test_sigstore_python_verifies_a_keyless_attestation(
    tmp_path: Path, stack: SigstoreStack
) -> None:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity as SigstoreIdentity

    from cosgitops.signing import keyless

    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/motd": b"proven\n"}]), tag="1.1.0")
    token = stack.token(stack.issuers[ISSUER], subject="ci", email=EMAIL)
    signer = keyless_signer(identity_token=token, trust_config=stack.trust_config_json)
    attached = attach_attestation(layout, synthetic_result(image.digest), signer)

    # ours accepts it under an identity policy ...
    policy = identity_policy(
        [Identity(identity=EMAIL, issuer=ISSUER)], trusted_root=stack.trusted_root_json
    )
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert verdict.accepted, verdict.reasons
    assert verdict.signer == f"identity {EMAIL} (issuer {ISSUER})"

    # ... and so does sigstore-python's own verifier, reading the bytes from the layout
    blob = _bundle_blob(layout, attached.digest)
    verifier = Verifier(trusted_root=keyless.load_trusted_root(stack.trusted_root_json))
    payload_type, payload = verifier.verify_dsse(
        Bundle.from_json(blob), SigstoreIdentity(identity=EMAIL, issuer=ISSUER)
    )
    assert payload_type == "application/vnd.in-toto+json"
    statement = json.loads(payload)
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0]["digest"]["sha256"] == image.digest.removeprefix("sha256:")
    assert statement["predicate"]["result"] == "passed"

    # ... and its command line, given the image digest the statement must name
    bundle_file = tmp_path / "attestation.sigstore.json"
    bundle_file.write_bytes(blob)
    trust_config = tmp_path / "trust-config.json"
    trust_config.write_bytes(stack.trust_config_json)

    def sigstore_cli(digest: str) -> subprocess.CompletedProcess[str]:
        command = [
            str(Path(sys.executable).parent / "sigstore"), "--trust-config", str(trust_config),
            "verify", "identity", "--offline", "--bundle", str(bundle_file),
            "--cert-identity", EMAIL, "--cert-oidc-issuer", ISSUER, digest,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    accepted = sigstore_cli(image.digest)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "OK" in accepted.stdout + accepted.stderr
    refused = sigstore_cli("sha256:" + "0" * 64)  # another image
    assert refused.returncode != 0


def _node_modules() -> Path | None:
    prefix = Path(
        os.environ.get("COSGITOPS_TEST_NPM_PREFIX", PROJECT_ROOT / ".ci" / "cache" / "npm")
    )
    modules = prefix / "node_modules"
    if shutil.which("node") and (modules / "@sigstore" / "verify" / "package.json").is_file():
        return modules
    return None


@pytest.fixture
def node_modules() -> Path:
    found = _node_modules()
    if found is None:
        message = f"node with {' '.join(NPM_PACKAGES)} is not installed"
        ci_script = PROJECT_ROOT / ".ci" / "run"
        # once .ci/run installs it, CI must run this test, never skip it
        if os.environ.get("CI") and "@sigstore/verify" in ci_script.read_text(encoding="utf-8"):
            pytest.fail(message)
        pytest.skip(message)
    return found


VERIFY_JS = r"""
const fs = require('fs');
const crypto = require('crypto');
const { toSignedEntity, toTrustMaterial, Verifier } = require('@sigstore/verify');
const { bundleFromJSON } = require('@sigstore/bundle');

const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(process.argv[2], 'utf8')));
const key = crypto.createPublicKey(fs.readFileSync(process.argv[3], 'utf8'));
// a key-signed bundle with no transparency-log entry: trust exactly this key
const root = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
               tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
const trust = toTrustMaterial(root, () => ({ publicKey: key, validFor: () => true }));
const none = { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 };
const verifier = new Verifier(trust, none);
try {
  verifier.verify(toSignedEntity(bundle));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exit(1);
}
const payload = Buffer.from(bundle.content.dsseEnvelope.payload).toString('utf8');
console.log(JSON.stringify({ ok: true, statement: JSON.parse(payload) }));
"""


def test_sigstore_js_verifies_a_key_signed_attestation(tmp_path: Path, node_modules: Path) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/motd": b"proven\n"}]), tag="1.1.0")
    private, public = write_keypair(tmp_path / "release", b"")
    attached = attach_attestation(
        layout, synthetic_result(image.digest), key_signer(str(private), password=b"")
    )
    script = tmp_path / "verify.js"
    script.write_text(VERIFY_JS)
    bundle_file = tmp_path / "attestation.sigstore.json"
    bundle_file.write_bytes(_bundle_blob(layout, attached.digest))
    env = {**os.environ, "NODE_PATH": str(node_modules)}

    def node(bundle: Path, key: Path) -> tuple[int, dict[str, object]]:
        done = subprocess.run(
            ["node", str(script), str(bundle), str(key)],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])

    code, answer = node(bundle_file, public)
    assert code == 0, answer
    statement = answer["statement"]
    assert isinstance(statement, dict)
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0]["digest"]["sha256"] == image.digest.removeprefix("sha256:")

    # the same reader refuses a modified attestation and another key
    document = json.loads(bundle_file.read_bytes())
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["predicate"]["result"] = "failed"
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    assert node(tampered, public)[0] == 1
    _, stranger = write_keypair(tmp_path / "stranger", b"")
    assert node(bundle_file, stranger)[0] == 1
