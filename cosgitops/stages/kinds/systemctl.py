"""``systemctl``: enable, disable, mask and start units, and drop-in overrides.

Enabling, disabling and masking run the root's own ``systemctl`` (inside ``chroot R``
with ``--root``, where systemctl works offline on the unit files). Starting needs the
running system: with ``--root`` it is skipped and says so. On a running system a unit
enabled while the system is still booting is also started (without waiting for it)
when a target that wants it is active or about to be, as it would have been had it
been enabled before boot: our early stages run after systemd has planned the boot,
where yip's run in the initramfs before it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cosgitops.stages.context import RunContext, StepError
from cosgitops.stages.report import KindOutcome
from cosgitops.stages.values import Apply, outcome, text, text_list

UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".path",
    ".slice",
    ".scope",
    ".swap",
    ".device",
)
OVERRIDE_DIR = "/etc/systemd/system"
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")


def _tail(output: bytes) -> str:
    return output.decode("utf-8", "replace").strip()[-600:]


def prepare_systemctl(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    settings = value if isinstance(value, Mapping) else {}
    actions: list[tuple[str, int, str]] = []
    for verb in ("enable", "disable", "mask", "start"):  # yip's order
        for index, written in enumerate(text_list(settings.get(verb))):
            unit = written.strip()
            if not _UNIT.match(unit):
                raise StepError(
                    f"{unit!r} is not a unit name",
                    pointer=("systemctl", verb, index),
                    hint="name a unit such as nginx.service",
                )
            actions.append((verb, index, unit))
    overrides: list[tuple[str, bytes]] = []
    notes: list[str] = []
    raw = settings.get("overrides")
    for index, override in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(override, Mapping):
            continue
        service = text(override.get("service")).strip()
        content = text(override.get("content"))
        if not service or not content:
            notes.append(f"override {index + 1}: no service or no content, skipped (as yip)")
            continue
        name = text(override.get("name")).strip() or "override-yip.conf"
        if not name.endswith(".conf"):
            name += ".conf"
        if not service.endswith(UNIT_SUFFIXES):
            service += ".service"
        pointer = ("systemctl", "overrides", index)
        if not _UNIT.match(service) or "/" in name or name.startswith("."):
            raise StepError(
                f"override {service}/{name} is not a unit and a file name", pointer=pointer
            )
        target = ctx.path(f"{OVERRIDE_DIR}/{service}.d/{name}", pointer=pointer)
        overrides.append((str(target), content.encode()))
    if actions:
        ctx.tool("systemctl", pointer=("systemctl",))

    def apply() -> KindOutcome:
        from pathlib import Path

        changed: list[str] = []
        skipped: list[str] = []
        for path, content in overrides:
            if ctx.update_file(Path(path), content):
                changed.append(f"wrote {ctx.device_path(Path(path))}")
        if changed and ctx.live:
            ctx.command(["systemctl", "daemon-reload"])
        enabled: list[str] = []
        for verb, index, unit in actions:
            if verb == "start":
                if not ctx.live:
                    skipped.append(f"start {unit}: needs the running system (--root)")
                    continue
                result = ctx.command(["systemctl", "start", "--no-block", unit])
            else:
                result = ctx.command(["systemctl", verb, unit])
            output = _tail(result.stdout)
            if result.returncode != 0:
                raise StepError(
                    f"systemctl {verb} {unit} failed: {output}",
                    pointer=("systemctl", verb, index),
                    hint=f"check that {unit} exists in the image",
                )
            if verb == "start":
                changed.append(f"started {unit}")
            elif "Created symlink" in output or "Removed" in output:
                changed.append(f"{verb}d {unit}")
                if verb == "enable":
                    enabled.append(unit)
        if ctx.live and enabled:
            changed.extend(_start_if_booting(ctx, enabled))
        done = outcome("systemctl", changed, [*notes, *skipped])
        if not changed and skipped and len(skipped) == len(actions) and not overrides:
            done.status = "skipped"  # nothing here could run on this root
        return done

    return apply


def _start_if_booting(ctx: RunContext, units: list[str]) -> list[str]:
    """Start units enabled during boot whose targets are active or queued."""
    state = _tail(ctx.command(["systemctl", "is-system-running"]).stdout)
    if state not in ("initializing", "starting"):
        return []
    jobs = _tail(ctx.command(["systemctl", "list-jobs", "--no-legend", "--plain"]).stdout)
    queued = {line.split()[1] for line in jobs.splitlines() if len(line.split()) > 1}
    started: list[str] = []
    for unit in units:
        shown = ctx.command(
            ["systemctl", "show", "--property=WantedBy,RequiredBy", "--value", unit]
        )
        targets = _tail(shown.stdout).split()
        for target in targets:
            active = _tail(ctx.command(["systemctl", "is-active", target]).stdout)
            if active in ("active", "activating") or target in queued:
                ctx.command(["systemctl", "start", "--no-block", unit])
                started.append(f"started {unit} (wanted by {target})")
                break
    return started
