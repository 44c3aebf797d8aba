from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cosgitops import model
from cosgitops.publish.rolekeys import KeyRing
from tests.publish import factory


@pytest.fixture
def keys() -> dict[str, list[ec.EllipticCurvePrivateKey]]:
    return factory.role_keys()


@pytest.fixture
def ring(keys: dict[str, list[ec.EllipticCurvePrivateKey]]) -> KeyRing:
    return factory.keyring(keys)


@pytest.fixture
def repo(tmp_path: Path) -> model.Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return factory.repository(root)
