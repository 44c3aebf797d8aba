"""Signing and verifying images in a store (a registry or an OCI layout).

The I/O half of signing: find an image's signatures (OCI 1.1 referrers first, then the
legacy ``sha256-<hex>.sig`` tag) and hand their bytes to the pure judge in
:mod:`cosgitops.signing.verify`; write new signatures in both cosign formats.
Only the image manifest and signature artifacts are read, never the image's layers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import (
    CosgitopsError,
    DownloadError,
    NotFoundError,
    SigningError,
)
from cosgitops.oci import media
from cosgitops.oci.digest import check_digest_format, sha256_digest
from cosgitops.oci.store import Descriptor, ImageStore, ManifestData, StoreOptions
from cosgitops.signing import payloads
from cosgitops.signing.policy import VerificationPolicy
from cosgitops.signing.signers import ImageSigner
from cosgitops.signing.verify import (
    BUNDLE_MEDIA_TYPES,
    BundleSignature,
    Candidate,
    LegacySignature,
    SignatureFormat,
    UnreadableSignature,
    VerificationResult,
    evaluate,
    verify_bundle,
    verify_legacy,
)

ALL_FORMATS: tuple[SignatureFormat, ...] = ("bundle", "legacy")
BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"


def legacy_tag(digest: str) -> str:
    """cosign's signature tag for ``digest``: ``sha256-<hex>.sig``."""
    algorithm, _, hex_part = check_digest_format(digest).partition(":")
    return f"{algorithm}-{hex_part}.sig"


def image_reference(store: ImageStore, digest: str) -> str:
    return f"{store.reference.name}@{digest}"


def signed_identity(image_name: str) -> str:
    """The repository a signature names as the image's identity: the simple-signing
    ``critical.identity.docker-reference`` and the in-toto subject ``name``.

    ``image_name`` is the repository the image is *published* under, without tag or
    digest (``ghcr.io/acme/fleet/edge``; for a repository without a registry, its
    configured layout name ``oci:.cosgitops/registry/edge``), not wherever it sits while
    it is signed: containers/image and cosign compare the identity with the repository
    they pulled from, so a signature made in a local layout still holds after the image
    is copied to its registry. Docker Hub is named ``index.docker.io``, as cosign does.
    Verifiers compare a signature's identity with ``signed_identity(repository)``.
    """
    from cosgitops.oci.reference import parse_reference

    reference = parse_reference(image_name)
    if reference.tag or reference.digest:
        raise SigningError(
            f"the identity to sign {image_name!r} has a tag or digest",
            hint="name the repository only, e.g. ghcr.io/acme/fleet/edge-gateway",
        )
    return payloads.docker_reference(reference.name)


# ---------------------------------------------------------------- reading signatures


@dataclass
class _Collected:
    candidates: list[Candidate]
    transport_errors: list[DownloadError]


def _note_error(
    collected: _Collected, format_: SignatureFormat, location: str, error: CosgitopsError
) -> None:
    if isinstance(error, DownloadError):
        collected.transport_errors.append(error)
    collected.candidates.append(UnreadableSignature(format_, location, str(error)))


def _bundle_layers(manifest: ManifestData) -> list[Descriptor]:
    return [
        item
        for item in manifest.children()[1:]  # children() puts the config first
        if item.media_type in BUNDLE_MEDIA_TYPES
    ]


def _collect_bundles(store: ImageStore, digest: str, collected: _Collected, limits: Limits) -> None:
    try:
        referrers = store.referrers(digest)
    except CosgitopsError as exc:
        _note_error(collected, "bundle", "referrers", exc)
        return
    for descriptor in referrers:
        if descriptor.artifact_type not in BUNDLE_MEDIA_TYPES:
            continue  # attestations, SBOMs and other artifacts are not signatures
        location = f"referrer {descriptor.digest}"
        try:
            manifest = store.get_manifest(descriptor.digest)
            subject = manifest.subject()
            if subject != digest:
                collected.candidates.append(
                    UnreadableSignature(
                        "bundle", location, f"the referrer's subject is {subject}, not {digest}"
                    )
                )
                continue
            layers = _bundle_layers(manifest)
            if not layers:
                collected.candidates.append(
                    UnreadableSignature("bundle", location, "the referrer holds no bundle layer")
                )
            for layer in layers:
                if layer.size > limits.signature_max_bytes:
                    collected.candidates.append(
                        UnreadableSignature(
                            "bundle",
                            location,
                            f"the bundle is larger than {limits.signature_max_bytes} bytes",
                        )
                    )
                    continue
                blob = store.read_blob(layer.digest, max_bytes=limits.signature_max_bytes)
                collected.candidates.append(BundleSignature(blob, location))
        except CosgitopsError as exc:
            _note_error(collected, "bundle", location, exc)


