"""``cosgitops keygen``, ``sign`` and ``verify``: thin wrappers over cosgitops.signing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cosgitops.errors import KeyFileError, UsageError

_STORE_OPTIONS = [
    click.option(
        "--insecure",
        is_flag=True,
        help="Talk plain HTTP to the registry (loopback hosts only).",
    ),
    click.option(
        "--ca-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Extra CA certificate (PEM) to trust for the registry's TLS.",
    ),
]


def _store_options(insecure: bool, ca_file: Path | None) -> Any:
    from cosgitops.oci.store import StoreOptions

    return StoreOptions(insecure=insecure, ca_file=ca_file)


def _with_store_options(function: Any) -> Any:
    for option in reversed(_STORE_OPTIONS):
        function = option(function)
    return function


def _new_password() -> bytes:
    from cosgitops.signing.keys import PASSWORD_ENV

    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env.encode("utf-8")
    if not sys.stdin.isatty():
        raise KeyFileError(
            "no password for the new key and no terminal to ask on",
            hint=f"set {PASSWORD_ENV} (empty for a key without password)",
        )
    import getpass

    first = getpass.getpass("Enter password for private key: ")
    if getpass.getpass("Enter password for private key again: ") != first:
        raise KeyFileError("the passwords do not match")
    return first.encode("utf-8")


@click.command("keygen")
@click.option(
    "--output-key-prefix",
    default="cosign",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Write PREFIX.key and PREFIX.pub.",
)
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def keygen_command(*, output_key_prefix: Path, force: bool) -> None:
    """Create a cosign-compatible key pair (ECDSA P-256, encrypted private key).

    The password comes from COSIGN_PASSWORD or is asked for (twice, not echoed).
    """
    from cosgitops.signing.keys import key_fingerprint, load_public_key, write_keypair

    key_path, pub_path = write_keypair(output_key_prefix, _new_password(), overwrite=force)
    fingerprint = key_fingerprint(load_public_key(str(pub_path)))
    click.echo(f"Private key written to {key_path}")
    click.echo(f"Public key written to {pub_path}")
    click.echo(f"Fingerprint: {fingerprint}")


def _annotations(values: tuple[str, ...]) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UsageError(f"annotation {value!r} is not KEY=VALUE", hint="write -a key=value")
        result[key] = text
    return result


@click.command("sign")
@click.argument("reference")
@click.option("--key", "key", metavar="FILE|env://VAR", help="cosign private key to sign with.")
@click.option("--keyless", is_flag=True, help="Sign with a Sigstore (Fulcio) certificate.")
@click.option(
    "--identity-token",
    envvar="SIGSTORE_ID_TOKEN",
    help="OIDC token for --keyless (default: ambient CI credentials).",
)
@click.option(
    "--trust-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sigstore client trust config JSON for --keyless (default: public-good Sigstore).",
)
@click.option("-a", "--annotation", "annotation", multiple=True, help="KEY=VALUE to sign along.")
@click.option(
    "--sign-container-identity",
    "identity",
    metavar="REPOSITORY",
    help="The repository the image is published under, named in the signature "
    "(default: REFERENCE's own; set it when signing a layout you copy to a registry).",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@_with_store_options
def sign_command(
    *,
    reference: str,
    key: str | None,
    keyless: bool,
    identity_token: str | None,
    trust_config: Path | None,
    annotation: tuple[str, ...],
    identity: str | None,
    output_format: str,
    insecure: bool,
    ca_file: Path | None,
) -> None:
    """Sign REFERENCE (REGISTRY/REPO[:TAG][@DIGEST] or oci:PATH[:TAG][@DIGEST]).

    A tag is resolved to its digest first; the digest is what gets signed, in both
    cosign formats (Sigstore bundle as an OCI referrer, legacy .sig tag).
    """
    from cosgitops.signing.image import sign_reference
    from cosgitops.signing.signers import ImageSigner, key_signer, keyless_signer

    if bool(key) == keyless:
        raise UsageError("pass exactly one of --key FILE and --keyless")
    signer: ImageSigner
    if key:
        signer = key_signer(key)
    else:
        signer = keyless_signer(
            identity_token=identity_token,
            trust_config=trust_config.read_bytes() if trust_config else None,
        )
    result = sign_reference(
        reference,
        signer,
        options=_store_options(insecure, ca_file),
        identity=identity,
        annotations=_annotations(annotation),
    )
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(f"Signed {result.reference}")
    click.echo(f"  signer: {result.signer}")
    for item in result.signatures:
        status = "written" if item.status == "written" else "already present"
        click.echo(f"  {item.format}: {status} ({item.location})")


@click.command("verify")
@click.argument("reference")
@click.option("--key", "keys", multiple=True, metavar="FILE|env://VAR", help="Trusted public key.")
@click.option("--certificate-identity", help="Trusted keyless signer (certificate SAN).")
@click.option("--certificate-identity-regexp", help="Regexp for the certificate SAN.")
@click.option("--certificate-oidc-issuer", help="OIDC issuer of the keyless signer.")
@click.option("--certificate-oidc-issuer-regexp", help="Regexp for the OIDC issuer.")
@click.option(
    "--trusted-root",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sigstore trusted_root.json for keyless (default: public-good Sigstore via TUF).",
)
@click.option(
    "--rekor-key",
    "rekor_keys",
    multiple=True,
    metavar="FILE",
    help="Rekor public key: check the transparency-log SET of key-based signatures.",
)
@click.option(
    "--require-tlog", is_flag=True, help="Refuse key-based signatures without a checked SET."
)
@click.option(
    "--boot-test",
    is_flag=True,
    help="Also show and check the image's boot attestations (from `cosgitops boot-test`).",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@_with_store_options
def verify_command(
    *,
    reference: str,
    keys: tuple[str, ...],
    certificate_identity: str | None,
    certificate_identity_regexp: str | None,
    certificate_oidc_issuer: str | None,
    certificate_oidc_issuer_regexp: str | None,
    trusted_root: Path | None,
    rekor_keys: tuple[str, ...],
    require_tlog: bool,
    boot_test: bool,
    output_format: str,
    insecure: bool,
    ca_file: Path | None,
) -> None:
    """Verify REFERENCE's signatures against a key or a keyless identity.

    Prints which signature matched and why the others did not; exits 1 when none does.
    With --boot-test, also a passing boot attestation signed under the same trust.
    """
    from dataclasses import replace

    from cosgitops.model import Identity
    from cosgitops.signing.image import verify_reference
    from cosgitops.signing.policy import check_identity, key_policy

    keyless_options = (
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
    )
    if not keys and not any(keyless_options):
        raise UsageError(
            "nothing to trust: pass --key FILE or --certificate-identity and "
            "--certificate-oidc-issuer"
        )
    policy = key_policy(keys, rekor_keys=rekor_keys)
    if any(keyless_options):
        if not (certificate_identity or certificate_identity_regexp) or not (
            certificate_oidc_issuer or certificate_oidc_issuer_regexp
        ):
            raise UsageError(
                "keyless verification needs both --certificate-identity(-regexp) and "
                "--certificate-oidc-issuer(-regexp)"
            )
        identity = check_identity(
            Identity(
                identity=certificate_identity,
                issuer=certificate_oidc_issuer,
                identity_regexp=certificate_identity_regexp,
                issuer_regexp=certificate_oidc_issuer_regexp,
            )
        )
        policy = replace(
            policy,
            identities=(identity,),
            trusted_root=trusted_root.read_bytes() if trusted_root else None,
        )
    policy = replace(policy, require_tlog=require_tlog)
    if boot_test:
        from cosgitops.commands.boottest import verify_boot_test

        verify_boot_test(
            reference,
            policy,
            options=_store_options(insecure, ca_file),
            output_format=output_format,
        )
        return
    result = verify_reference(reference, policy, options=_store_options(insecure, ca_file))
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
        if not result.ok:
            sys.exit(1)
        return
    matched = result.require()
    click.echo(f"Verified {result.reference}")
    click.echo(f"  matched: {matched.format} {matched.location}, signed by {matched.signer}")
    for note in matched.notes:
        click.echo(f"    {note}")
    for verdict in result.verdicts:
        if verdict is matched:
            continue
        if verdict.accepted:
            click.echo(f"  also valid: {verdict.format} {verdict.location}")
        else:
            click.echo(
                f"  not matched: {verdict.format} {verdict.location}: {'; '.join(verdict.reasons)}"
            )
