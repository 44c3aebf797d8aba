"""cosgitops.config.Limits: nothing in it can turn a security check off."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cosgitops.config import DEFAULT_LIMITS, Limits

# An opt-in may widen what is reachable (plain HTTP to a named host), never skip a check.
CHECK_WORDS = re.compile(r"skip|verif|signature|trust|insecure_all|no_check|disable", re.I)


def test_no_limit_skips_signature_verification() -> None:
    names = [field.name for field in dataclasses.fields(Limits)]
    assert "unsafe_skip_signature_verification" not in names
    with pytest.raises(TypeError):
        Limits(unsafe_skip_signature_verification=True)  # type: ignore[call-arg]


def test_every_weakening_opt_in_is_named_unsafe_and_off() -> None:
    unsafe = [field for field in dataclasses.fields(Limits) if field.name.startswith("unsafe_")]
    for field in unsafe:
        assert getattr(DEFAULT_LIMITS, field.name) is False, field.name
        assert not CHECK_WORDS.search(field.name), f"{field.name} turns a check off"
    # Every boolean in Limits is such an opt-in: a flag is either unsafe_* or not a flag.
    flags = [field.name for field in dataclasses.fields(Limits) if field.type in (bool, "bool")]
    assert flags == [field.name for field in unsafe]
