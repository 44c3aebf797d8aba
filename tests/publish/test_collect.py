"""From a built, signed image in an OCI layout to a published release (and the
`cosgitops publish` command end to end)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops import model
from cosgitops.errors import NotFoundError, PublishError, VerificationError
from cosgitops.oci import media, open_store
from cosgitops.oci.digest import sha256_digest
from cosgitops.publish import paths
from cosgitops.publish.collect import collect_release
from cosgitops.publish.publisher import open_index
from cosgitops.signing import key_signer, sign_image
from cosgitops.signing.keys import write_keypair
from tests.builder.helpers import make_repo
from tests.helpers.services import StaticServer
from tests.oci.images import make_image, make_index, push_image
from tests.publish import factory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CREATED = "2024-05-01T12:00:00Z"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _push_release(
    root: Path, name: str, version: str, *, sign: bool = True, key: str = "keys/cosign.key"
) -> str:
    """A two-platform image tagged ``version`` in the repository's default OCI layout."""
    store = open_store(f"oci:{root / '.cosgitops' / 'registry' / name}")
    children = []
    for arch in ("amd64", "arm64"):
        image = make_image(
            [{"etc/os-release": f"ID={name}\nARCH={arch}\n".encode()}], architecture=arch
        )
        children.append((push_image(store, image), arch))
    index = json.loads(make_index(children))
    index["annotations"] = {
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.revision": REVISION,
    }
    data = json.dumps(index, sort_keys=True).encode()
    store.put_manifest(data, media.OCI_INDEX, tag=version)
    digest = sha256_digest(data)
    if sign:
        sign_image(store, digest, key_signer(str(root / key), password=b""))
    return digest


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", "publish", "-C", str(root), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


def _repository(root: Path) -> tuple[model.Repository, model.Derivative]:
    root.mkdir(parents=True, exist_ok=True)
    write_keypair(root / "keys" / "cosign", b"")
    repository = model.Repository.from_data(
        {
            "metadata": {"name": "fleet"},
            "spec": {
                "channels": {"stable": {}},
                "signing": {"trust": [{"derivatives": ["*"], "keys": ["keys/cosign.pub"]}]},
            },
        },
        root,
    )
    derivative = model.Derivative(
        folder=root / "derivatives" / "kiosk",
        name="kiosk",
        version="1.2.0",
        base="scratch",
        platforms=("linux/amd64", "linux/arm64"),
        os_release={"GRUB_ENTRY_NAME": "Kiosk OS"},
        release=model.ReleaseSpec(channels=("stable",), upgrade_from=">=1.0.0"),
    )
    return repository, derivative


def test_collect_reads_the_pushed_image_and_its_signer(tmp_path: Path) -> None:
    repository, derivative = _repository(tmp_path)
    digest = _push_release(tmp_path, "kiosk", "1.2.0")
    manifest = collect_release(repository, derivative)
    assert manifest.image == f"oci:{tmp_path / '.cosgitops' / 'registry' / 'kiosk'}@{digest}"
    assert [p.platform for p in manifest.platforms] == ["linux/amd64", "linux/arm64"]
    store = open_store(manifest.image.rsplit("@", 1)[0])
    for platform in manifest.platforms:
        pushed = store.get_manifest(platform.digest).json()
        assert [layer.digest for layer in platform.layers] == [
            layer["digest"] for layer in pushed["layers"]
        ]
        assert platform.size == sum(layer["size"] for layer in pushed["layers"])
    assert manifest.created == CREATED and manifest.commit == REVISION
    assert manifest.upgrade_from == ">=1.0.0" and manifest.channels == ("stable",)
    assert manifest.display_name == "Kiosk OS"
    from cosgitops.signing.keys import key_fingerprint, load_public_key

    assert manifest.signer == key_fingerprint(load_public_key(str(tmp_path / "keys/cosign.pub")))


def test_collect_refuses_unsigned_missing_and_unpinned(tmp_path: Path) -> None:
    repository, derivative = _repository(tmp_path)
    with pytest.raises(NotFoundError):
        collect_release(repository, derivative)
    _push_release(tmp_path, "kiosk", "1.2.0", sign=False)
    with pytest.raises(VerificationError):
        collect_release(repository, derivative)
    from dataclasses import replace

    floating = replace(derivative, base="registry.example.com/cos/base:0.10.2")
    with pytest.raises(PublishError) as caught:
        collect_release(repository, floating)
    assert "pinned" in str(caught.value)


def test_publish_command_collects_signs_checks_and_publishes(
    tmp_path: Path, static_server_factory: type[StaticServer]
) -> None:
    root = tmp_path / "repo"
    make_repo(
        root,
        {"kiosk": {"version": "1.2.0", "release": {"channels": ["stable"]}}},
        {".gitignore": ".cosgitops/\npublic/\n"},  # as `cosgitops init` writes it
    )
    write_keypair(root / ".cosgitops" / "keys" / "cosign", b"")  # the development signing key
    _push_release(root, "kiosk", "1.2.0", key=".cosgitops/keys/cosign.key")
    result = _cli(root, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["derivative"], r["version"]) for r in report["added"]] == [("kiosk", "1.2.0")]
    assert "DEVELOPMENT KEY" in result.stderr
    public = root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        _, data = client.fetch(paths.release_target_path("kiosk", "1.2.0"))
    served = json.loads(data)
    assert served["signer"] and served["image"].endswith(report["added"][0]["image"][-71:])
    # The image is a local OCI layout, which no Elemental cluster can pull: an empty list.
    assert json.loads((public / "channels" / "kiosk" / "stable.json").read_text()) == []
    # Again: nothing new, exit 0, index untouched.
    again = _cli(root, "--format", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert open_index(public).timestamp_version == 1


def test_publish_command_reports_missing_images_without_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_repo(root, {"kiosk": {"version": "1.2.0"}})
    result = _cli(root)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert "hint:" in result.stderr