def _collect_legacy(store: ImageStore, digest: str, collected: _Collected, limits: Limits) -> None:
    tag = legacy_tag(digest)
    try:
        found = store.resolve(tag)
        if found is None:
            return
        manifest = store.get_manifest(found.digest)
        layers = manifest.children()[1:]
    except CosgitopsError as exc:
        _note_error(collected, "legacy", tag, exc)
        return
    for index, layer in enumerate(layers):
        location = f"{tag} layer {index}"
        if layer.media_type != media.COSIGN_SIMPLESIGNING:
            continue
        if layer.size > limits.signature_max_bytes:
            collected.candidates.append(
                UnreadableSignature(
                    "legacy", location, f"the payload is larger than {limits.signature_max_bytes}"
                )
            )
            continue
        try:
            payload = store.read_blob(layer.digest, max_bytes=limits.signature_max_bytes)
        except CosgitopsError as exc:
            _note_error(collected, "legacy", location, exc)
            continue
        annotations = {str(k): str(v) for k, v in (layer.annotations or {}).items()}
        collected.candidates.append(LegacySignature(payload, annotations, location))


def collect_signatures(
    store: ImageStore, digest: str, *, limits: Limits = DEFAULT_LIMITS
) -> list[Candidate]:
    """Every signature stored for ``digest``: bundles (referrers) first, then legacy layers.
    What cannot be read becomes an :class:`UnreadableSignature` with the reason."""
    return _collect(store, digest, limits).candidates


def _collect(store: ImageStore, digest: str, limits: Limits) -> _Collected:
    collected = _Collected([], [])
    _collect_bundles(store, digest, collected, limits)
    _collect_legacy(store, digest, collected, limits)
    return collected


def _resolve_image(store: ImageStore, digest: str) -> Descriptor:
    check_digest_format(digest)
    descriptor = store.resolve(digest)
    if descriptor is None:
        raise NotFoundError(
            f"{image_reference(store, digest)} does not exist",
            hint="check the reference; sign and verify images by their digest",
        )
    return descriptor


def _trusted_root_for(policy: VerificationPolicy, candidates: Sequence[Candidate]) -> Any:
    """The sigstore TrustedRoot keyless candidates need, loaded only when there are some."""
    if not policy.identities or not any(isinstance(c, BundleSignature) for c in candidates):
        return None
    from cosgitops.signing import keyless

    if policy.trusted_root is None:
        return keyless.public_good_trusted_root()
    try:
        return keyless.load_trusted_root(policy.trusted_root)
    except keyless.KeylessError:
        return None  # each keyless candidate then says there is no usable trusted root


def verify_image(
    store: ImageStore,
    digest: str,
    policy: VerificationPolicy,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> VerificationResult:
    """Judge every signature of ``digest`` in ``store`` against ``policy``.

    Returns the full result (``result.ok``, ``result.matched``, per-signature reasons);
    call ``result.require()`` to turn "nothing matched" into a VerificationError.
    Raises :class:`DownloadError` instead of a negative result when nothing matched
    and the store could not be read, so callers can retry rather than reject.
    """
    _resolve_image(store, digest)
    collected = _collect(store, digest, limits)
    trusted_root = _trusted_root_for(policy, collected.candidates)
    result = evaluate(
        image_reference(store, digest),
        digest,
        collected.candidates,
        policy,
        trusted_root=trusted_root,
        limits=limits,
    )
    if not result.ok and collected.transport_errors:
        raise collected.transport_errors[0]
    return result


# ---------------------------------------------------------------- writing signatures


@dataclass(frozen=True)
class WrittenSignature:
    format: SignatureFormat
    status: Literal["written", "present"]  # present: an equal signature was already there
    manifest_digest: str
    location: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "status": self.status,
            "manifest": self.manifest_digest,
            "location": self.location,
        }


