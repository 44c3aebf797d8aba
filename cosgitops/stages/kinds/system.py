"""``commands``, ``hostname``, ``dns``, ``sysctl``, ``modules``, ``environment``,
``timesyncd`` and ``systemd_firstboot``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cosgitops.stages import template
from cosgitops.stages.context import RunContext, StepError, protected_id, random_string
from cosgitops.stages.report import KindOutcome
from cosgitops.stages.values import Apply, outcome, render_system, text, text_list, text_map

SYSCTL_FILE = "/etc/sysctl.d/90-cosgitops.conf"
MODULES_FILE = "/etc/modules-load.d/cosgitops.conf"
MODPROBE_FILE = "/etc/modprobe.d/cosgitops.conf"
TIMESYNCD_FILE = "/etc/systemd/timesyncd.conf.d/10-yip.conf"  # the file yip writes
ENVIRONMENT_FILE = "/etc/environment"
LIVE_SKIPPED = "the running kernel is left alone (--root)"

_HOSTNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@%*+-]*(?:/[A-Za-z0-9_.:@%*+-]+)*$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
_PARAMETER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,:=/+-]*$")
_FIRSTBOOT_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


def _tail(output: bytes, limit: int = 600) -> str:
    text_out = output.decode("utf-8", "replace").strip()
    return text_out if len(text_out) <= limit else "..." + text_out[-limit:]


# ---------------------------------------------------------------- commands


def prepare_commands(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    notes: list[str] = []
    commands = [
        render_system(ctx, command, notes, f"command {index + 1}")
        for index, command in enumerate(text_list(value))
    ]

    def apply() -> KindOutcome:
        failures: list[tuple[int, str]] = []
        for index, command in enumerate(commands):
            result = ctx.shell(command)
            if result.returncode != 0:
                output = _tail(result.stdout)
                failures.append(
                    (
                        index,
                        f"`{command.strip()[:200]}` exited {result.returncode}"
                        + (f": {output}" if output else ""),
                    )
                )
        if failures:
            index, message = failures[0]
            more = (
                f" ({len(failures)} of {len(commands)} commands failed)"
                if len(failures) > 1
                else ""
            )
            raise StepError(
                f"command {message}{more}",
                pointer=("commands", index),
                hint="run it by hand on the device to see why",
            )
        ran = f"ran {len(commands)} command{'s' if len(commands) != 1 else ''}"
        return outcome("commands", [ran], notes)

    return apply


# ---------------------------------------------------------------- hostname


def hostname_values(ctx: RunContext) -> dict[str, str]:
    import uuid

    machine_id = ctx.machine_id()
    return {
        "UUID": str(uuid.uuid4()),
        "Random": random_string(32),
        "MachineID": machine_id,
        "ProtectedID": protected_id(machine_id),
    }


def hosts_content(current: str | None, name: str) -> str:
    """/etc/hosts with yip's line for 127.0.0.1 (``127.0.0.1 localhost NAME``)."""
    wanted = f"127.0.0.1 localhost {name}"
    lines = (current or "").splitlines()
    out: list[str] = []
    seen = False
    for line in lines:
        fields = line.split()
        if fields and fields[0] == "127.0.0.1":
            out.append(wanted)
            seen = True
        else:
            out.append(line.strip())
    if not seen:
        out.insert(0, wanted)
    return "\n".join(out) + "\n"


