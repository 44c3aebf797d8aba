"""One module per group of step kinds. Each kind's ``prepare(ctx, value, step)`` checks
everything it can without changing anything (paths inside the root, users and groups,
content decoding, names) and returns the function that applies it: a step whose
preparation fails is refused whole, with nothing written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cosgitops.stages.context import RunContext
from cosgitops.stages.kinds import files, layout, system, systemctl, users
from cosgitops.stages.values import Apply

Prepare = Callable[[RunContext, Any, Mapping[str, Any]], Apply]

HANDLERS: dict[str, Prepare] = {
    "dns": system.prepare_dns,
    "ensure_entities": users.prepare_ensure_entities,
    "directories": files.prepare_directories,
    "files": files.prepare_files,
    "commands": system.prepare_commands,
    "delete_entities": users.prepare_delete_entities,
    "hostname": system.prepare_hostname,
    "sysctl": system.prepare_sysctl,
    "users": users.prepare_users,
    "authorized_keys": users.prepare_authorized_keys,
    "modules": system.prepare_modules,
    "timesyncd": system.prepare_timesyncd,
    "systemctl": systemctl.prepare_systemctl,
    "environment": system.prepare_environment,
    "systemd_firstboot": system.prepare_systemd_firstboot,
    "layout": layout.prepare_layout,
}
