"""Finding and reading cloud-config files, as yip does.

Files come from ``/system/oem``, ``/oem`` and ``/usr/local/cloud-config`` (inside the
root) and then from each ``--config-dir``, in that order; inside one folder, every
``*.yaml`` and ``*.yml`` file below it in lexical order of its path (sub-folders are
walked where their name sorts, as yip's walk does). A file is checked by ``cosgitops
validate`` first: one with errors is not run at all, as yip refuses a file it cannot
load, and its errors are reported with their lines. Classic cloud-init files
(``#cloud-config``) are translated into steps the way yip translates them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cosgitops.config import Limits
from cosgitops.errors import CosgitopsError
from cosgitops.source import SourceDocument
from cosgitops.stages.context import Pointer, RunContext, StepError
from cosgitops.stages.model import CLOUD_INIT_STAGES, is_remote_key
from cosgitops.stages.report import FileProblem
from cosgitops.stages.values import text, text_list

DEFAULT_SOURCES = ("/system/oem", "/oem", "/usr/local/cloud-config")
SUFFIXES = (".yaml", ".yml")


class Step(NamedTuple):
    stage: str
    position: int  # in its stage's list
    value: Mapping[str, Any]
    base: Pointer | None  # where the step is in its file (None: made from cloud-init keys)
    origin: Mapping[str, Pointer] = {}  # for a translated step: kind -> the cloud-init key


@dataclass
class ConfigFile:
    host: Path
    shown: str
    document: SourceDocument
    stages: dict[str, list[Step]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        value = self.document.value
        name = text(value.get("name")) if isinstance(value, Mapping) else ""
        return name or self.shown

    def locate(self, step: Step, pointer: Pointer = ()) -> tuple[int, int]:
        """Line and column of ``pointer`` (inside ``step``) in this file."""
        if step.base is not None:
            position = self.document.locate((*step.base, *pointer))
        else:
            key = pointer[0] if pointer else None
            origin = step.origin.get(str(key)) if key is not None else None
            if origin is None:
                origin = next(iter(step.origin.values()), ())
            position = self.document.locate(origin, key=True)
        return position.line, position.column


class Source(NamedTuple):
    shown: str  # the folder as the report names it
    files: list[tuple[Path, str]]  # (host path, shown path)


def _walk(folder: Path, shown: str) -> Iterable[tuple[Path, str]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path, f"{shown.rstrip('/')}/{entry.name}")
        elif entry.name.endswith(SUFFIXES):
            yield path, f"{shown.rstrip('/')}/{entry.name}"


def find_sources(
    ctx: RunContext, config_dirs: Sequence[Path], *, default_dirs: bool = True
) -> list[Source]:
    sources: list[Source] = []
    if default_dirs:
        for device_path in DEFAULT_SOURCES:
            try:
                folder = ctx.path(device_path)
            except StepError:
                continue
            files: list[tuple[Path, str]] = []
            for host, shown in _walk(folder, device_path):
                try:  # a linked file is read where the link points inside the root
                    files.append((ctx.path(shown), shown))
                except StepError:
                    files.append((host, shown))
            sources.append(Source(device_path, files))
    for config_dir in config_dirs:
        folder = Path(os.path.abspath(config_dir))
        if folder.is_file():
            sources.append(Source(str(folder), [(folder, str(folder))]))
        else:
            sources.append(Source(str(folder), list(_walk(folder, str(folder)))))
    return sources


def load_file(
    host: Path, shown: str, limits: Limits
) -> tuple[ConfigFile | None, list[FileProblem]]:
    """The file's steps by stage, or the problems that keep it from running."""
    from cosgitops.source import load_yaml
    from cosgitops.validate import validate_paths

    try:
        report = validate_paths([host], as_kind="cloud-config", limits=limits)
    except CosgitopsError as error:
        return None, [FileProblem(shown, 1, 1, error.message, "file-unreadable", error.hint)]
    # A private key is refused in Git (validate), not in a device's own /oem files.
    problems = [
        FileProblem(shown, d.line, d.column, d.message, d.rule, d.hint)
        for d in report.errors
        if d.rule != "private-key"
    ]
    if problems:
        return None, problems
    try:
        document = load_yaml(host, limits=limits)
    except CosgitopsError as error:
        return None, [FileProblem(shown, 1, 1, error.message, "yaml-syntax", error.hint)]
    config = ConfigFile(host, shown, document)
    if document.is_cloud_init:
        for stage, steps in _cloud_init_steps(document).items():
            config.stages.setdefault(stage, []).extend(steps)
    value = document.value if isinstance(document.value, Mapping) else {}
    stages = value.get("stages")
    for stage, steps in stages.items() if isinstance(stages, Mapping) else []:
        for index, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, Mapping):
                config.stages.setdefault(text(stage), []).append(
                    Step(text(stage), index, step, ("stages", stage, index))
                )
    return config, []


