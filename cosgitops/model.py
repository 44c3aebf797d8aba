"""Typed objects for the user's repository and for published releases.

These are built only from data that already passed validation
(:func:`cosgitops.validate.load_repository` is the way in), so constructors trust
their input's shape and only apply defaults.

File formats (the contract between the publisher and the device agent) are the
``to_json``/``from_json`` pairs here; ``docs/formats.md`` describes them for people.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.errors import RemoteDataError

API_VERSION = "cosgitops/v1"
REPOSITORY_FILE = "cosgitops.yaml"
DERIVATIVES_DIR = "derivatives"
DERIVATIVE_FILE = "derivative.yaml"
DEFAULT_REGISTRY = "oci:.cosgitops/registry"
DEFAULT_PUBLISH_DIR = "public"
DEFAULT_EXPIRY_DAYS: Mapping[str, int] = {
    "root": 365,
    "targets": 90,
    "snapshot": 7,
    "timestamp": 1,
}


# ---------------------------------------------------------------- cosgitops.yaml


@dataclass(frozen=True)
class Channel:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Identity:
    """A keyless signer: certificate SAN and OIDC issuer (exact, or regexps)."""

    identity: str | None = None
    issuer: str | None = None
    identity_regexp: str | None = None
    issuer_regexp: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Identity:
        """From cosgitops.yaml's or the agent config's camelCase form."""
        return cls(
            identity=data.get("identity"),
            issuer=data.get("issuer"),
            identity_regexp=data.get("identityRegexp"),
            issuer_regexp=data.get("issuerRegexp"),
        )

    def to_json(self) -> dict[str, str]:
        out = {
            "identity": self.identity,
            "issuer": self.issuer,
            "identityRegexp": self.identity_regexp,
            "issuerRegexp": self.issuer_regexp,
        }
        return {key: value for key, value in out.items() if value is not None}


@dataclass(frozen=True)
class TrustRule:
    """Who may sign the derivatives whose names match ``derivatives`` (glob patterns)."""

    derivatives: tuple[str, ...] = ("*",)
    keys: tuple[str, ...] = ()  # public key files (repo-relative) or env://VAR
    identities: tuple[Identity, ...] = ()

    def applies_to(self, derivative: str) -> bool:
        return any(fnmatch.fnmatchcase(derivative, pattern) for pattern in self.derivatives)


@dataclass(frozen=True)
class SigningSpec:
    key: str | None = None  # private key file (repo-relative) or env://VAR; None = dev key
    keyless: bool = False
    trust: tuple[TrustRule, ...] = ()

    def rules_for(self, derivative: str) -> tuple[TrustRule, ...]:
        return tuple(rule for rule in self.trust if rule.applies_to(derivative))


@dataclass(frozen=True)
class PublishSpec:
    dir: str = DEFAULT_PUBLISH_DIR
    url: str | None = None  # where devices fetch the index from
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # role -> key files
    root_threshold: int = 1
    expiry_days: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS))
    # team keys: derivative glob -> key file that signs that derivative's delegated role
    delegation_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Repository:
    root: Path
    name: str
    registry: str = DEFAULT_REGISTRY
    channels: Mapping[str, Channel] = field(default_factory=dict)
    signing: SigningSpec = field(default_factory=SigningSpec)
    publish: PublishSpec = field(default_factory=PublishSpec)

    def image_name(self, derivative: str) -> str:
        """Repository reference (no tag) where ``derivative``'s image is pushed."""
        registry = self.registry.rstrip("/")
        if registry.startswith("oci:"):
            path = Path(registry[4:])
            if not path.is_absolute():
                path = self.root / path
            return f"oci:{path / derivative}"
        return f"{registry}/{derivative}"

    @classmethod
    def from_data(cls, data: Mapping[str, Any], root: Path) -> Repository:
        spec = data.get("spec") or {}
        channels = {
            name: Channel(name, str((value or {}).get("description", "")))
            for name, value in (spec.get("channels") or {"stable": {}}).items()
        }
        signing_data = spec.get("signing") or {}
        trust = tuple(
            TrustRule(
                derivatives=tuple(rule.get("derivatives") or ("*",)),
                keys=tuple(rule.get("keys") or ()),
                identities=tuple(
                    Identity.from_json(ident) for ident in rule.get("identities") or ()
                ),
            )
            for rule in signing_data.get("trust") or ()
        )
        publish_data = spec.get("publish") or {}
        keys = {
            role: tuple(value) if isinstance(value, list) else (value,)
            for role, value in (publish_data.get("keys") or {}).items()
        }
        expiry = dict(DEFAULT_EXPIRY_DAYS)
        expiry.update(publish_data.get("expiryDays") or {})
        return cls(
            root=root,
            name=str((data.get("metadata") or {}).get("name", root.name)),
            registry=str(spec.get("registry", DEFAULT_REGISTRY)),
            channels=channels,
            signing=SigningSpec(
                key=signing_data.get("key"),
                keyless=bool(signing_data.get("keyless", False)),
                trust=trust,
            ),
            publish=PublishSpec(
                dir=str(publish_data.get("dir", DEFAULT_PUBLISH_DIR)),
                url=publish_data.get("url"),
                keys=keys,
                root_threshold=int(publish_data.get("rootThreshold", 1)),
                expiry_days=expiry,
                delegation_keys=dict(publish_data.get("delegationKeys") or {}),
            ),
        )


