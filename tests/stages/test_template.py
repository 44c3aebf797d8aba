"""The Go-template subset of yip's configs, and the helpers around it."""

from __future__ import annotations

import pytest

from cosgitops.stages import crypt
from cosgitops.stages.context import protected_id
from cosgitops.stages.template import NO_VALUE, TemplateError, render

DATA = {"MachineID": "0123456789abcdef", "Values": {"os": {"name": "Debian"}, "n": 7}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("edge-{{ trunc 4 .MachineID }}", "edge-0123"),
        ("edge-{{ .MachineID | trunc 4 | upper }}", "edge-0123"),
        ("{{ trunc -4 .MachineID }}", "cdef"),
        ("{{.Values.os.name}} {{ .Values.n }}", "Debian 7"),
        ("{{ .Values.missing }}", NO_VALUE),
        ('{{ "A-b" | lower | replace "-" "_" }}', "a_b"),
        ('{{ default "x" .Values.missing }}', "x"),
        ("a  {{- .Values.n -}}  b", "a7b"),
        ("no template", "no template"),
        ("{{/* a comment */}}kept", "kept"),
    ],
)
def test_render(source: str, expected: str) -> None:
    assert render(source, DATA) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ if .MachineID }}x{{ end }}",
        "{{ sha256sum .MachineID }}",
        "{{ .MachineID",
        "{{ $x := 1 }}",
        "{{ upper (trunc 2 .MachineID) }}",
    ],
)
def test_what_is_not_supported_is_an_error(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source, DATA)


def test_protected_id_is_hmac_sha256_keyed_by_the_machine_id() -> None:
    # printf yip | openssl dgst -sha256 -hmac abc
    assert protected_id("abc") == "f06a8e323ff9feba6068b1ec2e07d71a3e5766181ca7e0933a87617561ced493"
    assert protected_id("") == ""


def test_crypt_hashes_and_checks() -> None:
    hashed = crypt.sha512_hash("secret")
    assert hashed.startswith("$6$") and crypt.matches("secret", hashed)
    assert not crypt.matches("other", hashed)
    assert crypt.is_hashed(hashed) and crypt.is_hashed("!") and crypt.is_hashed("*")
    assert not crypt.is_hashed("plain")
