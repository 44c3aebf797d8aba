"""The one description of yip's cloud-config model: stages, step filters, step kinds and
their fields, and what this device's runner supports.

``cosgitops validate`` (``cosgitops.validate.cloudconfig``) and the stage runner
(``cosgitops.stages``) both read this module, so what validates is what runs: a kind the
runner skips is a ``yip-unsupported`` warning in ``validate``, and a test keeps the
JSON Schema (``schemas/cloud-config.schema.json``, which drives ``yip-unknown-key``)
field-for-field equal to it.

Kinds are listed in the order yip applies them inside one step (yip's executor runs
its plugins in a fixed order: dns, downloads, git, entities, directories, files,
commands, ...); filters in the order yip evaluates them. Kept free of imports beyond
the standard library: ``validate`` loads it on every pre-commit run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

# A field tree: field name -> its own sub-fields (a nested mapping), or None for a leaf
# (a scalar, a list of scalars or a free mapping of scalars).
Fields = Mapping[str, "Fields | None"]

# list: a list of entries with ``fields``; map: names -> entries with ``fields``;
# object: one mapping with ``fields``; text / textlist / textmap: scalars.
Shape = Literal["list", "map", "object", "text", "textlist", "textmap"]

# Why a kind or field does not run on this device.
NEEDS_NETWORK = "needs the network at boot"
CHANGES_PACKAGES = "changes packages, which an immutable image does not do at boot"
REPARTITIONS = "creates or reformats partitions"
FETCHES_USERDATA = "fetches user data from a cloud provider or a CD-ROM at boot"
HINTS = {
    NEEDS_NETWORK: "put what it fetches into the image (the derivative's overlay or a files "
    "step), or fetch it in a commands step",
    CHANGES_PACKAGES: "install packages when the image is built (spec.packages in derivative.yaml)",
    REPARTITIONS: "partition the disk when it is made (cosgitops grows only the last "
    "partition, with layout.expand_partition)",
    FETCHES_USERDATA: "ship the configuration in oem/ or on the COS_OEM partition",
}
KEY_HINT = "write the public key itself (ssh-ed25519 AAAA... user@host)"


_NONE: Mapping[Any, Any] = MappingProxyType({})


class StepKind(NamedTuple):
    key: str
    shape: Shape
    summary: str
    fields: Fields = _NONE
    # None: the runner applies it; otherwise why it is skipped on this device
    unsupported: str | None = None
    # fields of the kind that are skipped, with why (the rest of the kind runs)
    unsupported_fields: Mapping[tuple[str, ...], str] = _NONE
    # other step-level keys this kind reads (environment_file for environment)
    options: tuple[str, ...] = ()


BASE_STAGES = (
    "rootfs",
    "initramfs",
    "boot",
    "fs",
    "network",
    "reconcile",
    "after-install",
    "after-install-chroot",
    "after-upgrade",
    "after-upgrade-chroot",
    "after-reset",
    "after-reset-chroot",
    "before-install",
    "before-upgrade",
    "before-reset",
    "after-disk",
)
KNOWN_STAGES = frozenset(
    name + suffix for name in BASE_STAGES for suffix in ("", ".before", ".after")
)
# The stages the bootable base's systemd units run, in boot order.
BOOT_STAGES = ("rootfs", "initramfs", "fs", "boot", "network", "reconcile")

# Step-level keys that say which step it is, or when it runs.
META_KEYS = ("name", "after")
AFTER_FIELDS: Fields = {"name": None}
# Filters, in the order yip evaluates them; a step runs only when all pass.
FILTERS = ("node", "if", "only_os", "only_os_version", "only_arch", "only_service_manager",
           "if_files")  # fmt: skip
IF_FILES_FIELDS: Fields = {"any": None, "all": None, "none": None}

_OWNED = {"path": None, "permissions": None, "owner": None, "group": None}
FILE_FIELDS: Fields = {**_OWNED, "content": None, "encoding": None, "ownerstring": None}
DIRECTORY_FIELDS: Fields = dict(_OWNED)
DOWNLOAD_FIELDS: Fields = {**_OWNED, "url": None, "timeout": None, "ownerstring": None}
USER_FIELDS: Fields = dict.fromkeys(
    ("name", "passwd", "ssh_authorized_keys", "gecos", "homedir", "no_create_home",
     "primary_group", "groups", "no_user_group", "system", "no_log_init", "shell",
     "lock_passwd", "uid")
)  # fmt: skip
ENTITY_FIELDS: Fields = {"path": None, "entity": None}

KINDS: tuple[StepKind, ...] = (
    StepKind("dns", "object", "writes resolv.conf",
             {"nameservers": None, "search": None, "options": None, "path": None}),
    StepKind("downloads", "list", "downloads files", DOWNLOAD_FIELDS, NEEDS_NETWORK),
    StepKind("git", "object", "clones a Git repository",
             {"url": None, "path": None, "branch": None, "branch_only": None,
              "auth": {"username": None, "password": None, "private_key": None,
                       "insecure": None, "public_key": None}},
             NEEDS_NETWORK),
    StepKind("ensure_entities", "list", "adds or updates passwd/group/shadow/gshadow entries",
             ENTITY_FIELDS),
    StepKind("directories", "list", "creates folders", DIRECTORY_FIELDS),
    StepKind("files", "list", "writes files", FILE_FIELDS),
    StepKind("commands", "textlist", "runs shell commands"),
    StepKind("delete_entities", "list", "removes passwd/group/shadow/gshadow entries",
             ENTITY_FIELDS),
    StepKind("hostname", "text", "sets the host name"),
    StepKind("sysctl", "textmap", "sets kernel parameters"),
    StepKind("users", "map", "creates users with useradd (and usermod, chpasswd)",
             USER_FIELDS),
    StepKind("authorized_keys", "textmap", "adds SSH public keys for users"),
    StepKind("modules", "textlist", "loads kernel modules"),
    StepKind("timesyncd", "textmap", "configures systemd-timesyncd"),
    StepKind("systemctl", "object", "enables, disables, masks and starts systemd units",
             {"enable": None, "disable": None, "start": None, "mask": None,
              "overrides": {"service": None, "content": None, "name": None}}),
    StepKind("environment", "textmap", "writes environment variables",
             options=("environment_file",)),
    StepKind("systemd_firstboot", "textmap", "runs systemd-firstboot"),
    StepKind("datasource", "object", "fetches user data from a cloud provider",
             {"providers": None, "path": None, "userdata_name": None}, FETCHES_USERDATA),
    StepKind("layout", "object", "grows the last partition (expand_partition)",
             {"device": {"init_disk": None, "disk_name": None, "label": None, "path": None},
              "expand_partition": {"size": None},
              "add_partitions": {"fsLabel": None, "size": None, "pLabel": None,
                                 "filesystem": None, "bootable": None}},
             unsupported_fields={("add_partitions",): REPARTITIONS,
                                 ("device", "init_disk"): REPARTITIONS}),
    StepKind("package_pins", "textmap", "pins package versions", unsupported=CHANGES_PACKAGES),
    StepKind("packages", "object", "installs or removes packages",
             {"install": None, "remove": None, "refresh": None, "upgrade": None},
             CHANGES_PACKAGES),
    StepKind("unpack_images", "list", "unpacks container images onto the file system",
             {"source": None, "target": None, "platform": None}, NEEDS_NETWORK),
)  # fmt: skip
KIND_BY_KEY: dict[str, StepKind] = {kind.key: kind for kind in KINDS}
OPTION_KEYS = tuple(option for kind in KINDS for option in kind.options)
# Every key a step may hold.
STEP_KEYS = frozenset((*META_KEYS, *FILTERS, *KIND_BY_KEY, *OPTION_KEYS))

# Classic cloud-init keys (files starting with #cloud-config), which yip translates into
# steps of these stages.
CLOUD_INIT_KEYS = frozenset(
    ("users", "write_files", "milpa_files", "runcmd", "hostname", "ssh_authorized_keys", "growpart")
)
CLOUD_INIT_STAGES = {"users": "boot", "write_files": "boot", "milpa_files": "boot",
                     "runcmd": "boot", "ssh_authorized_keys": "boot", "growpart": "boot",
                     "hostname": "initramfs"}  # fmt: skip

# Key sources whose keys the runner cannot fetch offline (yip downloads them).
REMOTE_KEY_PREFIXES = ("github:", "gitlab:", "http://", "https://")


def is_set(value: Any) -> bool:
    """yip treats an empty value like a missing one."""
    return value not in (None, "", [], {}, False)


class Unsupported(NamedTuple):
    """Something in a step the runner skips on this device, and why."""

    path: tuple[str | int, ...]  # inside the step
    what: str
    reason: str
    hint: str


def unsupported_uses(step: Mapping[str, Any]) -> Iterator[Unsupported]:
    """What the runner would skip in ``step``, in the order it would meet it."""
    for kind in KINDS:
        value = step.get(kind.key)
        if not is_set(value):
            continue
        if kind.unsupported is not None:
            yield Unsupported((kind.key,), kind.key, kind.unsupported, HINTS[kind.unsupported])
            continue
        for field_path, reason in kind.unsupported_fields.items():
            current: Any = value
            for part in field_path:
                current = current.get(part) if isinstance(current, Mapping) else None
            if is_set(current):
                yield Unsupported((kind.key, *field_path), ".".join((kind.key, *field_path)),
                                  reason, HINTS[reason])  # fmt: skip
        if kind.key in ("users", "authorized_keys") and isinstance(value, Mapping):
            for name, entry in value.items():
                keys = entry
                if kind.key == "users":
                    keys = entry.get("ssh_authorized_keys") if isinstance(entry, Mapping) else None
                if not isinstance(keys, list):
                    continue
                where: tuple[str | int, ...] = (kind.key, name)
                if kind.key == "users":
                    where = (*where, "ssh_authorized_keys")
                for index, key in enumerate(keys):
                    if is_remote_key(key):
                        yield Unsupported((*where, index), f"SSH key {key}", NEEDS_NETWORK,
                                          KEY_HINT)  # fmt: skip


def is_remote_key(key: Any) -> bool:
    """A key yip downloads (github:USER, gitlab:USER or a URL) rather than a key itself."""
    return isinstance(key, str) and key.strip().startswith(REMOTE_KEY_PREFIXES)
