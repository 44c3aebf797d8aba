"""Rules for yip cloud-config files beyond their schema (pure: values in, findings out).

yip ignores what it does not know, so a misspelt key is a silent no-op on the device;
these rules turn such mistakes into warnings with a "did you mean" hint. The known keys
come from ``schemas/cloud-config.schema.json`` (subschemas marked
``x-cosgitops-unknown-keys``); stages, cloud-init keys and what the stage runner skips
come from ``cosgitops.stages.model``, which a test keeps equal to the schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cosgitops.stages.model import CLOUD_INIT_KEYS, KNOWN_STAGES, unsupported_uses
from cosgitops.validate.diagnostics import Finding
from cosgitops.validate.schema import CompiledSchema, did_you_mean

# crypt(3) hashes and the markers for "no password / locked"
_HASHED_RE = re.compile(r"^(?:!{0,2}\$[0-9a-z]+\$|[!*]+$|$)")

Path = tuple[str | int, ...]


def _resolve(schema: CompiledSchema, node: Any) -> Any:
    while isinstance(node, Mapping) and "$ref" in node:
        node = schema.subschema(node["$ref"])
    return node


def _child_schema(schema: CompiledSchema, node: Any, key: str | int) -> Any:
    """The subschema that applies to member ``key`` (only the forms our schema uses)."""
    node = _resolve(schema, node)
    if not isinstance(node, Mapping):
        return None
    if isinstance(key, int):
        return node.get("items")
    properties = node.get("properties") or {}
    if key in properties:
        return properties[key]
    additional = node.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


def unknown_keys(
    schema: CompiledSchema, value: Any, *, skip_top_level: bool = False
) -> Iterator[Finding]:
    """Keys that yip would ignore, wherever the schema marks objects as closed to them."""
    stack: list[tuple[Any, Any, Path]] = [(schema.schema, value, ())]
    seen: set[int] = set()  # an aliased mapping is reported once, where it is written
    while stack:
        node, current, path = stack.pop()
        node = _resolve(schema, node)
        if not isinstance(node, Mapping):
            continue
        if isinstance(current, (dict, list)):
            if id(current) in seen:
                continue
            seen.add(id(current))
        if isinstance(current, dict):
            properties = node.get("properties") or {}
            check = node.get("x-cosgitops-unknown-keys") == "warning" and not (
                skip_top_level and not path
            )
            for key, member in current.items():
                if check and key not in properties:
                    yield Finding(
                        (*path, key),
                        "yip-unknown-key",
                        f"unknown key {key!r}: yip ignores it",
                        did_you_mean(key, list(properties)),
                        "warning",
                        at_key=True,
                    )
                    continue
                child = _child_schema(schema, node, key)
                if child is not None:
                    stack.append((child, member, (*path, key)))
        elif isinstance(current, list):
            child = _child_schema(schema, node, 0)
            if child is not None:
                for index, member in enumerate(current):
                    stack.append((child, member, (*path, index)))


def _steps(value: Mapping[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    stages = value.get("stages")
    if not isinstance(stages, dict):
        return
    for stage, steps in stages.items():
        if not isinstance(steps, list):
            continue
        for index, step in enumerate(steps):
            if isinstance(step, dict):
                yield ("stages", stage, index), step


def _stage_names(value: Mapping[str, Any]) -> Iterator[Finding]:
    stages = value.get("stages")
    if not isinstance(stages, dict):
        return
    import difflib

    for stage in stages:
        if stage in KNOWN_STAGES or not isinstance(stage, str):
            continue
        close = difflib.get_close_matches(stage, sorted(KNOWN_STAGES), n=1, cutoff=0.85)
        if close:
            yield Finding(
                ("stages", stage),
                "yip-stage-name",
                f"stage {stage!r} is not one yip runs",
                f"did you mean {close[0]!r}?",
                "warning",
                at_key=True,
            )


def _unsupported(value: Mapping[str, Any]) -> Iterator[Finding]:
    """Kinds (and fields) the stage runner of this device skips: yip would run them."""
    for path, step in _steps(value):
        for use in unsupported_uses(step):
            yield Finding(
                (*path, *use.path),
                "yip-unsupported",
                f"{use.what} {use.reason}: cosgitops's stage runner skips it on this device",
                use.hint,
                "warning",
                at_key=isinstance(use.path[-1], str),
            )


def _passwords(value: Mapping[str, Any], cloud_init: bool) -> Iterator[Finding]:
    entries: list[tuple[Path, Any]] = []
    for path, step in _steps(value):
        users = step.get("users")
        if isinstance(users, dict):
            entries.extend(((*path, "users", name), user) for name, user in users.items())
    if cloud_init and isinstance(value.get("users"), list):
        entries.extend((("users", index), user) for index, user in enumerate(value["users"]))
    for path, user in entries:
        if not isinstance(user, dict):
            continue
        password = user.get("passwd")
        if password is None or not isinstance(password, (str, int, float)):
            continue
        if isinstance(password, str) and _HASHED_RE.match(password):
            continue
        yield Finding(
            (*path, "passwd"),
            "yip-plaintext-password",
            "password is plain text: it is readable in Git and on every device",
            "store a crypt(3) hash instead, e.g. the output of `mkpasswd -m sha-512`, "
            "or lock the password (passwd: '!') and use ssh_authorized_keys",
            "warning",
        )


def _modes(value: Mapping[str, Any]) -> Iterator[tuple[Path, Any]]:
    for path, step in _steps(value):
        for section in ("files", "directories", "downloads"):
            entries = step.get(section)
            if not isinstance(entries, list):
                continue
            for index, entry in enumerate(entries):
                if isinstance(entry, dict) and "permissions" in entry:
                    yield (*path, section, index, "permissions"), entry["permissions"]


def decimal_modes(value: Mapping[str, Any], plain_text: Any) -> Iterator[Finding]:
    """Integer modes written without a leading zero (``644`` is decimal 644, mode 1204).
    ``plain_text(path)`` gives the scalar as written."""
    for path, mode in _modes(value):
        if type(mode) is not int or mode < 8:
            continue
        written = plain_text(path)
        if not written or written.startswith(("0", "+0", "-0")):
            continue
        yield Finding(
            path,
            "yip-permissions",
            f"permissions {written} is the decimal number {mode} (mode {mode:o} in octal)",
            f"write the mode in octal with a leading zero, e.g. permissions: 0{written}"
            if re.fullmatch(r"[0-7]{3,4}", written)
            else f"write it in octal with a leading zero: permissions: 0{mode:o}",
            "warning",
        )


def check_cloud_config(
    schema: CompiledSchema, value: Any, *, cloud_init: bool, plain_text: Any
) -> list[Finding]:
    """Warnings for one cloud-config document (its schema errors are reported apart)."""
    if not isinstance(value, dict):
        return []
    findings = list(unknown_keys(schema, value, skip_top_level=cloud_init))
    if not cloud_init:
        for key in value:
            if key in CLOUD_INIT_KEYS:
                findings.append(
                    Finding(
                        (key,),
                        "yip-cloud-init-key",
                        f"{key!r} is cloud-init syntax: yip reads it only in files whose "
                        "first line is #cloud-config",
                        "add #cloud-config as the first line, or move it into a stage step",
                        "warning",
                        at_key=True,
                    )
                )
    findings.extend(_stage_names(value))
    findings.extend(_unsupported(value))
    findings.extend(_passwords(value, cloud_init))
    findings.extend(decimal_modes(value, plain_text))
    return findings