# ---------------------------------------------------------------- derivative.yaml


@dataclass(frozen=True)
class Rollout:
    start_percentage: int = 100
    duration_minutes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"startPercentage": self.start_percentage, "durationMinutes": self.duration_minutes}


@dataclass(frozen=True)
class ReleaseSpec:
    channels: tuple[str, ...] = ("stable",)
    upgrade_from: str | None = None  # a version range such as ">=1.2.0"
    rollout: Rollout = field(default_factory=Rollout)
    notes: str = ""
    # "required": release refuses an image without a passing, trusted boot attestation
    boot_test: str = "optional"

    @property
    def boot_test_required(self) -> bool:
        return self.boot_test == "required"


@dataclass(frozen=True)
class HealthCheckSpec:
    """One boot health check a derivative declares (``spec.health.checks``)."""

    name: str
    command: str | tuple[str, ...]
    timeout_seconds: float = 60.0

    def to_json(self) -> dict[str, Any]:
        command: Any = self.command if isinstance(self.command, str) else list(self.command)
        return {"name": self.name, "command": command, "timeoutSeconds": self.timeout_seconds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HealthCheckSpec:
        command = data["command"]
        return cls(
            name=str(data["name"]),
            command=command if isinstance(command, str) else tuple(str(c) for c in command),
            timeout_seconds=float(data.get("timeoutSeconds", 60)),
        )


@dataclass(frozen=True)
class Derivative:
    folder: Path  # absolute path of derivatives/<name>
    name: str
    version: str
    base: str  # registry ref, oci:PATH[:TAG][@DIGEST], or "scratch"
    description: str = ""
    platforms: tuple[str, ...] = ("linux/amd64",)
    packages: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    os_release: Mapping[str, str] = field(default_factory=dict)
    overlay: str = "overlay"  # folder inside the derivative copied onto the image root
    cloud_config: str = "oem"  # folder of yip files baked into /system/oem
    labels: Mapping[str, str] = field(default_factory=dict)
    release: ReleaseSpec = field(default_factory=ReleaseSpec)
    health_checks: tuple[HealthCheckSpec, ...] = ()

    @property
    def needs_docker(self) -> bool:
        """Packages and commands must run inside the image: only a real builder can."""
        return bool(self.packages or self.run)

    @property
    def overlay_dir(self) -> Path:
        return self.folder / self.overlay

    @property
    def cloud_config_dir(self) -> Path:
        return self.folder / self.cloud_config

    @classmethod
    def from_data(cls, data: Mapping[str, Any], folder: Path) -> Derivative:
        metadata = data.get("metadata") or {}
        spec = data.get("spec") or {}
        release = spec.get("release") or {}
        rollout = release.get("rollout") or {}
        return cls(
            folder=folder,
            name=str(metadata["name"]),
            description=str(metadata.get("description", "")),
            version=str(spec["version"]),
            base=str(spec.get("base", "scratch")),
            platforms=tuple(spec.get("platforms") or ("linux/amd64",)),
            packages=tuple(spec.get("packages") or ()),
            run=tuple(spec.get("run") or ()),
            os_release={str(k): str(v) for k, v in (spec.get("osRelease") or {}).items()},
            overlay=str(spec.get("overlay", "overlay")),
            cloud_config=str(spec.get("cloudConfig", "oem")),
            labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
            health_checks=tuple(
                HealthCheckSpec.from_json(item)
                for item in (spec.get("health") or {}).get("checks") or ()
            ),
            release=ReleaseSpec(
                channels=tuple(release.get("channels") or ("stable",)),
                upgrade_from=release.get("upgradeFrom"),
                rollout=Rollout(
                    start_percentage=int(rollout.get("startPercentage", 100)),
                    duration_minutes=int(rollout.get("durationMinutes", 0)),
                ),
                notes=str(release.get("notes", "")),
                boot_test=str(release.get("bootTest", "optional")),
            ),
        )


# ---------------------------------------------------------------- published releases


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "mediaType": self.media_type}


@dataclass(frozen=True)
class PlatformImage:
    """One platform's manifest inside a (possibly multi-platform) release."""

    platform: str  # "linux/amd64"
    digest: str  # the platform manifest's digest
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "digest": self.digest,
            "size": self.size,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True)
