"""Validation runs: which files to check in which role, and the report they produce.

A path can be a repository (a folder holding cosgitops.yaml: everything in it), a
derivative folder or any file inside one (the whole derivative: its definition, its
cloud-config files, its paths and secrets), cosgitops.yaml (the whole repository, since
the channels declared there constrain every derivative), or any other file (scanned for
private keys; YAML outside a repository is recognised by its content).

Paths are plain strings inside this module (``os.path`` is several times cheaper than
``pathlib`` on the per-file hot path of a pre-commit run over many files). Many
derivative folders are checked in forked worker processes, one per available core.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import ConfigError, UsageError, ValidationError
from cosgitops.source import Position, SourceDocument, SourceProblem, parse_yaml, read_source
from cosgitops.validate import semantic
from cosgitops.validate.diagnostics import Diagnostic, Finding, Report, Severity
from cosgitops.validate.schema import SchemaIssue, describe, pointer_of, schema_for
from cosgitops.validate.secrets import find_private_keys, scan_file

if TYPE_CHECKING:  # the model is imported where it is built: validate starts faster
    from cosgitops import model

KINDS = ("derivative", "repository", "cloud-config")
YAML_SUFFIXES = (".yaml", ".yml")
REPOSITORY_FILE = "cosgitops.yaml"  # = model.REPOSITORY_FILE (a test keeps them equal)
DERIVATIVES_DIR = "derivatives"
DERIVATIVE_FILE = "derivative.yaml"
# git's own folder is never content.
_SKIP_DIRS = frozenset((".git",))
# The local state cosgitops writes at the top of a repository (development keys live
# there by design); the scaffold's .gitignore excludes it. Outside git it is skipped;
# in git only what git would commit is scanned, so a committed key is still caught.
_LOCAL_STATE = ".cosgitops"
# Below this many derivative folders, forking workers costs more than it saves.
PARALLEL_MIN_FOLDERS = 200


@dataclass(frozen=True)
class RepositoryTree:
    """A loaded, valid repository: what the build and release steps work from."""

    root: Path
    repository: model.Repository
    derivatives: dict[str, model.Derivative]


class _DerivativeResult(NamedTuple):
    """What later, cross-derivative checks need (picklable: it crosses processes)."""

    folder: str
    file: str
    root: str | None
    value: Any
    name_at: Position
    version_at: Position


# ------------------------------------------------------------------ path helpers


def _join(*parts: str) -> str:
    """Join absolute, normalised path strings (cheaper than os.path.join on a hot path)."""
    return os.sep.join((parts[0].rstrip(os.sep), *parts[1:]))


def _inside(path: str, boundary: str) -> bool:
    """Whether ``path``, with every symlink resolved, stays under ``boundary``."""
    real = os.path.realpath(path)
    base = os.path.realpath(boundary)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _parts(path: str, root: str) -> list[str]:
    """The components of ``path`` below ``root`` (both absolute and normalised)."""
    if path == root:
        return []
    prefix = root.rstrip(os.sep) + os.sep
    if path.startswith(prefix):
        return path[len(prefix) :].split(os.sep)
    relative = os.path.relpath(path, root)
    return [] if relative == "." else relative.split(os.sep)


def _find_root(start: str) -> str | None:
    current = start if os.path.isdir(start) else os.path.dirname(start)
    while True:
        if os.path.isfile(_join(current, REPOSITORY_FILE)):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _enclosing_derivative(directory: str) -> str | None:
    current = directory
    while True:
        if os.path.isfile(_join(current, DERIVATIVE_FILE)):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def find_repository_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds cosgitops.yaml."""
    found = _find_root(os.path.abspath(start))
    if found is None:
        raise ConfigError(
            f"no {REPOSITORY_FILE} in {start} or any folder above it",
            hint="run the command inside a cosgitops repository, or create one with "
            "`cosgitops init`",
        )
    return Path(found)


