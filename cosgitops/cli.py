"""The ``cosgitops`` command line.

This module only wires commands together and maps errors to exit codes. Each command
lives in ``cosgitops/commands/<area>.py`` and is imported when it is invoked, so
``cosgitops validate`` never pays for importing docker, sigstore or tuf.

Exit codes: 0 success, 1 the check failed or the operation was refused,
2 usage error, 3 internal error (a bug).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

from cosgitops import __version__
from cosgitops.errors import CosgitopsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 3

# command name -> "module:attribute"; the module is imported only when the command runs.
COMMANDS: dict[str, str] = {
    "init": "cosgitops.commands.validate:init_command",
    "validate": "cosgitops.commands.validate:validate_command",
    "plan": "cosgitops.commands.build:plan_command",
    "render": "cosgitops.commands.build:render_command",
    "build": "cosgitops.commands.build:build_command",
    "base": "cosgitops.commands.base:base_group",
    "keygen": "cosgitops.commands.signing:keygen_command",
    "sign": "cosgitops.commands.signing:sign_command",
    "verify": "cosgitops.commands.signing:verify_command",
    "publish": "cosgitops.commands.publish:publish_command",
    "refresh": "cosgitops.commands.publish:refresh_command",
    "yank": "cosgitops.commands.publish:yank_command",
    "keys": "cosgitops.commands.publish:keys_group",
    "release": "cosgitops.commands.release:release_command",
    "boot-test": "cosgitops.commands.boottest:boot_test_command",
    "device": "cosgitops.commands.device:device_group",
    "disk": "cosgitops.commands.disk:disk_command",
    "medium": "cosgitops.commands.disk:medium_command",
    "demo": "cosgitops.commands.release:demo_command",
}

SHORT_HELP: dict[str, str] = {
    "init": "Scaffold a repository: example derivative, hooks, workflows.",
    "validate": "Check derivative, repository and cloud-config files.",
    "plan": "List the derivatives that changed since a git ref.",
    "render": "Write a build context that plain `docker build` builds.",
    "build": "Build a derivative's image and print its pinned digest.",
    "base": "Build a bootable OS base (bases/<name>/base.yaml) with mmdebstrap.",
    "keygen": "Create a cosign-compatible key pair.",
    "sign": "Sign an image in cosign's formats.",
    "verify": "Verify an image's signatures against a key or identity.",
    "publish": "Add releases to the signed index and channel files.",
    "refresh": "Re-sign the short-lived index metadata.",
    "yank": "Mark a release as a dead end so devices stop being offered it.",
    "keys": "Manage index signing keys (rotate).",
    "release": "plan + build + push + sign + publish: what CI runs on merge.",
    "boot-test": "Boot a candidate in QEMU: upgrade, health checks, fallback; attest it.",
    "device": "The on-device agent: status, check, upgrade, rollback, boot-check, reset.",
    "disk": "Write a bootable cOS-layout disk image of a derivative's release.",
    "medium": "Write an update medium (index + images) for devices without a network.",
    "demo": "Run the whole commit -> release -> device upgrade loop offline.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv[1:2]:
            # `cosgitops --help` lists commands without importing them.
            return click.Command(cmd_name, help=SHORT_HELP.get(cmd_name, ""))
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cosgitops")
def cli() -> None:
    """Git as the source of truth for a fleet of immutable, container-based Linux systems."""


# Where a command wants its crash reports (the device agent: inside its device root),
# and how many of them to keep there; set through set_crash_dir().
_crash_dir: list[tuple[str, int]] = []


def set_crash_dir(path: str, *, keep: int = 10) -> None:
    """Write crash reports of this run into ``path`` (created), keeping the newest ``keep``."""
    _crash_dir[:] = [(path, keep)]


def _crash_report_path() -> str:
    import tempfile
    import time

    name = f"cosgitops-crash-{int(time.time())}-{os.getpid()}.txt"
    if _crash_dir:
        folder, keep = _crash_dir[0]
        try:
            os.makedirs(folder, exist_ok=True)
            old = sorted(n for n in os.listdir(folder) if n.startswith("cosgitops-crash-"))
            for stale in old[: max(len(old) - keep + 1, 0)]:
                os.unlink(os.path.join(folder, stale))
            return os.path.join(folder, name)
        except OSError:
            pass  # a full or broken device root: fall back to the usual place
    report_dir = os.environ.get("COSGITOPS_CRASH_DIR") or tempfile.gettempdir()
    return os.path.join(report_dir, name)


def _report_bug(exc: BaseException) -> NoReturn:
    import traceback

    path = _crash_report_path()
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"cosgitops {__version__}\nargv: {sys.argv!r}\n\n")
            traceback.print_exception(exc, file=handle)
        where = f"full traceback in {path}"
    except OSError:
        where = "could not write the traceback file"
    click.echo(
        f"internal error (a bug in cosgitops): {type(exc).__name__}: {exc} ({where})", err=True
    )
    sys.exit(EXIT_BUG)


def report_error(error: CosgitopsError) -> None:
    click.echo(f"error: {error}", err=True)
    if error.hint:
        click.echo(f"hint: {error.hint}", err=True)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    _crash_dir.clear()  # each run: a command sets its own (set_crash_dir)
    try:
        # Without standalone mode click returns the code of ctx.exit()/Exit instead of
        # exiting; make it the process's exit status whichever way we were started.
        code = cli.main(args=argv, prog_name="cosgitops", standalone_mode=False)
        if isinstance(code, int) and code != EXIT_OK:
            sys.exit(code)
        return code
    except CosgitopsError as error:
        report_error(error)
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE if isinstance(error, click.UsageError) else EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into exit 3
        _report_bug(exc)