def _octal(document: SourceDocument, pointer: Pointer, value: Any) -> int | None:
    if value is None or value == "":
        return None
    written = document.plain_text(pointer) if isinstance(value, int) else None
    source = written if written is not None else text(value)
    try:
        return int(source.strip(), 8)
    except ValueError:
        return None


def _cloud_init_steps(document: SourceDocument) -> dict[str, list[Step]]:
    """The steps yip makes of a #cloud-config file's classic keys."""
    value = document.value if isinstance(document.value, Mapping) else {}
    main: dict[str, Any] = {}
    origin: dict[str, Pointer] = {}
    shared_keys = text_list(value.get("ssh_authorized_keys"))
    users: dict[str, Any] = {}
    keys: dict[str, list[str]] = {}
    for user in value.get("users") or []:
        if not isinstance(user, Mapping) or not text(user.get("name")):
            continue
        name = text(user.get("name"))
        users[name] = {
            k: v
            for k, v in user.items()
            if k not in ("name", "ssh_authorized_keys") and not k.startswith("coreos_")
        }
        keys[name] = text_list(user.get("ssh_authorized_keys")) + shared_keys
    if not users and shared_keys:
        keys["root"] = shared_keys
    local = {u: [k for k in ks if not is_remote_key(k)] for u, ks in keys.items()}
    remote = {u: [k for k in ks if is_remote_key(k)] for u, ks in keys.items()}
    files: list[dict[str, Any]] = []
    for key in ("write_files", "milpa_files"):
        for index, entry in enumerate(value.get(key) or []):
            if not isinstance(entry, Mapping):
                continue
            mode = _octal(document, (key, index, "permissions"), entry.get("permissions"))
            files.append(
                {
                    "path": entry.get("path"),
                    "content": entry.get("content"),
                    "encoding": entry.get("encoding"),
                    "ownerstring": entry.get("owner"),
                    "permissions": mode or 0,
                }
            )
            origin.setdefault("files", (key,))
    if users:
        main["users"] = users
        origin["users"] = ("users",)
    if any(local.values()):
        main["authorized_keys"] = {u: ks for u, ks in local.items() if ks}
        origin["authorized_keys"] = ("ssh_authorized_keys",) if shared_keys else ("users",)
    if files:
        main["files"] = files
    if value.get("runcmd"):
        main["commands"] = text_list(value.get("runcmd"))
        origin["commands"] = ("runcmd",)
    result: dict[str, list[Step]] = {}
    boot = CLOUD_INIT_STAGES["runcmd"]
    if main:
        result.setdefault(boot, []).append(Step(boot, 0, main, None, origin))
    growpart = value.get("growpart")
    devices = text_list(growpart.get("devices")) if isinstance(growpart, Mapping) else []
    for index, device in enumerate(devices):
        layout = {"layout": {"device": {"path": device}, "expand_partition": {"size": 0}}}
        result.setdefault(boot, []).append(
            Step(boot, index + 1, layout, None, {"layout": ("growpart",)})
        )
    if text(value.get("hostname")):
        stage = CLOUD_INIT_STAGES["hostname"]
        result.setdefault(stage, []).append(
            Step(stage, 0, {"hostname": value.get("hostname")}, None, {"hostname": ("hostname",)})
        )
    if any(remote.values()):
        result.setdefault("network", []).append(
            Step(
                "network",
                0,
                {"authorized_keys": {u: ks for u, ks in remote.items() if ks}},
                None,
                {"authorized_keys": ("ssh_authorized_keys",)},
            )
        )
    return result