# ------------------------------------------------------------------ the session


class _Session:
    def __init__(self, limits: Limits, cwd: str | None = None) -> None:
        self.limits = limits
        self.cwd = cwd or os.getcwd()
        # load_repository builds the model from whole values; a validation run needs
        # only names and versions (and ships less between processes).
        self.keep_values = False
        self.diagnostics: list[Diagnostic] = []
        self.looked_at: set[str] = set()
        self.scanned: set[str] = set()
        self.documents: set[str] = set()
        self.roots: dict[str, str | None] = {}
        self.repositories: dict[str, Any] = {}  # root -> cosgitops.yaml value (None: broken)
        self.channels: dict[str, frozenset[str] | None] = {}
        self.folders: dict[str, _DerivativeResult | None] = {}
        # overlay folders: an absolute symlink in one names a path inside the image
        # (/etc/localtime -> /usr/share/zoneinfo/UTC), which the builders pack as a link
        # and never follow on the build machine, so it cannot leak a host file
        self.image_roots: set[str] = set()
        self.pending: dict[str, str | None] = {}  # derivative folder -> its repository
        self.full: list[str] = []  # repositories validated as a whole

    # ---------------------------------------------------------------- reporting

    def display(self, path: str) -> str:
        relative = os.path.relpath(path, self.cwd)
        if relative != ".." and not relative.startswith(".." + os.sep):
            path = relative
        return path.replace(os.sep, "/")

    def emit(
        self,
        path: str,
        at: tuple[int, int] | Position,
        severity: Severity,
        rule: str,
        message: str,
        *,
        pointer: str = "",
        hint: str | None = None,
    ) -> None:
        line, column = at
        self.diagnostics.append(
            Diagnostic(self.display(path), line, column, severity, rule, message, pointer, hint)
        )

    def emit_problem(self, path: str, problem: SourceProblem) -> None:
        severity: Severity = "warning" if problem.severity == "warning" else "error"
        at = (problem.line, problem.column)
        self.emit(path, at, severity, problem.rule, problem.message, hint=problem.hint)

    def emit_finding(self, path: str, document: SourceDocument, finding: Finding) -> None:
        position = document.locate(finding.path, key=finding.at_key)
        self.emit(
            path,
            position,
            finding.severity,
            finding.rule,
            finding.message,
            pointer=pointer_of(finding.path),
            hint=finding.hint,
        )

    def emit_schema_issue(
        self, path: str, document: SourceDocument, issue: SchemaIssue, kind: str
    ) -> None:
        rule, message, hint = issue.rule, issue.message, issue.hint
        if issue.keyword == "type" and "string" in issue.expected:
            written = document.plain_text(issue.path)
            if written is not None:
                rule = "yaml-implicit-type"
                message = _implicit_type_message(written, _value_at(document.value, issue.path))
                key = issue.path[-1] if issue.path and isinstance(issue.path[-1], str) else None
                hint = f'quote it: {key}: "{written}"' if key else f'quote it: "{written}"'
                still = _problem_as_string(document.value, issue.path, written, kind)
                if still is not None:  # quoting alone will not do: say what else is wrong
                    hint = f"{hint}; but as a string it {still}"
        elif rule == "version-semver":
            value = _value_at(document.value, issue.path)
            if isinstance(value, str):
                hint = semantic.version_hint(value) or hint
        position = document.locate(issue.path, key=issue.at_key)
        self.emit(path, position, "error", rule, message, pointer=pointer_of(issue.path), hint=hint)

    def escape(self, path: str, boundary: str) -> None:
        target = os.readlink(path) if os.path.islink(path) else os.path.realpath(path)
        where = self.display(boundary)
        self.emit(
            path,
            (1, 1),
            "error",
            "path-escape",
            f"symlink {os.path.basename(path)} points to {target}, outside "
            f"{'this folder' if where == '.' else where}",
            hint="replace the symlink with the real file: cosgitops never follows links out of "
            "the repository",
        )

    # ---------------------------------------------------------------- files

    def root_of(self, directory: str) -> str | None:
        found = self.roots.get(directory, "")
        if found != "":
            return found
        if os.path.isfile(_join(directory, REPOSITORY_FILE)):
            found = directory
        else:
            parent = os.path.dirname(directory)
            found = None if parent == directory else self.root_of(parent)
        self.roots[directory] = found
        return found

    def scan(self, path: str, data: bytes | None = None) -> None:
        """Look for private keys in one file (``data`` when already read)."""
        if path in self.scanned:
            return
        self.scanned.add(path)
        self.looked_at.add(path)
        if data is None:
            findings = scan_file(path, self.limits.scan_max_file_bytes)
        else:
            findings = find_private_keys(data[: self.limits.scan_max_file_bytes])
        for finding in findings:
            if finding.placeholder:
                self.emit(
                    path,
                    (finding.line, finding.column),
                    "warning",
                    "private-key",
                    f"an empty private key block ({finding.label}): a placeholder, not a key",
                    hint="fill the real key in at deployment from a secret store (never in "
                    "the repository), or remove the block",
                )
                continue
            self.emit(
                path,
                (finding.line, finding.column),
                "error",
                "private-key",
                f"a private key ({finding.label}) must never be committed",
                hint="delete it from the repository and its history, rotate the key (it is "
                "exposed), and keep keys in a secret store or env://VAR",
            )

    def scan_tree(self, top: str, boundary: str) -> None:
        """Scan every file under ``top`` (a file or folder) for keys and escaping links."""
        if os.path.islink(top):
            if not _inside(top, boundary):
                self.escape(top, boundary)
                return
            if os.path.isdir(top):
                return  # its target is inside the boundary and scanned there
        if not os.path.isdir(top):
            self.scan(top)
            return
        self.scan_folder(top, boundary, None)

    def is_image_path_link(self, path: str) -> bool:
        """An absolute symlink inside a derivative's overlay (see ``image_roots``)."""
        if not self.image_roots or not os.readlink(path).startswith("/"):
            return False
        return any(path.startswith(root + os.sep) for root in self.image_roots)

    def scan_folder(
        self, top: str, boundary: str, entries: Iterable[os.DirEntry[str]] | None
    ) -> None:
        """Scan a folder (``entries``: its listing, when the caller has it).

        Works from ``os.scandir`` entries, whose type comes with the listing: this runs
        once per derivative folder and dominates a large run's file-system time.
        """
        pending: list[str] = []
        listing = entries
        while True:
            if listing is None:
                try:
                    listing = list(os.scandir(pending.pop() if pending else top))
                except OSError:
                    listing = []
            for entry in listing:
                if entry.is_symlink():
                    if self.is_image_path_link(entry.path):
                        continue
                    if not _inside(entry.path, boundary):
                        self.escape(entry.path, boundary)
                    elif not entry.is_dir():
                        self.scan(entry.path)
                elif entry.is_dir():
                    if entry.name not in _SKIP_DIRS:
                        pending.append(entry.path)
                else:
                    self.scan(entry.path)
            if not pending:
                return
            listing = None

    def load(
        self, path: str, boundary: str | None, is_link: bool | None = None
    ) -> SourceDocument | None:
        """Read, scan and parse one YAML file, reporting every problem on the way.
        ``is_link``: whether the path is a symlink, when the caller already knows."""
        self.looked_at.add(path)
        if is_link is None:
            is_link = os.path.islink(path)
        if boundary is not None and is_link and not _inside(path, boundary):
            self.escape(path, boundary)
            return None
        data, problem = read_source(path, limits=self.limits)
        if data is None:
            assert problem is not None
            self.emit_problem(path, problem)
            return None
        self.scan(path, data)
        result = parse_yaml(data, name=path, limits=self.limits)
        for source_problem in result.problems:
            self.emit_problem(path, source_problem)
        return result.document

    # ---------------------------------------------------------------- documents

    def document(
        self,
        path: str,
        kind: str,
        boundary: str | None,
        *,
        folder_name: str | None = None,
        channels: frozenset[str] | None = None,
        is_link: bool | None = None,
    ) -> SourceDocument | None:
        """Validate one file as ``kind``; its document when it could be parsed."""
        if path in self.documents:
            return None
        self.documents.add(path)
        document = self.load(path, boundary, is_link)
        if document is None:
            return None
        for issue in schema_for(kind).validate(document.value):
            self.emit_schema_issue(path, document, issue, kind)
        findings: Iterable[Finding]
        if kind == "derivative":
            findings = semantic.check_derivative(
                document.value, folder_name=folder_name, channels=channels
            )
        elif kind == "repository":
            findings = semantic.check_repository(document.value)
        else:
            from cosgitops.validate import cloudconfig

            findings = cloudconfig.check_cloud_config(
                schema_for("cloud-config"),
                document.value,
                cloud_init=document.is_cloud_init,
                plain_text=document.plain_text,
            )
        for finding in findings:
            self.emit_finding(path, document, finding)
        return document

    # ---------------------------------------------------------------- repositories

    def repository_channels(self, root: str) -> frozenset[str] | None:
        """Channels that ``root``'s cosgitops.yaml declares, read quietly when that file
        is not itself being validated; None when it cannot be read."""
        if root not in self.channels:
            data, _ = read_source(_join(root, REPOSITORY_FILE), limits=self.limits)
            result = parse_yaml(data, limits=self.limits) if data is not None else None
            if result is None or result.document is None:
                self.channels[root] = None
            else:
                self.channels[root] = frozenset(semantic.declared_channels(result.document.value))
        return self.channels[root]

    def repository(self, root: str) -> None:
        """Queue everything in a repository; cosgitops.yaml is checked right away."""
        if root in self.repositories:
            return
        document = self.document(_join(root, REPOSITORY_FILE), "repository", root)
        self.repositories[root] = document.value if document is not None else None
        self.channels[root] = (
            frozenset(semantic.declared_channels(document.value)) if document else None
        )
        self.full.append(root)
        derivatives = _join(root, DERIVATIVES_DIR)
        if os.path.islink(derivatives) and not _inside(derivatives, root):
            self.escape(derivatives, root)
        elif os.path.isdir(derivatives):
            self.derivatives_folder(derivatives, root)

    def derivatives_folder(self, derivatives: str, root: str) -> None:
        for entry in sorted(os.scandir(derivatives), key=lambda e: e.name):
            if entry.is_dir():
                self.pending.setdefault(entry.path, root)
            else:
                self.scan_tree(entry.path, root)

    def finish_repository(self, root: str) -> None:
        """Checks across a whole repository, once every derivative is done."""
        self.check_unique_names(root)
        from cosgitops import gitrepo

        listed = gitrepo.listed_files(Path(root))
        if listed is None:
            self.scan_folder(
                root,
                root,
                [entry for entry in os.scandir(root) if entry.name != _LOCAL_STATE],
            )
            return
        for listed_path in listed:
            path = str(listed_path)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # deleted in the working tree
            if stat.S_ISLNK(mode):
                if not _inside(path, root):
                    self.escape(path, root)
            elif stat.S_ISREG(mode):
                self.scan(path)

    def check_unique_names(self, root: str) -> None:
        seen: dict[str, str] = {}
        for result in self.folders.values():
            if result is None or result.root != root:
                continue
            name = _value_at(result.value, ("metadata", "name"))
            if not isinstance(name, str):
                continue
            if name in seen:
                self.emit(
                    result.file,
                    result.name_at,
                    "error",
                    "name-unique",
                    f"derivative name {name!r} is also used by {self.display(seen[name])}",
                    pointer="/metadata/name",
                    hint="give each derivative its own name (equal to its folder name)",
                )
            else:
                seen[name] = result.file

    # ---------------------------------------------------------------- derivatives

    def derivative_folder(self, folder: str, root: str | None) -> None:
        """A derivative: its definition, cloud-config files, paths and secrets."""
        if folder in self.folders:
            return
        self.folders[folder] = None
        boundary = root or folder
        if os.path.islink(folder) and not _inside(folder, boundary):
            self.escape(folder, boundary)
            return
        try:
            entries = {entry.name: entry for entry in os.scandir(folder)}
        except OSError:
            entries = {}
        definition = _join(folder, DERIVATIVE_FILE)
        document = None
        found = entries.get(DERIVATIVE_FILE)
        if found is None:
            self.emit(
                definition,
                (1, 1),
                "error",
                "derivative-missing",
                f"folder {self.display(folder)} has no {DERIVATIVE_FILE}",
                hint=f"add {DERIVATIVE_FILE} or remove the folder",
            )
        else:
            in_derivatives = (
                root is not None or os.path.basename(os.path.dirname(folder)) == DERIVATIVES_DIR
            )
            document = self.document(
                definition,
                "derivative",
                boundary,
                folder_name=os.path.basename(folder) if in_derivatives else None,
                channels=self.repository_channels(root) if root is not None else None,
                is_link=found.is_symlink(),
            )
            if document is not None:
                self.folders[folder] = _DerivativeResult(
                    folder,
                    definition,
                    root,
                    document.value if self.keep_values else _essentials(document.value),
                    document.locate(("metadata", "name")),
                    document.locate(("spec", "version")),
                )
        overlay = _relative_setting(document, "overlay", "overlay")
        if overlay is not None:
            self.image_roots.add(_join(folder, *overlay.strip("/").split("/")))
        self.scan_folder(folder, boundary, entries.values())
        cloud_config = _relative_setting(document, "cloudConfig", "oem")
        if cloud_config is None:
            return
        directory = _join(folder, cloud_config)
        listed = entries.get(cloud_config)
        if listed is not None:  # the usual case, a direct subfolder: its type is known
            is_link, is_dir = listed.is_symlink(), listed.is_dir()
        elif "/" not in cloud_config:
            return  # not in the listing: there is no such folder
        else:
            is_link, is_dir = os.path.islink(directory), os.path.isdir(directory)
        if not is_dir or (is_link and not _inside(directory, boundary)):
            return  # an escaping link is reported by the tree scan
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.endswith(YAML_SUFFIXES) and not entry.is_dir():
                self.document(entry.path, "cloud-config", boundary, is_link=entry.is_symlink())

    def run_pending(self) -> None:
        tasks = [
            (folder, root) for folder, root in self.pending.items() if folder not in self.folders
        ]
        self.pending.clear()
        workers = _worker_count(len(tasks))
        if workers < 2:
            for folder, root in tasks:
                self.derivative_folder(folder, root)
            return
        for _, root in tasks:
            if root is not None:
                self.repository_channels(root)  # read once, before the workers split
        for kind in ("derivative", "cloud-config"):
            schema_for(kind)  # compiled once: the workers share the loaded engine
        for outcome in _run_forked(self, [tasks[i::workers] for i in range(workers)]):
            diagnostics, folders, scanned, looked_at, documents = outcome
            self.diagnostics.extend(diagnostics)
            self.folders.update(folders)
            self.scanned |= scanned
            self.looked_at |= looked_at
            self.documents |= documents

    # ---------------------------------------------------------------- entry points

    def path(self, path: str, as_kind: str | None) -> None:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            self.emit(path, (1, 1), "error", "file-unreadable", "no such file or folder")
            return
        if as_kind is not None:
            self.forced(path, as_kind)
            return
        if stat.S_ISLNK(mode) and os.path.isdir(path):
            path = os.path.realpath(path)  # a folder named through a link on the command line
            mode = stat.S_IFDIR
        if stat.S_ISDIR(mode):
            self.folder(path)
            return
        root = self.root_of(os.path.dirname(path))
        if root is not None:
            self.in_repository(path, root)
            return
        derivative = _enclosing_derivative(os.path.dirname(path))
        if derivative is not None:
            self.pending.setdefault(derivative, None)
            return
        self.loose_file(path, report_unknown=True)

    def forced(self, path: str, kind: str) -> None:
        if os.path.isdir(path):
            for directory, folders, files in os.walk(path):
                folders[:] = sorted(name for name in folders if name not in _SKIP_DIRS)
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES):
                        self.document(_join(directory, name), kind, None)
            return
        self.document(path, kind, None)

    def in_repository(self, path: str, root: str) -> None:
        parts = _parts(path, root)
        if parts == [REPOSITORY_FILE]:
            self.repository(root)
        elif len(parts) >= 3 and parts[0] == DERIVATIVES_DIR:
            # the folder's tree scan covers the file itself
            self.pending.setdefault(_join(root, parts[0], parts[1]), root)
        else:
            self.scan_tree(path, root)

    def folder(self, folder: str) -> None:
        if os.path.isfile(_join(folder, REPOSITORY_FILE)):
            self.repository(folder)
            return
        root = self.root_of(folder)
        if root is not None:
            parts = _parts(folder, root)
            if parts[:1] == [DERIVATIVES_DIR]:
                if len(parts) == 1:
                    self.derivatives_folder(folder, root)
                else:
                    self.pending.setdefault(_join(root, parts[0], parts[1]), root)
            else:
                self.scan_tree(folder, root)
            return
        derivative = _enclosing_derivative(folder)
        if derivative is not None:
            self.pending.setdefault(derivative, None)
            return
        for directory, folders, files in os.walk(folder):
            folders[:] = sorted(name for name in folders if name not in _SKIP_DIRS)
            if DERIVATIVE_FILE in files:
                self.pending.setdefault(directory, None)
                folders[:] = []
                continue
            for name in sorted(files):
                self.loose_file(_join(directory, name), report_unknown=False)

    def loose_file(self, path: str, *, report_unknown: bool) -> None:
        """A file outside any repository or derivative: recognised by its content."""
        if not path.endswith(YAML_SUFFIXES) or os.path.islink(path):
            self.scan(path)
            return
        data, _ = read_source(path, limits=self.limits)
        kind = _sniff(data) if data is not None else None
        if kind is not None or data is None:
            self.document(path, kind or "cloud-config", None)
            return
        self.scan(path, data)
        if report_unknown:
            self.emit(
                path,
                (1, 1),
                "warning",
                "unknown-kind",
                "not recognised as a derivative, repository or cloud-config file; not checked",
                hint="pass --as derivative|repository|cloud-config",
            )

    def run(self) -> None:
        self.run_pending()
        for root in self.full:
            self.finish_repository(root)

    # ---------------------------------------------------------------- versions

    def version_bumps(self, ref: str) -> None:
        """Every derivative that changed since ``ref`` has a greater version; none has a
        smaller one."""
        from cosgitops import gitrepo
        from cosgitops.versioning import InvalidVersionError, parse_version

        changes: dict[str, tuple[str, set[str]]] = {}
        for result in self.folders.values():
            if result is None:
                continue
            version = _value_at(result.value, ("spec", "version"))
            if not isinstance(version, str):
                continue
            try:
                current = parse_version(version)
            except InvalidVersionError:
                continue  # reported by the schema
            anchor = result.root or result.folder
            if anchor not in changes:
                top = str(gitrepo.toplevel(Path(anchor)))
                changes[anchor] = (top, gitrepo.changed_paths(Path(anchor), ref))
            top, changed = changes[anchor]
            folder = "/".join(_parts(os.path.realpath(result.folder), top))
            previous_bytes = gitrepo.read_file_at(Path(anchor), ref, f"{folder}/{DERIVATIVE_FILE}")
            if previous_bytes is None:
                continue  # a new derivative
            previous_document = parse_yaml(previous_bytes, limits=self.limits).document
            previous_text = (
                _value_at(previous_document.value, ("spec", "version"))
                if previous_document is not None
                else None
            )
            if not isinstance(previous_text, str):
                continue
            try:
                previous = parse_version(previous_text)
            except InvalidVersionError:
                continue
            touched = any(name.startswith(folder + "/") for name in changed)
            if current < previous:
                message = (
                    f"version {version} is lower than {previous_text} at {ref}: versions "
                    "never go down"
                )
            elif touched and not current > previous:
                message = (
                    f"{self.display(result.folder)} changed since {ref} but its version "
                    f"{version} is not greater than {previous_text} there"
                )
            else:
                continue
            self.emit(
                result.file,
                result.version_at,
                "error",
                "version-bump",
                message,
                pointer="/spec/version",
                hint=f"raise spec.version above {previous_text}, e.g. to {previous.next_patch()}",
            )

    def report(self) -> Report:
        # An aliased value is found under several pointers but written once: one report.
        unique = {(d.file, d.line, d.column, d.rule, d.message): d for d in self.diagnostics}
        ordered = sorted(unique.values(), key=lambda d: (d.file, d.line, d.column, d.rule))
        return Report(ordered, len(self.looked_at))


