"""Running one stage: ``STAGE.before``, ``STAGE`` and ``STAGE.after`` (as ``elemental
run-stage`` does; a name ending in ``.before`` or ``.after`` runs just that one), each
over every source folder in order, each folder's steps in file order.

For each step: its filters first (``node``, ``if``, ``only_os``, ``only_os_version``,
``only_arch``, ``only_service_manager``, ``if_files``, in yip's order); then every kind
it holds is prepared (checked, nothing changed) and, only when all are ready, applied
in yip's order. A step whose preparation fails is refused with nothing written; a kind
that fails while applying fails the step, the step's other kinds still run (yip runs
all its plugins), and the stage goes on with the next step. ``after`` lets a step wait
for steps named in the same folder, as yip's dependency graph does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import UsageError
from cosgitops.stages import model
from cosgitops.stages.context import RunContext, StepError
from cosgitops.stages.kinds import handler
from cosgitops.stages.loader import ConfigFile, Step, find_sources, load_file
from cosgitops.stages.report import KindOutcome, RunReport, StepOutcome, records_dir, write_record
from cosgitops.stages.values import Apply, render_system, text, text_list

_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SYSTEMD = ("/sbin/systemctl", "/bin/systemctl", "/usr/sbin/systemctl", "/usr/bin/systemctl")
_OPENRC = ("/sbin/openrc", "/bin/openrc", "/usr/sbin/openrc", "/usr/bin/openrc")


def stages_of(stage: str) -> list[str]:
    if stage.endswith((".before", ".after")):
        return [stage]
    return [f"{stage}.before", stage, f"{stage}.after"]


def run_stage(
    stage: str,
    *,
    root: Path = Path("/"),
    config_dirs: Sequence[Path] = (),
    default_dirs: bool = True,
    disks: Sequence[Path] = (),
    record: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    on_step: Callable[[StepOutcome], None] | None = None,
) -> RunReport:
    """Apply ``stage`` to ``root`` (``/``: this running system)."""
    if not _STAGE_NAME.match(stage):
        raise UsageError(
            f"{stage!r} is not a stage name", hint=f"e.g. {', '.join(model.BOOT_STAGES)}"
        )
    if not Path(root).is_dir():
        raise UsageError(f"root {root} is not a folder")
    ctx = RunContext(Path(root), limits=limits, disks=tuple(Path(d) for d in disks))
    started = time.perf_counter()
    report = RunReport(stage, stages_of(stage), str(ctx.root), ctx.live)
    sources = find_sources(ctx, config_dirs, default_dirs=default_dirs)
    loaded: list[list[ConfigFile]] = []
    for source in sources:
        report.sources.append(source.shown)
        configs: list[ConfigFile] = []
        for host, shown in source.files:
            report.files.append(shown)
            config, problems = load_file(host, shown, limits)
            report.problems.extend(problems)
            if config is not None:
                configs.append(config)
        loaded.append(configs)
    for name in report.stages:
        for configs in loaded:
            batch = [(config, step) for config in configs for step in config.stages.get(name, [])]
            for outcome in _run_batch(ctx, batch):
                report.steps.append(outcome)
                if on_step is not None:
                    on_step(outcome)
    report.seconds = time.perf_counter() - started
    if record:
        try:
            report.record = str(write_record(records_dir(ctx.root), report))
        except OSError as error:
            report.record_error = f"the run was not recorded: {error}"
    return report


def _after(step: Step) -> list[str]:
    after = step.value.get("after")
    return [
        text(item.get("name"))
        for item in (after if isinstance(after, list) else [])
        if isinstance(item, dict) and text(item.get("name"))
    ]


def _run_batch(ctx: RunContext, batch: list[tuple[ConfigFile, Step]]) -> Iterator[StepOutcome]:
    """Run one folder's steps of one stage in yip's order: each step after the one
    before it in its file, each file after the steps of the file before it, unless a
    step names what it waits for with ``after`` (by yip's ``<file's name>.<step's
    name>`` or by the step's name). A name nothing answers to is not waited for."""
    names: list[tuple[str, str]] = []
    deps: list[set[str]] = []
    previous_file: list[str] = []
    current_file: list[str] = []
    for position, (config, step) in enumerate(batch):
        first_in_file = not position or batch[position - 1][0] is not config
        if position and first_in_file:
            previous_file = current_file
            current_file = []
        bare = text(step.value.get("name")) or str(step.position)
        names.append((f"{config.name}.{bare}", bare))
        wanted = set(_after(step))
        if not wanted and not first_in_file:
            wanted = {names[position - 1][0]}
        deps.append(wanted | set(previous_file))
        if not _after(step):
            current_file.append(names[position][0])
    pending = list(range(len(batch)))
    while pending:
        waiting = {alias for position in pending for alias in names[position]}
        chosen = next(
            (
                position
                for position in pending
                if not (deps[position] - set(names[position])) & waiting
            ),
            pending[0],
        )
        pending.remove(chosen)
        config, step = batch[chosen]
        yield run_step(ctx, config, step)


def run_step(ctx: RunContext, config: ConfigFile, step: Step) -> StepOutcome:
    line, column = config.locate(step)
    name = text(step.value.get("name")) or f"step {step.position + 1}"
    outcome = StepOutcome(step.stage, config.shown, line, column, step.position, name)
    started = time.perf_counter()
    try:
        _run(ctx, config, step, outcome)
    finally:
        outcome.seconds = time.perf_counter() - started
    return outcome


def _fail(
    outcome: StepOutcome, config: ConfigFile, step: Step, error: StepError, suffix: str = ""
) -> None:
    outcome.status = "failed"
    outcome.error = error.message + suffix
    outcome.hint = error.hint
    outcome.error_line = config.locate(step, error.pointer)[0]


def _internal(error: Exception) -> StepError:
    """A bug met while running one step: the stage goes on (it may be booting), the
    step fails with the traceback in its record, and the command exits 3."""
    import traceback

    failure = StepError(
        f"internal error (a bug in cosgitops): {type(error).__name__}: {error}",
        hint="please report it with the record of this run (cosgitops device status)",
    )
    failure.traceback = "".join(traceback.format_exception(error))
    return failure


def _run(ctx: RunContext, config: ConfigFile, step: Step, outcome: StepOutcome) -> None:
    try:
        reason = check_filters(ctx, step)
    except StepError as error:
        _fail(outcome, config, step, error)
        return
    except Exception as error:  # noqa: BLE001 - a bug must not stop the stage
        _fail(outcome, config, step, _internal(error))
        outcome.internal = True
        return
    if reason:
        outcome.status = "filtered"
        outcome.reason = reason
        return
    ctx.pending_users.clear()
    ctx.pending_groups.clear()
    prepared: list[tuple[str, Apply]] = []
    try:
        for kind in model.KINDS:
            value = step.value.get(kind.key)
            if not model.is_set(value):
                continue
            if kind.unsupported is not None:
                prepared.append((kind.key, _skipped(kind)))
                continue
            prepared.append((kind.key, handler(kind.key)(ctx, value, step.value)))
    except StepError as error:
        _fail(outcome, config, step, error, " (the step was refused: nothing was changed)")
        return
    except Exception as error:  # noqa: BLE001
        _fail(outcome, config, step, _internal(error), " (nothing of the step was applied)")
        outcome.internal = True
        return
    for key, apply in prepared:
        try:
            result = apply()
        except StepError as error:
            result = _failed_kind(config, step, key, error)
        except OSError as error:
            message = f"{key}: {error.strerror or error}"
            result = _failed_kind(config, step, key, StepError(message, pointer=(key,)))
        except Exception as error:  # noqa: BLE001
            result = _failed_kind(config, step, key, _internal(error))
            outcome.internal = True
        outcome.kinds.append(result)
    outcome.finish()


def _failed_kind(config: ConfigFile, step: Step, key: str, error: StepError) -> KindOutcome:
    line = config.locate(step, error.pointer or (key,))[0]
    return KindOutcome(key, "failed", error=error.message, hint=error.hint, line=line,
                       traceback=error.traceback)  # fmt: skip


def _skipped(kind: model.StepKind) -> Apply:
    def apply() -> KindOutcome:
        return KindOutcome(kind.key, "skipped", f"{kind.key} {kind.unsupported}")

    return apply


def _search(pattern: str, value: str, key: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error as error:
        raise StepError(
            f"{key} {pattern!r} is not a regular expression: {error}", pointer=(key,)
        ) from error


def check_filters(ctx: RunContext, step: Step) -> str | None:
    """Why the step does not run here, or None when all its filters pass."""
    value = step.value
    node = text(value.get("node"))
    if node and not _search(node, ctx.hostname(), "node"):
        return f"node: host name {ctx.hostname()!r} does not match {node!r}"
    condition = text(value.get("if"))
    if condition.strip():
        notes: list[str] = []
        script = render_system(ctx, condition, notes, "if")
        result = ctx.shell(script)
        if result.returncode != 0:
            return f"if: `{condition.strip()[:120]}` exited {result.returncode}"
    release = ctx.os_release()
    for key, field, what in (
        ("only_os", "PRETTY_NAME", "OS name"),
        ("only_os_version", "VERSION_ID", "OS version"),
    ):
        pattern = text(value.get(key))
        if pattern:
            current = release.get(field, "")
            if not current:
                return f"{key}: the system's {what} is empty"
            if not _search(pattern, current, key):
                return f"{key}: {what} {current!r} does not match {pattern!r}"
    arch = text(value.get("only_arch"))
    if arch and not _search(arch, ctx.arch(), "only_arch"):
        return f"only_arch: {ctx.arch()} does not match {arch!r}"
    manager = text(value.get("only_service_manager")).lower()
    if manager:
        if manager not in ("systemd", "openrc"):
            return f"only_service_manager: {manager!r} is not systemd or openrc"
        systemd = any(ctx.exists(path) for path in _SYSTEMD)
        openrc = any(ctx.exists(path) for path in _OPENRC)
        if systemd and openrc:
            return "only_service_manager: both systemd and openrc are installed"
        if not {"systemd": systemd, "openrc": openrc}[manager]:
            return f"only_service_manager: this system does not run {manager}"
    if_files = value.get("if_files")
    if isinstance(if_files, dict):
        for check, paths in if_files.items():
            listed = text_list(paths)
            if not listed:
                continue
            present = [path for path in listed if ctx.exists(path)]
            if check == "all" and len(present) != len(listed):
                missing = next(path for path in listed if path not in present)
                return f"if_files.all: {missing} is missing"
            if check == "any" and not present:
                return "if_files.any: none of the files exists"
            if check == "none" and present:
                return f"if_files.none: {present[0]} exists"
            if check not in ("all", "any", "none"):
                return f"if_files: unknown check {check!r}"
    return None
