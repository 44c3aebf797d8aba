"""``users``, ``authorized_keys``, ``ensure_entities`` and ``delete_entities``.

Users are made by the system's own tools (``useradd``, ``usermod``, ``groupadd``,
``chpasswd``; inside ``chroot R`` with ``--root``), so /etc/passwd, /etc/shadow,
/etc/group and /etc/gshadow get exactly the entries the distribution writes. As yip
does, users are handled in name order, a new user without a ``uid`` takes the owner of
an existing home folder (on an immutable system /etc is rebuilt every boot while /home
persists), and an existing user only gets its password, groups, shell and GECOS
brought in line.

Entities are yip's own format (``kind: user|group|shadow|gshadow``) and are written
into the files directly, as yip does.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cosgitops.errors import SourceError
from cosgitops.stages import crypt
from cosgitops.stages.context import Account, Pointer, RunContext, StepError, file_state
from cosgitops.stages.model import NEEDS_NETWORK, is_remote_key
from cosgitops.stages.report import KindOutcome
from cosgitops.stages.values import Apply, entries, outcome, render_system, text, text_list

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
ID_RANGE = (1000, 60000)  # where new ids are taken from (systemd's "human" range)


def _output(result: Any) -> str:
    return str(result.stdout.decode("utf-8", "replace").strip()[-600:])


def _check_name(name: str, what: str, pointer: Pointer) -> None:
    if not _NAME.match(name):
        raise StepError(
            f"{name!r} is not a valid {what} name",
            pointer=pointer,
            hint="use lower-case letters, digits, '_', '-' and '.'",
        )


def _known_group(ctx: RunContext, name: str, pointer: Pointer) -> None:
    if name not in ctx.groups() and name not in ctx.pending_groups:
        raise StepError(
            f"unknown group {name!r}",
            hint=f"create it first (ensure_entities with kind: group, or groupadd in an "
            f"earlier step), or remove {name} from the list",
            pointer=pointer,
        )


def _run(ctx: RunContext, argv: list[str], pointer: Pointer, *, stdin: bytes | None = None) -> None:
    result = ctx.command(argv, stdin=stdin)
    if result.returncode != 0:
        shown = " ".join(argv[:1] + [a for a in argv[1:] if not a.startswith("$")])
        raise StepError(
            f"{shown} failed (exit {result.returncode}): {_output(result)}", pointer=pointer
        )


def _set_password(ctx: RunContext, name: str, password: str, pointer: Pointer) -> None:
    """chpasswd -e with a hash or lock marker, plain chpasswd (which hashes) otherwise."""
    hashed = crypt.is_hashed(password)
    argv = ["chpasswd", "-e"] if hashed else ["chpasswd"]
    _run(ctx, argv, pointer, stdin=f"{name}:{password}\n".encode())


def _password_is(current: str, wanted: str) -> bool:
    if crypt.is_hashed(wanted):
        return current == wanted
    return crypt.matches(wanted, current)


class _User(NamedTuple):
    name: str
    entry: Mapping[str, Any]
    pointer: Pointer
    keys: list[str]


def prepare_users(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    plans: list[_User] = []
    users = value if isinstance(value, Mapping) else {}
    for key in sorted(users, key=text):
        entry = users[key] if isinstance(users[key], Mapping) else {}
        name = text(key)
        pointer: Pointer = ("users", key)
        _check_name(name, "user", pointer)
        primary = text(entry.get("primary_group")).strip()
        if primary:
            _known_group(ctx, primary, (*pointer, "primary_group"))
        for index, group in enumerate(text_list(entry.get("groups"))):
            _known_group(ctx, group, (*pointer, "groups", index))
        uid = text(entry.get("uid")).strip()
        if uid and not uid.isdigit():
            raise StepError(f"uid {uid!r} is not a number", pointer=(*pointer, "uid"))
        for field in ("homedir", "shell"):
            if entry.get(field) is not None and not text(entry.get(field)).startswith("/"):
                raise StepError(
                    f"{field} {text(entry.get(field))!r} is not an absolute path",
                    pointer=(*pointer, field),
                )
        ctx.pending_users.add(name)
        if not entry.get("no_user_group"):
            ctx.pending_groups.add(name)
        plans.append(_User(name, entry, pointer, text_list(entry.get("ssh_authorized_keys"))))
    if plans:
        for tool in ("useradd", "usermod", "chpasswd"):
            ctx.tool(tool, pointer=("users",))

    def apply() -> KindOutcome:
        changed: list[str] = []
        notes: list[str] = []
        for plan in plans:
            changed.extend(_apply_user(ctx, plan, notes))
            if plan.keys:
                changed.extend(
                    authorize(
                        ctx, plan.name, plan.keys, (*plan.pointer, "ssh_authorized_keys"), notes
                    )
                )
        return outcome("users", changed, notes)

    return apply


def _default_home(ctx: RunContext, name: str) -> str:
    base = "/home"
    for line in (ctx.read_text("/etc/default/useradd") or "").splitlines():
        key, _, setting = line.strip().partition("=")
        if key == "HOME" and setting.strip().strip("\"'"):
            base = setting.strip().strip("\"'")
    return f"{base.rstrip('/')}/{name}"


def _apply_user(ctx: RunContext, plan: _User, notes: list[str]) -> list[str]:
    entry, name, pointer = plan.entry, plan.name, plan.pointer
    password = "!" if entry.get("lock_passwd") else text(entry.get("passwd"))
    groups = text_list(entry.get("groups"))
    primary = text(entry.get("primary_group")).strip()
    shell = text(entry.get("shell")).strip()
    gecos = text(entry.get("gecos"))
    existing = ctx.accounts().get(name)
    if existing is None:
        return _create_user(
            ctx, plan, password=password, groups=groups, primary=primary, shell=shell, gecos=gecos
        )
    changed: list[str] = []
    if password:
        current = ctx.shadow().get(name, ["", ""])[1]
        if not _password_is(current, password):
            _set_password(ctx, name, password, (*pointer, "passwd"))
            changed.append(f"set the password of {name}")
    all_groups = ctx.groups()
    for index, group in enumerate([*groups, *([primary] if primary else [])]):
        if group not in all_groups:  # it was to be made earlier in the step, and was not
            where = (
                (*pointer, "groups", index) if index < len(groups) else (*pointer, "primary_group")
            )
            raise StepError(f"unknown group {group!r}", pointer=where)
    missing = [
        g for g in groups if name not in all_groups[g].members and all_groups[g].gid != existing.gid
    ]
    if missing:
        _run(ctx, ["usermod", "-a", "-G", ",".join(missing), name], (*pointer, "groups"))
        changed.append(f"added {name} to {', '.join(missing)}")
    options: list[str] = []
    if shell and shell != existing.shell:
        options += ["-s", shell]
    if entry.get("gecos") is not None and gecos != existing.gecos:
        options += ["-c", gecos]
    if primary and all_groups[primary].gid != existing.gid:
        options += ["-g", primary]
    if options:
        _run(ctx, ["usermod", *options, name], pointer)
        changed.append(f"updated {name} ({' '.join(o for o in options if o.startswith('-'))})")
    uid = text(entry.get("uid")).strip()
    home = text(entry.get("homedir")).strip()
    if (uid and int(uid) != existing.uid) or (home and home != existing.home):
        notes.append(f"{name} exists: its uid and home are left as they are (as yip)")
    return changed


def _create_user(
    ctx: RunContext,
    plan: _User,
    *,
    password: str,
    groups: list[str],
    primary: str,
    shell: str,
    gecos: str,
) -> list[str]:
    entry, name, pointer = plan.entry, plan.name, plan.pointer
    home = text(entry.get("homedir")).strip() or _default_home(ctx, name)
    argv = ["useradd", "-M" if entry.get("no_create_home") else "-m", "-d", home]
    uid = text(entry.get("uid")).strip()
    home_owner: os.stat_result | None = None
    try:
        found = ctx.path(home)
        if found.is_dir():
            home_owner = os.stat(found)
    except StepError:
        home_owner = None
    accounts = ctx.accounts()
    used_uids = {account.uid for account in accounts.values()}
    if uid:
        argv += ["-o", "-u", uid]
    elif home_owner is not None and home_owner.st_uid not in used_uids and home_owner.st_uid:
        argv += ["-u", str(home_owner.st_uid)]  # the same uid as on the last boot
    all_groups = ctx.groups()
    if primary:
        argv += ["-g", primary]
    elif entry.get("no_user_group"):
        argv += ["-N"]
    elif name in all_groups:
        argv += ["-g", name]
    else:
        used_gids = {group.gid for group in all_groups.values()}
        if home_owner is not None and home_owner.st_gid and home_owner.st_gid not in used_gids:
            _run(ctx, ["groupadd", "-g", str(home_owner.st_gid), name], pointer)
            argv += ["-g", name]
        else:
            argv += ["-U"]
    if groups:
        argv += ["-G", ",".join(groups)]
    if shell:
        argv += ["-s", shell]
    if entry.get("gecos") is not None:
        argv += ["-c", gecos]
    if entry.get("system"):
        argv += ["-r"]
    if entry.get("no_log_init"):
        argv += ["-l"]
    _run(ctx, [*argv, name], pointer)
    if password:
        _set_password(ctx, name, password, (*pointer, "passwd"))
    account = ctx.accounts().get(name)
    return [f"created user {name}" + (f" (uid {account.uid})" if account else "")]


# ---------------------------------------------------------------- SSH keys


def authorize(
    ctx: RunContext, user: str, keys: list[str], pointer: Pointer, notes: list[str]
) -> list[str]:
    """Add the keys ``user`` does not have yet to ~/.ssh/authorized_keys."""
    local = []
    for key in keys:
        if is_remote_key(key):
            notes.append(f"SSH key {key.strip()} for {user} skipped: it {NEEDS_NETWORK}")
        elif key.strip():
            local.append(key.strip())
    if not local:
        return []
    account: Account | None = ctx.accounts().get(user)
    if account is None:
        raise StepError(
            f"unknown user {user!r}",
            pointer=pointer,
            hint=f"create {user} first (users:), or name a user that exists",
        )
    home = ctx.path(account.home, pointer=pointer)
    if not home.is_dir():
        raise StepError(
            f"the home folder of {user} ({account.home}) does not exist", pointer=pointer
        )
    changed: list[str] = []
    ssh = home / ".ssh"
    if ssh.is_symlink() or (ssh.exists() and not ssh.is_dir()):
        raise StepError(f"{account.home}/.ssh is not a folder", pointer=pointer)
    if not ssh.exists():
        os.mkdir(ssh, 0o700)
        os.chmod(ssh, 0o700)
        changed.append(f"created {account.home}/.ssh")
    info = os.stat(ssh)
    if (info.st_uid, info.st_gid) != (account.uid, account.gid):
        os.chown(ssh, account.uid, account.gid)
    target = ssh / "authorized_keys"
    state = file_state(target)
    if target.is_symlink() or (target.exists() and state is None):
        raise StepError(
            f"{account.home}/.ssh/authorized_keys is not a regular file", pointer=pointer
        )
    current = state[3].decode("utf-8", "replace") if state else ""
    missing = [key for key in local if key not in current]
    if not missing:
        return changed
    if current and not current.endswith("\n"):
        current += "\n"
    content = current + "".join(key + "\n" for key in missing)
    mode = state[0] if state else 0o600
    ctx.write_file(target, content.encode(), mode=mode, uid=account.uid, gid=account.gid)
    changed.append(f"added {len(missing)} SSH key{'s' if len(missing) > 1 else ''} for {user}")
    return changed


def prepare_authorized_keys(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    wanted: list[tuple[str, list[str]]] = []
    for key, keys in value.items() if isinstance(value, Mapping) else []:
        user = text(key)
        pointer: Pointer = ("authorized_keys", key)
        if user not in ctx.accounts() and user not in ctx.pending_users:
            local = [k for k in text_list(keys) if not is_remote_key(k)]
            if local:
                raise StepError(
                    f"unknown user {user!r}",
                    pointer=pointer,
                    hint=f"create {user} first (users:), or name a user that exists in the image",
                )
        wanted.append((user, text_list(keys)))

    def apply() -> KindOutcome:
        changed: list[str] = []
        notes: list[str] = []
        for user, keys in wanted:
            changed.extend(authorize(ctx, user, keys, ("authorized_keys", user), notes))
        result = outcome("authorized_keys", changed, notes)
        if not changed and notes and all("skipped" in note for note in notes):
            result.status = "skipped"
        return result

    return apply


# ---------------------------------------------------------------- entities

_DEFAULT_FILES = {
    "user": "/etc/passwd",
    "group": "/etc/group",
    "shadow": "/etc/shadow",
    "gshadow": "/etc/gshadow",
}
_IDENTIFIER = {"user": "username", "group": "group_name", "shadow": "username", "gshadow": "name"}


class _Entity(NamedTuple):
    kind: str
    name: str
    fields: Mapping[str, Any]
    target: Path
    shown: str
    pointer: Pointer


def _parse_entity(
    ctx: RunContext, entry: Mapping[str, Any], pointer: Pointer, notes: list[str]
) -> _Entity:
    from cosgitops.source import load_yaml_bytes

    source = render_system(ctx, text(entry.get("entity")), notes, "entity")
    where = (*pointer, "entity")
    try:
        document = load_yaml_bytes(source.encode(), name="entity", limits=ctx.limits)
    except SourceError as error:
        raise StepError(f"the entity is not valid YAML: {error}", pointer=where) from error
    fields = document.value
    if not isinstance(fields, Mapping):
        raise StepError("the entity is not a mapping with a kind", pointer=where)
    kind = text(fields.get("kind"))
    if kind not in _DEFAULT_FILES:
        raise StepError(
            f"entity kind {kind!r} is not one of user, group, shadow, gshadow", pointer=where
        )
    name = text(fields.get(_IDENTIFIER[kind])).strip()
    if not name or ":" in name or "\n" in name:
        raise StepError(f"the {kind} entity has no valid {_IDENTIFIER[kind]}", pointer=where)
    for key, value in fields.items():
        if ":" in text(value) or "\n" in text(value):
            raise StepError(
                f"{key} of the {kind} entity {name} holds ':' or a newline", pointer=where
            )
    shown = text(entry.get("path")) or _DEFAULT_FILES[kind]
    target = ctx.path(shown, pointer=(*pointer, "path"))
    return _Entity(kind, name, fields, target, shown, pointer)


def _free_id(used: set[int]) -> int:
    for candidate in range(*ID_RANGE):
        if candidate not in used:
            return candidate
    raise StepError("no free id left between 1000 and 60000")


def _lines(target: Path) -> list[str]:
    try:
        return target.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _entity_line(
    ctx: RunContext, entity: _Entity, current: list[str] | None, all_lines: list[str]
) -> str:
    f = entity.fields

    def field(key: str, index: int, default: str = "") -> str:
        if f.get(key) is not None:
            return text(f.get(key))
        return current[index] if current and len(current) > index else default

    if entity.kind == "user":
        uid = f.get("uid")
        if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
            used = {
                int(line.split(":")[2])
                for line in all_lines
                if len(line.split(":")) > 2 and line.split(":")[2].isdigit()
            }
            uid = int(current[2]) if current and current[2].isdigit() else _free_id(used)
        gid_text = field("gid", 3, "0")
        if f.get("group"):
            group = ctx.groups().get(text(f.get("group")))
            if group is None:
                raise StepError(
                    f"unknown group {text(f.get('group'))!r} for user {entity.name}",
                    pointer=(*entity.pointer, "entity"),
                )
            gid_text = str(group.gid)
        return ":".join(
            (
                entity.name,
                field("password", 1, "x"),
                str(uid),
                gid_text,
                field("info", 4, "Created by entities"),
                field("homedir", 5),
                field("shell", 6),
            )
        )
    if entity.kind == "group":
        gid = f.get("gid")
        if not isinstance(gid, int) or isinstance(gid, bool) or gid < 0:
            used = {
                int(line.split(":")[2])
                for line in all_lines
                if len(line.split(":")) > 2 and line.split(":")[2].isdigit()
            }
            gid = int(current[2]) if current and current[2].isdigit() else _free_id(used)
        members = [m for m in (current[3].split(",") if current and len(current) > 3 else []) if m]
        for member in text(f.get("users")).split(","):
            if member.strip() and member.strip() not in members:
                members.append(member.strip())
        return ":".join((entity.name, field("password", 1, "x"), str(gid), ",".join(members)))
    if entity.kind == "shadow":
        password = text(f.get("password")) if f.get("password") is not None else None
        existing = current[1] if current and len(current) > 1 else None
        if password is None:
            password = existing or "!"
        elif not crypt.is_hashed(password) and password:
            if existing is not None and crypt.matches(password, existing):
                password = existing
            else:
                password = crypt.sha512_hash(password)
        changed_day = field("last_changed", 2)
        if changed_day == "now":
            keep = current and len(current) > 2 and existing == password
            changed_day = current[2] if keep and current else str(int(time.time() // 86400))
        return ":".join(
            (
                entity.name,
                password,
                changed_day,
                field("minimum_changed", 3),
                field("maximum_changed", 4),
                field("warn", 5),
                field("inactive", 6),
                field("expire", 7),
                field("reserved", 8),
            )
        )
    return ":".join(
        (entity.name, field("password", 1, "!"), field("administrators", 2), field("members", 3))
    )


def _write_lines(ctx: RunContext, target: Path, lines: list[str]) -> None:
    state = file_state(target)
    mode, uid, gid = (state[0], state[1], state[2]) if state else (0o644, 0, 0)
    if state is None and target.name in ("shadow", "gshadow"):
        mode = 0o640
    ctx.write_file(
        target,
        "".join(line + "\n" for line in lines).encode(),
        mode=mode,
        uid=uid,
        gid=gid,
        parents=(0o755, 0, 0),
    )


def _prepare_entities(ctx: RunContext, value: Any, key: str, delete: bool) -> Apply:
    notes: list[str] = []
    plans = [_parse_entity(ctx, entry, (key, index), notes) for index, entry in entries(value)]
    if not delete:
        for plan in plans:
            if plan.kind == "user":
                ctx.pending_users.add(plan.name)
            elif plan.kind == "group":
                ctx.pending_groups.add(plan.name)

    def apply() -> KindOutcome:
        changed: list[str] = []
        for plan in plans:
            try:
                lines = _lines(plan.target)
            except OSError as error:
                raise StepError(
                    f"cannot read {plan.shown}: {error.strerror or error}", pointer=plan.pointer
                ) from error
            position = next(
                (i for i, line in enumerate(lines) if line.split(":", 1)[0] == plan.name), None
            )
            if delete:
                if position is None:
                    continue
                del lines[position]
                _write_lines(ctx, plan.target, lines)
                changed.append(f"removed {plan.kind} {plan.name} from {plan.shown}")
                continue
            current = lines[position].split(":") if position is not None else None
            line = _entity_line(ctx, plan, current, lines)
            if position is not None and lines[position] == line:
                continue
            if position is None:
                lines.append(line)
            else:
                lines[position] = line
            _write_lines(ctx, plan.target, lines)
            changed.append(
                f"{'updated' if current else 'added'} {plan.kind} {plan.name} in {plan.shown}"
            )
        return outcome(key, changed, notes)

    return apply


def prepare_ensure_entities(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    return _prepare_entities(ctx, value, "ensure_entities", delete=False)


def prepare_delete_entities(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    return _prepare_entities(ctx, value, "delete_entities", delete=True)