# ------------------------------------------------------------------ workers

_Outcome = tuple[
    list[Diagnostic], dict[str, "_DerivativeResult | None"], set[str], set[str], set[str]
]


def _worker_count(tasks: int) -> int:
    if tasks < PARALLEL_MIN_FOLDERS or not hasattr(os, "fork"):
        return 1
    import threading

    if threading.active_count() > 1:
        return 1  # forking a threaded process is unsafe
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8, tasks // (PARALLEL_MIN_FOLDERS // 2)))


def _run_chunk(parent: _Session, tasks: list[tuple[str, str | None]]) -> _Outcome:
    session = _Session(parent.limits, parent.cwd)
    session.keep_values = parent.keep_values
    session.channels = dict(parent.channels)
    for folder, root in tasks:
        session.derivative_folder(folder, root)
    return (
        session.diagnostics,
        session.folders,
        session.scanned,
        session.looked_at,
        session.documents,
    )


def _run_forked(parent: _Session, chunks: list[list[tuple[str, str | None]]]) -> list[_Outcome]:
    """Run the first chunk here and each other one in a forked child that sends its
    outcome back through a pipe. (Plain fork and pipes: a multiprocessing pool costs
    more to start than a pre-commit run over a few hundred files takes.) A child that
    fails is redone here, so a worker problem can never lose a diagnostic."""
    import pickle

    children: list[tuple[int, int, list[tuple[str, str | None]]]] = []
    for chunk in chunks[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, and leave without running any cleanup
            status = 1
            try:
                os.close(read_end)
                data = pickle.dumps(_run_chunk(parent, chunk), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end, chunk))
    outcomes = [_run_chunk(parent, chunks[0])]
    for pid, read_end, chunk in children:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status == 0 and data:
            outcomes.append(pickle.loads(data))  # noqa: S301 - our own child's output
        else:
            outcomes.append(_run_chunk(parent, chunk))
    return outcomes


