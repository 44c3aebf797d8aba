"""One module per group of step kinds. Each kind's ``prepare(ctx, value, step)`` checks
everything it can without changing anything (paths inside the root, users and groups,
content decoding, names) and returns the function that applies it: a step whose
preparation fails is refused whole, with nothing written.

A module is imported the first time one of its kinds is met: a boot stage with files
and a host name never pays for the user, disk or systemd code."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosgitops.stages.context import RunContext
    from cosgitops.stages.values import Apply

Prepare = Callable[["RunContext", Any, Mapping[str, Any]], "Apply"]

# kind -> module of cosgitops.stages.kinds holding its prepare_<kind>
HANDLERS: dict[str, str] = {
    "dns": "system",
    "ensure_entities": "users",
    "directories": "files",
    "files": "files",
    "commands": "system",
    "delete_entities": "users",
    "hostname": "system",
    "sysctl": "system",
    "users": "users",
    "authorized_keys": "users",
    "modules": "system",
    "timesyncd": "system",
    "systemctl": "systemctl",
    "environment": "system",
    "systemd_firstboot": "system",
    "layout": "layout",
}


def handler(kind: str) -> Prepare:
    module = importlib.import_module(f"cosgitops.stages.kinds.{HANDLERS[kind]}")
    prepare: Prepare = getattr(module, f"prepare_{kind}")
    return prepare