@dataclass(frozen=True)
class SignResult:
    reference: str  # NAME@DIGEST that was signed
    digest: str
    signer: str
    signatures: tuple[WrittenSignature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "signer": self.signer,
            "signatures": [item.to_json() for item in self.signatures],
        }


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _existing_bundle(
    store: ImageStore, digest: str, signer: ImageSigner, limits: Limits
) -> str | None:
    """The referrer digest of a bundle this signer already made for ``digest``."""
    collected = _Collected([], [])
    _collect_bundles(store, digest, collected, limits)
    bundles = [c for c in collected.candidates if isinstance(c, BundleSignature)]
    if not bundles:
        return None
    policy = signer.own_policy()
    trusted_root = _trusted_root_for(policy, bundles)
    for candidate in bundles:
        verdict = verify_bundle(candidate, digest, policy, trusted_root=trusted_root, limits=limits)
        if verdict.accepted:
            return candidate.location.removeprefix("referrer ")
    return None


def _sign_bundle(
    store: ImageStore,
    image: Descriptor,
    *,
    signer: ImageSigner,
    identity: str,
    annotations: Mapping[str, str] | None,
    created: str,
    limits: Limits,
) -> WrittenSignature:
    existing = _existing_bundle(store, image.digest, signer, limits)
    if existing is not None:
        return WrittenSignature("bundle", "present", existing, f"referrer {existing}")
    statement = payloads.sign_statement(image.digest, annotations, name=identity)
    bundle = signer.sign_statement(statement)
    bundle_digest = sha256_digest(bundle)
    store.put_blob(media.OCI_EMPTY_BYTES, media.OCI_EMPTY_DIGEST, size=len(media.OCI_EMPTY_BYTES))
    store.put_blob(bundle, bundle_digest, size=len(bundle))
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": media.SIGSTORE_BUNDLE_V03,
        "config": {
            "mediaType": media.OCI_EMPTY,
            "digest": media.OCI_EMPTY_DIGEST,
            "size": len(media.OCI_EMPTY_BYTES),
        },
        "layers": [
            {"mediaType": media.SIGSTORE_BUNDLE_V03, "digest": bundle_digest, "size": len(bundle)}
        ],
        "subject": {"mediaType": image.media_type, "digest": image.digest, "size": image.size},
        "annotations": {
            BUNDLE_CONTENT_ANNOTATION: "dsse-envelope",
            BUNDLE_PREDICATE_ANNOTATION: payloads.COSIGN_SIGN_PREDICATE,
            CREATED_ANNOTATION: created,
        },
    }
    written = store.put_manifest(_json_bytes(manifest), media.OCI_MANIFEST)
    return WrittenSignature("bundle", "written", written.digest, f"referrer {written.digest}")


def _legacy_config(layer_digests: Sequence[str]) -> bytes:
    """The image config go-containerregistry derives for cosign's signature image."""
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layer_digests],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
        "config": {},
    }
    return _json_bytes(config)


def _existing_legacy_layers(store: ImageStore, tag: str) -> list[dict[str, Any]]:
    found = store.resolve(tag)
    if found is None:
        return []
    manifest = store.get_manifest(found.digest)
    layers = manifest.json().get("layers")
    if manifest.is_index or not isinstance(layers, list):
        raise SigningError(
            f"{tag} exists but is not a cosign signature manifest",
            hint="something else uses cosign's signature tag; remove it or sign elsewhere",
        )
    return [layer for layer in layers if isinstance(layer, dict)]