class BootTestRef:
    """The boot attestation a release names: a signed in-toto statement attached to the
    release's image as an OCI referrer, found again by ``attestation`` (the digest of
    the referrer manifest). The rest is what it said when it was checked, for people;
    devices read and verify the attestation itself."""

    attestation: str  # sha256:<hex> of the referrer manifest
    result: str  # "passed"
    signer: str = ""
    from_version: str | None = None  # the release it upgraded from; None: fresh install
    from_digest: str | None = None
    finished: str = ""  # RFC 3339, when the boot test ended

    def to_json(self) -> dict[str, Any]:
        return {
            "attestation": self.attestation,
            "result": self.result,
            "signer": self.signer,
            "from": None
            if self.from_version is None
            else {"version": self.from_version, "digest": self.from_digest},
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: Any) -> BootTestRef:
        from cosgitops.oci.digest import DIGEST_RE

        attestation = data["attestation"]
        if not isinstance(attestation, str) or not DIGEST_RE.match(attestation):
            raise ValueError(f"bootTest.attestation {attestation!r} is not a digest")
        origin = data.get("from")
        return cls(
            attestation=attestation,
            result=str(data["result"]),
            signer=str(data.get("signer", "")),
            from_version=None if origin is None else str(origin["version"]),
            from_digest=None if origin is None else origin.get("digest"),
            finished=str(data.get("finished", "")),
        )


@dataclass(frozen=True)
class PackageRef:
    """One distribution package in a release's image (from its base's package list)."""

    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class ReleaseManifest:
    """What ``releases/<derivative>/<version>.json`` holds. ``image`` is NAME@DIGEST and
    the digest is what was signed; a device applies exactly that digest."""

    derivative: str
    version: str
    image: str
    platforms: tuple[PlatformImage, ...]
    created: str  # RFC 3339, from the commit time
    commit: str
    channels: tuple[str, ...]
    upgrade_from: str | None = None
    rollout: Rollout = field(default_factory=Rollout)
    rollout_start: str | None = None  # RFC 3339: when the phased rollout began (publish time)
    notes: str = ""
    deadend: bool = False
    signer: str = ""  # key fingerprint or keyless identity that signed the image
    display_name: str = ""
    boot_test: BootTestRef | None = None  # the passing boot attestation, when there is one
    packages: tuple[PackageRef, ...] = ()  # the image's distribution packages, when known

    SCHEMA_VERSION = 1

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    def platform(self, name: str) -> PlatformImage | None:
        for image in self.platforms:
            if image.platform == name:
                return image
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": self.SCHEMA_VERSION,
            "derivative": self.derivative,
            "version": self.version,
            "image": self.image,
            "platforms": [p.to_json() for p in self.platforms],
            "created": self.created,
            "commit": self.commit,
            "channels": list(self.channels),
            "upgradeFrom": self.upgrade_from,
            "rollout": {**self.rollout.to_json(), "start": self.rollout_start},
            "notes": self.notes,
            "deadend": self.deadend,
            "signer": self.signer,
            "displayName": self.display_name,
        }
        # Optional and only written when present: manifests without it keep their bytes,
        # and agents that predate it ignore it.
        if self.boot_test is not None:
            out["bootTest"] = self.boot_test.to_json()
        if self.packages:
            out["packages"] = [package.to_json() for package in self.packages]
        return out

    @classmethod
    def from_json(cls, data: Any) -> ReleaseManifest:
        """Parse untrusted JSON; any shape problem is :class:`RemoteDataError`."""
        try:
            if data.get("schemaVersion") != cls.SCHEMA_VERSION:
                raise RemoteDataError(
                    f"release manifest schemaVersion {data.get('schemaVersion')!r} is not "
                    f"{cls.SCHEMA_VERSION}",
                    hint="upgrade the agent to read releases from a newer publisher",
                )
            image = str(data["image"])
            if "@sha256:" not in image:
                raise RemoteDataError(f"release image {image!r} is not pinned by digest")
            rollout = data.get("rollout") or {}
            boot_test = data.get("bootTest")
            return cls(
                derivative=str(data["derivative"]),
                version=str(data["version"]),
                image=image,
                platforms=tuple(
                    PlatformImage(
                        platform=str(p["platform"]),
                        digest=str(p["digest"]),
                        layers=tuple(
                            Layer(str(layer["digest"]), int(layer["size"]), str(layer["mediaType"]))
                            for layer in p["layers"]
                        ),
                    )
                    for p in data["platforms"]
                ),
                created=str(data["created"]),
                commit=str(data["commit"]),
                channels=tuple(str(c) for c in data["channels"]),
                upgrade_from=data.get("upgradeFrom"),
                rollout=Rollout(
                    start_percentage=int(rollout.get("startPercentage", 100)),
                    duration_minutes=int(rollout.get("durationMinutes", 0)),
                ),
                rollout_start=rollout.get("start"),
                notes=str(data.get("notes", "")),
                deadend=bool(data.get("deadend", False)),
                signer=str(data.get("signer", "")),
                display_name=str(data.get("displayName", "")),
                boot_test=None if boot_test is None else BootTestRef.from_json(boot_test),
                packages=tuple(
                    PackageRef(str(item["name"]), str(item["version"]))
                    for item in data.get("packages") or ()
                ),
            )
        except RemoteDataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemoteDataError(f"malformed release manifest: {exc!r}") from exc
