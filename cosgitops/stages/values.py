"""Reading step values the way yip does (its Go structs take a scalar's text for string
fields), and the helpers several kinds share: templates, owners, modes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cosgitops.stages import template
from cosgitops.stages.context import Pointer, RunContext, StepError
from cosgitops.stages.report import KindOutcome, Status

# What a prepared kind does when applied.
Apply = Callable[[], KindOutcome]


def text(value: Any) -> str:
    """A scalar as yip's string fields read it (``None`` is empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return [] if value is None else [text(value)]
    return [text(item) for item in value if item is not None]


def text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {text(key): text(item) for key, item in value.items()}


def entries(value: Any) -> list[tuple[int, Mapping[str, Any]]]:
    """The entries of a list kind (files, directories, ...) with their index."""
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, Mapping)]


def integer(value: Any, *, what: str, pointer: Pointer, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StepError(f"{what} {value!r} is not a non-negative integer", pointer=pointer)
    return value


def render_system(ctx: RunContext, source: str, notes: list[str], what: str) -> str:
    """Expand ``{{ .Values... }}`` as yip does for commands, contents and environment
    values; text that cannot be expanded stays as written (yip does the same), with a
    note in the outcome."""
    if not template.has_template(source):
        return source
    try:
        return template.render(source, {"Values": ctx.system_values()})
    except template.TemplateError as error:
        notes.append(f"{what}: template kept as written ({error})")
        return source


def outcome(kind: str, changed: list[str], notes: list[str] | None = None) -> KindOutcome:
    status: Status = "applied" if changed else "unchanged"
    parts = list(changed)
    if notes:
        parts.extend(notes)
    return KindOutcome(kind, status, "; ".join(parts))


def resolve_owner(
    ctx: RunContext,
    entry: Mapping[str, Any],
    pointer: Pointer,
    *,
    check_only: bool = False,
) -> tuple[int, int]:
    """(uid, gid) of a files/directories entry: ``ownerstring`` (user or user:group,
    looked up in the root's /etc/passwd and /etc/group) wins over ``owner``/``group``."""
    ownerstring = text(entry.get("ownerstring")).strip()
    if not ownerstring:
        uid = integer(entry.get("owner"), what="owner", pointer=(*pointer, "owner"))
        gid = integer(entry.get("group"), what="group", pointer=(*pointer, "group"))
        return uid, gid
    user, sep, group = ownerstring.partition(":")
    accounts = ctx.accounts()
    where = (*pointer, "ownerstring")
    account = accounts.get(user)
    if account is None and not (check_only and user in ctx.pending_users):
        raise StepError(
            f"unknown user {user!r} in ownerstring {ownerstring!r}",
            hint=f"create {user} in an earlier step (users:), or use a user that exists "
            "in the image's /etc/passwd",
            pointer=where,
        )
    uid, gid = (account.uid, account.gid) if account else (0, 0)
    if sep:
        groups = ctx.groups()
        found = groups.get(group)
        if found is None and not (check_only and group in ctx.pending_groups):
            raise StepError(
                f"unknown group {group!r} in ownerstring {ownerstring!r}",
                hint=f"create the group {group} first, or use one in the image's /etc/group",
                pointer=where,
            )
        gid = found.gid if found else 0
    return uid, gid