def _sign_legacy(
    store: ImageStore,
    image: Descriptor,
    signer: ImageSigner,
    *,
    identity: str,
    annotations: Mapping[str, str] | None,
    limits: Limits,
) -> WrittenSignature:
    tag = legacy_tag(image.digest)
    payload = payloads.simple_signing_payload(identity, image.digest, annotations)
    payload_digest = sha256_digest(payload)
    layers = _existing_legacy_layers(store, tag)
    policy = signer.own_policy()
    for index, layer in enumerate(layers):
        if layer.get("digest") != payload_digest:
            continue
        candidate = LegacySignature(
            payload, {str(k): str(v) for k, v in (layer.get("annotations") or {}).items()}, tag
        )
        if verify_legacy(candidate, image.digest, policy, limits=limits).accepted:
            current = store.resolve(tag)
            manifest_digest = current.digest if current else ""
            return WrittenSignature("legacy", "present", manifest_digest, f"{tag} layer {index}")
    store.put_blob(payload, payload_digest, size=len(payload))
    layers.append(
        {
            "mediaType": media.COSIGN_SIMPLESIGNING,
            "size": len(payload),
            "digest": payload_digest,
            "annotations": signer.sign_payload(payload),
        }
    )
    config = _legacy_config([str(layer.get("digest")) for layer in layers])
    config_digest = sha256_digest(config)
    store.put_blob(config, config_digest, size=len(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": layers,
    }
    written = store.put_manifest(_json_bytes(manifest), media.OCI_MANIFEST, tag=tag)
    return WrittenSignature("legacy", "written", written.digest, f"{tag} layer {len(layers) - 1}")


def sign_image(
    store: ImageStore,
    digest: str,
    signer: ImageSigner,
    *,
    identity: str | None = None,
    annotations: Mapping[str, str] | None = None,
    formats: Sequence[SignatureFormat] = ALL_FORMATS,
    created: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> SignResult:
    """Sign the image ``digest`` in ``store`` in cosign's formats.

    ``identity`` is the repository the image is published under (see
    :func:`signed_identity`); it defaults to the store's own name, which is right for a
    registry and wrong for a layout the image will be copied out of.

    ``bundle``: a Sigstore bundle v0.3 attached as an OCI 1.1 referrer (the store keeps
    the referrers tag-schema index when the registry has no referrers API).
    ``legacy``: a layer in the ``sha256-<hex>.sig`` signature image (key signers only).
    A signature this signer already made is left alone (status ``present``).
    ``annotations`` go into the signed payloads (cosign's ``-a key=value``).
    """
    image = _resolve_image(store, digest)
    if image.media_type not in media.ALL_MANIFEST_TYPES:
        raise SigningError(f"{digest} is a {image.media_type}, not an image manifest or index")
    named = signed_identity(identity if identity is not None else store.reference.name)
    written: list[WrittenSignature] = []
    if "bundle" in formats:
        written.append(
            _sign_bundle(
                store,
                image,
                signer=signer,
                identity=named,
                annotations=annotations,
                created=created or _now_rfc3339(),
                limits=limits,
            )
        )
    if "legacy" in formats and signer.signs_legacy:
        written.append(
            _sign_legacy(
                store, image, signer, identity=named, annotations=annotations, limits=limits
            )
        )
    return SignResult(
        reference=image_reference(store, digest),
        digest=digest,
        signer=signer.description,
        signatures=tuple(written),
    )


# ---------------------------------------------------------------- by reference


@dataclass(frozen=True)
class ResolvedImage:
    store: ImageStore
    digest: str
    tag: str | None  # the tag the digest was resolved from, if the reference had no digest


def resolve_reference(reference: str, options: StoreOptions | None = None) -> ResolvedImage:
    """Open the store for ``reference`` and pin it: a tag is resolved to its digest once,
    and that digest is what gets signed or verified."""
    from cosgitops.oci import open_store
    from cosgitops.oci.reference import parse_reference

    parsed = parse_reference(reference)
    store = open_store(parsed, options)
    if parsed.digest is not None:
        return ResolvedImage(store, parsed.digest, None)
    tag = parsed.tag or "latest"
    descriptor = store.resolve(tag)
    if descriptor is None:
        raise NotFoundError(
            f"{parsed.name}:{tag} does not exist",
            hint="push the image first, or pass NAME@sha256:DIGEST",
        )
    return ResolvedImage(store, descriptor.digest, tag)


def sign_reference(
    reference: str,
    signer: ImageSigner,
    *,
    options: StoreOptions | None = None,
    identity: str | None = None,
    annotations: Mapping[str, str] | None = None,
    formats: Sequence[SignatureFormat] = ALL_FORMATS,
) -> SignResult:
    """:func:`sign_image` for a reference string (``REG/REPO:TAG``, ``oci:PATH@DIGEST``...)."""
    resolved = resolve_reference(reference, options)
    limits = options.limits if options else DEFAULT_LIMITS
    return sign_image(
        resolved.store,
        resolved.digest,
        signer,
        identity=identity,
        annotations=annotations,
        formats=formats,
        limits=limits,
    )


def verify_reference(
    reference: str, policy: VerificationPolicy, *, options: StoreOptions | None = None
) -> VerificationResult:
    """:func:`verify_image` for a reference string."""
    resolved = resolve_reference(reference, options)
    limits = options.limits if options else DEFAULT_LIMITS
    return verify_image(resolved.store, resolved.digest, policy, limits=limits)