# ------------------------------------------------------------------ small helpers


def _value_at(value: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif not isinstance(value, dict) or part not in value:
            return None
        else:
            value = value[part]
    return value


def _problem_as_string(value: Any, path: tuple[str | int, ...], text: str, kind: str) -> str | None:
    """What the schema says about ``text`` at ``path``, were it quoted (None if fine)."""
    import copy

    if not path:
        return None
    patched = copy.deepcopy(value)
    parent = _value_at(patched, path[:-1])
    try:
        parent[path[-1]] = text
    except (TypeError, IndexError, KeyError):
        return None
    for issue in schema_for(kind).validate(patched):
        if issue.path == path:
            message = issue.message
            if issue.rule == "version-semver":
                message = f"is not a SemVer version ({semantic.version_hint(text) or issue.hint})"
            elif message.startswith(describe(text)):
                message = message[len(describe(text)) :].strip()
            return message
    return None


def _essentials(value: Any) -> dict[str, Any]:
    """The parts of a derivative that checks across derivatives read."""
    return {
        "metadata": {"name": _value_at(value, ("metadata", "name"))},
        "spec": {"version": _value_at(value, ("spec", "version"))},
    }


def _implicit_type_message(written: str, value: Any) -> str:
    if written == "":
        return "the value is empty (null) where a string is expected"
    if isinstance(value, bool):
        what = f"the boolean {'true' if value else 'false'}"
    elif value is None:
        what = "null"
    else:
        what = f"the number {describe(value)}"
    return f"YAML reads {written} as {what}, not as the string {written!r}"


def _relative_setting(document: SourceDocument | None, key: str, default: str) -> str | None:
    """A derivative's folder setting, if it is a safe relative path."""
    value = _value_at(document.value, ("spec", key)) if document is not None else None
    if value is None:
        return default
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return None
    if ".." in value.split("/"):
        return None
    return value


def _sniff(data: bytes) -> str | None:
    result = parse_yaml(data)
    document = result.document
    if document is None:
        return "cloud-config" if result.problems else None
    if document.is_cloud_init:
        return "cloud-config"
    value = document.value
    if isinstance(value, dict):
        if value.get("kind") == "Derivative":
            return "derivative"
        if value.get("kind") == "Repository":
            return "repository"
        if "stages" in value:
            return "cloud-config"
    return None


# ------------------------------------------------------------------ public API


def validate_paths(
    paths: Sequence[Path],
    *,
    against: str | None = None,
    as_kind: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Report:
    """Validate files and folders (with no ``paths``, the current folder, which must
    be inside a repository: :class:`ConfigError` otherwise).

    ``against`` names a git ref: derivatives that changed since it must have a greater
    version, and no version may be lower than there. ``as_kind`` reads every file as
    one kind (derivative, repository or cloud-config) wherever it is.
    """
    if as_kind is not None and as_kind not in KINDS:
        raise UsageError(f"unknown kind {as_kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    if not paths:
        find_repository_root(Path.cwd())  # no paths: only inside a repository
        paths = [Path.cwd()]
    session = _Session(limits)
    for path in paths:
        session.path(os.path.abspath(path), as_kind)
    session.run()
    if against is not None:
        session.version_bumps(against)
    return session.report()


def load_repository(root: Path, *, limits: Limits = DEFAULT_LIMITS) -> RepositoryTree:
    """Load and fully validate a repository; :class:`ValidationError` if anything is wrong."""
    real_root = os.path.realpath(root)
    if not os.path.isfile(_join(real_root, REPOSITORY_FILE)):
        raise ConfigError(
            f"{root} holds no {REPOSITORY_FILE}",
            hint="pass the repository's top folder, or create one with `cosgitops init`",
        )
    session = _Session(limits)
    session.keep_values = True
    session.repository(real_root)
    session.run()
    report = session.report()
    if not report.ok:
        errors = report.errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationError(
            f"the repository is not valid: {errors[0].format()}{more}",
            hint="run `cosgitops validate` in the repository to see every problem",
            diagnostics=report.diagnostics,
        )
    from cosgitops import model

    root_path = Path(real_root)
    repository = model.Repository.from_data(session.repositories[real_root], root_path)
    derivatives = {}
    for result in session.folders.values():
        if result is not None and result.root == real_root:
            derivative = model.Derivative.from_data(result.value, Path(result.folder))
            derivatives[derivative.name] = derivative
    return RepositoryTree(root_path, repository, dict(sorted(derivatives.items())))
