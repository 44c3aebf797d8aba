"""The boot test's own fleet on an update medium: the real images (same digests) and
release settings under throwaway trust, read back as a device reads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from cosgitops.boottest.medium import MediumImage, write_test_medium
from cosgitops.oci import open_store
from cosgitops.publish.reader import open_index
from cosgitops.release import release
from cosgitops.signing import key_policy, verify_image
from cosgitops.validate import load_repository

NAME = "example"


def test_the_medium_holds_both_releases_under_its_own_trust(tmp_path: Path) -> None:
    from cosgitops.builder import build_derivative
    from cosgitops.scaffold import init_repository

    repo = tmp_path / "fleet"
    init_repository(repo, name="fleet")
    path = repo / "derivatives" / NAME / "derivative.yaml"
    definition = yaml.safe_load(path.read_text())
    definition["spec"]["release"]["rollout"] = {"startPercentage": 5, "durationMinutes": 600}
    definition["spec"]["release"]["upgradeFrom"] = ">=0.1.0"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    for args in (["add", "-A"], ["commit", "-q", "-m", "0.1.0"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    assert release(repo).ok
    published = open_index(repo / "public").manifest(NAME, "0.1.0")

    definition["spec"]["version"] = "0.2.0"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    (repo / "derivatives" / NAME / "overlay" / "etc" / "motd").write_text("0.2.0\n")
    for args in (["add", "-A"], ["commit", "-q", "-m", "0.2.0"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    tree = load_repository(repo)
    derivative = tree.derivatives[NAME]
    built = build_derivative(tree.repository, derivative)  # not published, not signed
    store = open_store(built.name)

    medium = write_test_medium(
        tmp_path / "work",
        tree.repository,
        derivative,
        [
            MediumImage("0.1.0", store, published.digest, published),
            MediumImage("0.2.0", store, built.digest),
        ],
    )
    index = open_index(medium.index)
    assert [r.version for r in index.releases(NAME)] == ["0.2.0", "0.1.0"]
    candidate = index.manifest(NAME, "0.2.0")
    assert candidate.digest == built.digest
    assert candidate.image == f"oci:{medium.layout(NAME)}@{built.digest}"
    assert candidate.upgrade_from == ">=0.1.0"  # the real release settings
    assert candidate.rollout.start_percentage == 100  # but the test device gets it now
    assert index.manifest(NAME, "0.1.0").digest == published.digest
    assert (
        medium.trusted_root.read_bytes() == (medium.index / "metadata" / "1.root.json").read_bytes()
    )
    assert not medium.trusted_root.is_relative_to(medium.root)

    layout = open_store(f"oci:{medium.layout(NAME)}")
    policy = key_policy([str(medium.public_key)])
    for version, digest in (("0.1.0", published.digest), ("0.2.0", built.digest)):
        found = layout.resolve(version)
        assert found is not None and found.digest == digest
        assert verify_image(layout, digest, policy).ok
    # the production key did not sign the medium's copies, the throwaway key did
    production = key_policy([str(repo / ".cosgitops" / "keys" / "cosign.pub")])
    assert not verify_image(layout, built.digest, production).ok

    # `disk` installs from the medium's index through a repository that trusts it
    fleet = load_repository(medium.repository)
    assert (fleet.repository.root / fleet.repository.publish.dir) == medium.index
    assert [d.version for d in fleet.derivatives.values()] == ["0.2.0"]
    from cosgitops.signing import policy_for

    assert verify_image(layout, built.digest, policy_for(fleet.repository, NAME)).ok