def prepare_hostname(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    source = text(value).strip()
    try:
        name = template.render(source, hostname_values(ctx)).strip()
    except template.TemplateError as error:
        raise StepError(
            f"hostname {source!r}: {error}",
            pointer=("hostname",),
            hint="use .MachineID, .UUID, .Random or .ProtectedID with trunc, lower, upper, replace",
        ) from error
    if not _HOSTNAME.match(name) or name.endswith("-"):
        hint = "use letters, digits, '-' and '.', at most 64 characters"
        if "MachineID" in source and not ctx.machine_id():
            hint = "the machine id is empty: /etc/machine-id is written at first boot"
        raise StepError(
            f"hostname {name!r} is not a valid host name", hint=hint, pointer=("hostname",)
        )

    def apply() -> KindOutcome:
        import socket

        changed: list[str] = []
        notes: list[str] = []
        if ctx.update_file(ctx.path("/etc/hostname"), f"{name}\n".encode()):
            changed.append(f"/etc/hostname is {name}")
        hosts = ctx.path("/etc/hosts")
        current = ctx.read_text("/etc/hosts")
        if ctx.update_file(hosts, hosts_content(current, name).encode()):
            changed.append("updated /etc/hosts")
        if ctx.live:
            if socket.gethostname() != name:
                try:
                    socket.sethostname(name)
                except OSError as error:
                    raise StepError(
                        f"cannot set the host name: {error.strerror}", pointer=("hostname",)
                    ) from error
                changed.append(f"host name set to {name}")
        else:
            notes.append(LIVE_SKIPPED)
        return outcome("hostname", changed, notes)

    return apply


# ---------------------------------------------------------------- dns


def resolv_conf(nameservers: list[str], search: list[str], options: list[str]) -> str:
    lines: list[str] = []
    joined = " ".join(search)
    if search and joined.strip(" ") != ".":
        lines.append(f"search {joined}")
    lines.extend(f"nameserver {server}" for server in nameservers)
    if options and " ".join(options).strip(" "):
        lines.append(f"options {' '.join(options)}")
    return "".join(line + "\n" for line in lines)


def prepare_dns(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    settings = value if isinstance(value, Mapping) else {}
    nameservers = text_list(settings.get("nameservers"))
    path = text(settings.get("path")) or "/etc/resolv.conf"
    if not nameservers:  # yip writes nothing without name servers

        def nothing() -> KindOutcome:
            return KindOutcome("dns", "unchanged", "no nameservers: nothing to write (as yip)")

        return nothing
    target = ctx.path(path, pointer=("dns", "path"))
    content = resolv_conf(
        nameservers, text_list(settings.get("search")), text_list(settings.get("options"))
    )

    def apply() -> KindOutcome:
        changed = [f"wrote {path}"] if ctx.update_file(target, content.encode()) else []
        return outcome("dns", changed)

    return apply


# ---------------------------------------------------------------- sysctl


def _key_values(current: str | None, separator: str = "=") -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for line in (current or "").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        key, sep, value = stripped.partition(separator)
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _merge(pairs: list[tuple[str, str]], updates: Mapping[str, str]) -> list[tuple[str, str]]:
    merged = dict(pairs)
    merged.update(updates)
    return list(merged.items())


def prepare_sysctl(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    settings = text_map(value)
    for key, setting in settings.items():
        if not _SYSCTL_KEY.match(key) or ".." in key or "\n" in setting:
            raise StepError(
                f"{key!r} is not a sysctl key",
                pointer=("sysctl", key),
                hint="write it as sysctl does: net.ipv4.ip_forward",
            )
    target = ctx.path(SYSCTL_FILE)

    def apply() -> KindOutcome:
        changed: list[str] = []
        notes: list[str] = []
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        merged = _merge(_key_values(current), settings)
        content = "# written by cosgitops from cloud-config sysctl steps\n" + "".join(
            f"{key} = {setting}\n" for key, setting in merged
        )
        if ctx.update_file(target, content.encode()):
            changed.append(f"wrote {SYSCTL_FILE}")
        if not ctx.live:
            notes.append(LIVE_SKIPPED)
            return outcome("sysctl", changed, notes)
        for key, setting in settings.items():
            proc = Path("/proc/sys", *key.split("."))
            try:
                if " ".join(proc.read_text().split()) == " ".join(setting.split()):
                    continue
                proc.write_text(setting)
            except OSError as error:
                raise StepError(
                    f"cannot set {key}: {error.strerror or error}", pointer=("sysctl", key)
                ) from error
            changed.append(f"{key} = {setting}")
        return outcome("sysctl", changed, notes)

    return apply


# ---------------------------------------------------------------- modules


def prepare_modules(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    wanted: list[tuple[str, list[str]]] = []
    for index, line in enumerate(text_list(value)):
        parts = line.split()
        if not parts or not _MODULE.match(parts[0]) or not all(map(_PARAMETER.match, parts[1:])):
            raise StepError(
                f"{line!r} is not a module name with parameters",
                pointer=("modules", index),
                hint="write the module and its parameters: 'dummy numdummies=2'",
            )
        wanted.append((parts[0], parts[1:]))
    load_file = ctx.path(MODULES_FILE)
    options_file = ctx.path(MODPROBE_FILE)

    def apply() -> KindOutcome:
        changed: list[str] = []
        notes: list[str] = []
        names = [
            line.strip()
            for line in (ctx.read_text(MODULES_FILE) or "").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        options = {
            fields[1]: fields[2:]
            for fields in (
                line.split() for line in (ctx.read_text(MODPROBE_FILE) or "").splitlines()
            )
            if len(fields) >= 2 and fields[0] == "options"
        }
        for name, parameters in wanted:
            if name not in names:
                names.append(name)
            if parameters:
                options[name] = parameters
        header = "# written by cosgitops from cloud-config modules steps\n"
        if ctx.update_file(load_file, (header + "".join(n + "\n" for n in names)).encode()):
            changed.append(f"wrote {MODULES_FILE}")
        if options:
            body = "".join(f"options {n} {' '.join(p)}\n" for n, p in options.items())
            if ctx.update_file(options_file, (header + body).encode()):
                changed.append(f"wrote {MODPROBE_FILE}")
        if not ctx.live:
            notes.append(LIVE_SKIPPED)
            return outcome("modules", changed, notes)
        loaded = {
            line.split(" ", 1)[0]
            for line in (
                Path("/proc/modules").read_text().splitlines()
                if Path("/proc/modules").exists()
                else []
            )
        }
        for index, (name, parameters) in enumerate(wanted):
            if name.replace("-", "_") in loaded:
                continue
            result = ctx.command([ctx.tool("modprobe"), name, *parameters])
            if result.returncode != 0:
                raise StepError(
                    f"modprobe {name} failed: {_tail(result.stdout)}", pointer=("modules", index)
                )
            changed.append(f"loaded {name}")
        return outcome("modules", changed, notes)

    return apply


# ---------------------------------------------------------------- environment


def parse_env(content: str) -> dict[str, str]:
    """KEY=VALUE lines as a dotenv reader reads them (quotes, ``export``, comments)."""
    values: dict[str, str] = {}
    for raw in content.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(
                r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value[1:-1]
            )
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def format_env(values: Mapping[str, str]) -> str:
    """Sorted ``KEY="VALUE"`` lines (integers bare), as yip's dotenv writer does."""
    lines: list[str] = []
    for key in sorted(values):
        value = values[key]
        if re.fullmatch(r"-?\d+", value):
            lines.append(f"{key}={value}")
            continue
        escaped = "".join("\\" + c if c in '\\"!$`' else c for c in value)
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
        lines.append(f'{key}="{escaped}"')
    return "".join(line + "\n" for line in lines)


def prepare_environment(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    notes: list[str] = []
    settings = {
        key: render_system(ctx, setting, notes, key) for key, setting in text_map(value).items()
    }
    for key in settings:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
            raise StepError(
                f"{key!r} is not an environment variable name", pointer=("environment", key)
            )
    path = text(step.get("environment_file")) or ENVIRONMENT_FILE
    target = ctx.path(path, pointer=("environment_file",))

    def apply() -> KindOutcome:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        existing = parse_env(current)
        merged = {**existing, **settings}
        if merged == existing and target.is_file():
            return outcome("environment", [], notes)
        ctx.update_file(target, format_env(merged).encode())
        return outcome("environment", [f"wrote {path}"], notes)

    return apply


# ---------------------------------------------------------------- timesyncd


def prepare_timesyncd(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    settings = text_map(value)
    for key, setting in settings.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key) or "\n" in setting:
            raise StepError(
                f"{key!r} is not a timesyncd setting",
                pointer=("timesyncd", key),
                hint="use the names of timesyncd.conf(5): NTP, FallbackNTP, ...",
            )
    target = ctx.path(TIMESYNCD_FILE)

    def apply() -> KindOutcome:
        current = ctx.read_text(TIMESYNCD_FILE)
        sections: dict[str, dict[str, str]] = {}
        section = ""
        for line in (current or "").splitlines():
            stripped = line.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                section = stripped[1:-1]
                sections.setdefault(section, {})
            elif "=" in stripped and not stripped.startswith(("#", ";")):
                key, _, setting = stripped.partition("=")
                sections.setdefault(section, {})[key.strip()] = setting.strip()
        sections.setdefault("Time", {}).update(settings)
        body = "".join(
            (f"[{name}]\n" if name else "")
            + "".join(f"{key}={setting}\n" for key, setting in values.items())
            for name, values in sections.items()
        )
        changed = [f"wrote {TIMESYNCD_FILE}"] if ctx.update_file(target, body.encode()) else []
        return outcome("timesyncd", changed)

    return apply


# ---------------------------------------------------------------- systemd-firstboot

# What systemd-firstboot may write: a change to any of these is a change.
_FIRSTBOOT_FILES = (
    "/etc/locale.conf",
    "/etc/default/locale",
    "/etc/vconsole.conf",
    "/etc/default/keyboard",
    "/etc/localtime",
    "/etc/hostname",
    "/etc/machine-id",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/kernel/cmdline",
)


def _snapshot(ctx: RunContext) -> dict[str, Any]:
    import os

    state: dict[str, Any] = {}
    for name in _FIRSTBOOT_FILES:
        path = ctx.root / name.lstrip("/")
        try:
            state[name] = os.readlink(path) if path.is_symlink() else path.read_bytes()
        except OSError:
            state[name] = None
    return state


def prepare_systemd_firstboot(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    arguments: list[str] = []
    for key, setting in text_map(value).items():
        option = key.lower()
        if not _FIRSTBOOT_KEY.match(option):
            raise StepError(
                f"{key!r} is not a systemd-firstboot option", pointer=("systemd_firstboot", key)
            )
        arguments.append(f"--{option}" if setting == "true" else f"--{option}={setting}")
    arguments.sort()
    tool = ctx.tool("systemd-firstboot", pointer=("systemd_firstboot",))

    def apply() -> KindOutcome:
        before = _snapshot(ctx)
        result = ctx.command([tool, *arguments], proc=True)
        if result.returncode != 0:
            raise StepError(
                f"systemd-firstboot {' '.join(arguments)} failed: {_tail(result.stdout)}",
                pointer=("systemd_firstboot",),
            )
        after = _snapshot(ctx)
        changed = [name for name in _FIRSTBOOT_FILES if before[name] != after[name]]
        return outcome("systemd_firstboot", [f"changed {', '.join(changed)}"] if changed else [])

    return apply
