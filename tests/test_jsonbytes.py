"""cosgitops.jsonbytes: RFC 8785 where others recompute the bytes, the image rule where
digests depend on them, and no third rule anywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cosgitops.jsonbytes import image_json, rfc8785_json

PACKAGE = Path(__file__).resolve().parent.parent / "cosgitops"

# Keys that sort differently by code point (U+FB33 < U+1F600) and by UTF-16 code unit
# (U+1F600 is the surrogate pair D83D DE00, before FB33), and a float each rule writes
# in its own way: RFC 8785 section 3.2.3's example and ECMAScript's number forms.
ASTRAL, HEBREW = "\U0001f600", "\ufb33"


def test_rfc8785_follows_the_rfc() -> None:
    value = {"logIndex": 1, "logID": "x", "body": "é", "integratedTime": 2, "z": [True, None]}
    assert rfc8785_json(value) == (
        '{"body":"é","integratedTime":2,"logID":"x","logIndex":1,"z":[true,null]}'.encode()
    )
    assert rfc8785_json({HEBREW: 1, ASTRAL: 2}) == f'{{"{ASTRAL}":2,"{HEBREW}":1}}'.encode()
    assert rfc8785_json([1.0, 1.5, 1e21, -0.0, 1e-7]) == b"[1,1.5,1e+21,0,1e-7]"
    assert rfc8785_json({"a": "\n\u001f\u007f"}) == b'{"a":"\\n\\u001f\x7f"}'
    for bad in (float("nan"), 2**53, {1: 2}, b"bytes"):
        with pytest.raises(ValueError, match="RFC 8785"):
            rfc8785_json(bad)


def test_image_json_keeps_the_bytes_images_were_built_with() -> None:
    config = {
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        "config": {"Labels": {"b": "é", "a": "x"}, "Env": ["PATH=/usr/bin"]},
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
    }
    assert (
        image_json(config)
        == (
            '{"architecture":"amd64","config":{"Env":["PATH=/usr/bin"],"Labels":{"a":"x","b":"é"}},'
            '"created":"1970-01-01T00:00:00Z","os":"linux",'
            '"rootfs":{"diff_ids":["sha256:' + "0" * 64 + '"],"type":"layers"}}'
        ).encode()
    )
    # Where the rules differ, the image rule is the one digests were computed with.
    assert image_json({HEBREW: 1, ASTRAL: 2}) == f'{{"{HEBREW}":1,"{ASTRAL}":2}}'.encode()
    assert image_json([1.0, 2**60]) == b"[1.0,1152921504606846976]"
    assert json.loads(image_json(config)) == config


def test_no_other_canonical_json_rule_in_the_package() -> None:
    """One function per rule: no module keeps a private copy under another name."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "jsonbytes.py":
            continue
        text = path.read_text()
        if re.search(r"def \w*canonical\w*json", text) or re.search(
            r"sort_keys=True,\s*separators", text
        ):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
