"""``files`` and ``directories``."""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import stat
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cosgitops.stages.context import Pointer, RunContext, StepError, file_state
from cosgitops.stages.report import KindOutcome
from cosgitops.stages.values import (
    Apply,
    entries,
    integer,
    outcome,
    render_system,
    resolve_owner,
    text,
)

_BASE64 = ("b64", "base64")
_GZIP = ("gz", "gzip")
_GZIP_BASE64 = ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64")


def parent_mode(mode: int) -> int:
    """The mode of a folder created for a file: searchable wherever the file is
    readable, and always by its owner (0644 -> 0755, 0640 -> 0750, 0600 -> 0700)."""
    return (mode & 0o777) | ((mode & 0o444) >> 2) | 0o700


def _gunzip(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit or decompressor.unconsumed_tail:
        raise ValueError(f"it expands beyond {limit} bytes")
    if not decompressor.eof:
        raise ValueError("the gzip stream is truncated")
    return out


def decode(content: str, encoding: str, limit: int) -> tuple[bytes, str | None]:
    """The bytes a file entry writes, and a note when the encoding is unknown (yip
    then writes the content as it is)."""
    if encoding in _BASE64 or encoding in _GZIP_BASE64:
        cleaned = content.replace("\n", "").replace("\r", "")
        try:
            data = base64.b64decode(cleaned, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"it is not valid base64 ({error})") from error
        if encoding in _GZIP_BASE64:
            data = _gunzip(data, limit)
        return data, None
    if encoding in _GZIP:
        return _gunzip(content.encode("utf-8", "surrogateescape"), limit), None
    data = content.encode("utf-8", "surrogateescape")
    if encoding:
        return data, f"unknown encoding {encoding!r}: written as it is, as yip does"
    return data, None


class _File(NamedTuple):
    shown: str
    target: Path
    data: bytes
    mode: int
    entry: Mapping[str, Any]
    pointer: Pointer


def prepare_files(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    plans: list[_File] = []
    notes: list[str] = []
    for index, entry in entries(value):
        pointer: Pointer = ("files", index)
        shown = text(entry.get("path"))
        target = ctx.path(entry.get("path"), pointer=(*pointer, "path"))
        if target.is_dir():
            raise StepError(f"{shown} is a folder, not a file", pointer=(*pointer, "path"))
        mode = integer(
            entry.get("permissions"), what="permissions", pointer=(*pointer, "permissions")
        )
        if "permissions" not in entry:
            notes.append(f"{shown}: no permissions given, mode 0000 (as yip)")
        resolve_owner(ctx, entry, pointer, check_only=True)
        encoding = text(entry.get("encoding")).strip()
        try:
            data, note = decode(
                text(entry.get("content")), encoding, ctx.limits.stage_file_max_bytes
            )
        except (ValueError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as error:
            raise StepError(
                f"the content of {shown} cannot be decoded as {encoding}: {error}",
                hint="check the encoding and the content (base64 of the gzip of the file "
                "for gz+base64)",
                pointer=(*pointer, "content"),
            ) from error
        if len(data) > ctx.limits.stage_file_max_bytes:
            raise StepError(
                f"the content of {shown} is {len(data)} bytes, over the limit of "
                f"{ctx.limits.stage_file_max_bytes}",
                pointer=(*pointer, "content"),
            )
        if note:
            notes.append(f"{shown}: {note}")
        if b"{{" in data:
            try:
                rendered = render_system(ctx, data.decode("utf-8"), notes, shown)
                data = rendered.encode("utf-8")
            except UnicodeDecodeError:
                pass
        plans.append(_File(shown, target, data, mode, entry, pointer))

    def apply() -> KindOutcome:
        changed: list[str] = []
        for plan in plans:
            uid, gid = resolve_owner(ctx, plan.entry, plan.pointer)
            if file_state(plan.target) == (plan.mode, uid, gid, plan.data):
                continue
            try:
                ctx.write_file(
                    plan.target,
                    plan.data,
                    mode=plan.mode,
                    uid=uid,
                    gid=gid,
                    parents=(parent_mode(plan.mode), uid, gid),
                )
            except OSError as error:
                raise StepError(
                    f"cannot write {plan.shown}: {error.strerror or error}", pointer=plan.pointer
                ) from error
            changed.append(f"wrote {plan.shown}")
        return outcome("files", changed, notes)

    return apply


class _Folder(NamedTuple):
    shown: str
    target: Path
    mode: int
    uid: int
    gid: int
    pointer: Pointer


def prepare_directories(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    plans: list[_Folder] = []
    notes: list[str] = []
    for index, entry in entries(value):
        pointer: Pointer = ("directories", index)
        shown = text(entry.get("path"))
        target = ctx.path(entry.get("path"), pointer=(*pointer, "path"))
        if target.exists() and not target.is_dir():
            raise StepError(f"{shown} exists and is not a folder", pointer=(*pointer, "path"))
        mode = integer(
            entry.get("permissions"), what="permissions", pointer=(*pointer, "permissions")
        )
        if "permissions" not in entry:
            notes.append(f"{shown}: no permissions given, mode 0000 (as yip)")
        uid = integer(entry.get("owner"), what="owner", pointer=(*pointer, "owner"))
        gid = integer(entry.get("group"), what="group", pointer=(*pointer, "group"))
        plans.append(_Folder(shown, target, mode, uid, gid, pointer))

    def apply() -> KindOutcome:
        changed: list[str] = []
        for plan in plans:
            try:
                if plan.target.is_dir():
                    info = os.stat(plan.target)
                    if (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
                        plan.mode,
                        plan.uid,
                        plan.gid,
                    ):
                        continue
                    os.chown(plan.target, plan.uid, plan.gid)
                    os.chmod(plan.target, plan.mode)
                    changed.append(f"set mode and owner of {plan.shown}")
                    continue
                ctx.make_parents(plan.target, plan.mode, plan.uid, plan.gid)
                changed.append(f"created {plan.shown}")
            except OSError as error:
                raise StepError(
                    f"cannot create {plan.shown}: {error.strerror or error}", pointer=plan.pointer
                ) from error
        return outcome("directories", changed, notes)

    return apply
