"""Hostile and broken input: every case exits 1 with a located message, no traceback,
within 2 seconds of CPU and bounded memory.

Each case runs the real CLI in a fresh process that reports its own CPU time and peak
memory (CPU rather than wall time, so a busy CI machine cannot make a case flaky; a
hang still fails through the subprocess timeout).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.validate.helpers import derivative_yaml, make_repository, private_key_pem

MEASURED_RUN = """
import os, resource, sys
from cosgitops.cli import main
try:
    main(sys.argv[1:])
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["COSGITOPS_TEST_USAGE"], "w") as handle:
        handle.write(f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""
LOCATED = re.compile(
    r"^(?P<file>\S[^:\n]*):(?P<line>\d+):(?P<column>\d+): error\[(?P<rule>[a-z0-9-]+)\] ", re.M
)
CPU_SECONDS = 2.0
EXTRA_MEMORY_KIB = 64 * 1024  # over an idle `cosgitops validate`

Case = Callable[[Path], list[str]]
CASES: dict[str, tuple[str, Case]] = {}


def case(name: str, rule: str) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        CASES[name] = (rule, function)
        return function

    return register


def repo_with_definition(tmp: Path, data: bytes | str, name: str = "edge") -> list[str]:
    root = make_repository(tmp / "fleet")
    folder = root / "derivatives" / name
    folder.mkdir(parents=True)
    raw = data.encode() if isinstance(data, str) else data
    (folder / "derivative.yaml").write_bytes(raw)
    return [str(folder / "derivative.yaml")]


def cloud_config(tmp: Path, data: bytes | str) -> list[str]:
    path = tmp / "config.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return ["--as", "cloud-config", str(path)]


# ---------------------------------------------------------------- shape


@case("empty file", "yaml-empty")
def _empty(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, b"")


@case("comments only", "yaml-empty")
def _comments(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "# nothing here\n# at all\n")


@case("whitespace only", "yaml-empty")
def _whitespace(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "\n   \n\n")


@case("a list where a mapping belongs", "schema")
def _list(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "- apiVersion: cosgitops/v1\n- kind: Derivative\n")


@case("a scalar document", "schema")
def _scalar(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "just a string\n")


@case("a null document", "schema")
def _null(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "~\n")


@case("cosgitops.yaml is a list", "schema")
def _repository_list(tmp: Path) -> list[str]:
    root = make_repository(tmp / "fleet")
    (root / "cosgitops.yaml").write_text("- a\n- b\n")
    return [str(root)]


@case("stages is a list", "schema")
def _stages_list(tmp: Path) -> list[str]:
    return cloud_config(tmp, "stages:\n  - boot: []\n")


@case("missing everything but kind", "schema")
def _missing(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "kind: Derivative\n")


# ---------------------------------------------------------------- size and structure


@case("a 50 MB file", "yaml-too-large")
def _fifty_megabytes(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, b"")
    with open(paths[0], "r+b") as handle:
        handle.truncate(50 * 1024 * 1024)
    return paths


@case("a 2 MB file of real YAML", "yaml-too-large")
def _two_megabytes(tmp: Path) -> list[str]:
    body = "".join(f"key{i}: value number {i}\n" for i in range(80_000))
    return repo_with_definition(tmp, body)


@case("10,000-deep flow nesting", "yaml-depth")
def _deep_flow(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: " + "[" * 10_000 + "]" * 10_000 + "\n")


@case("10,000-deep block nesting", "yaml-depth")
def _deep_block(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "- " * 10_000 + "x\n")


@case("10,000-deep flow mappings", "yaml-depth")
def _deep_mappings(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "{a: " * 10_000 + "1" + "}" * 10_000 + "\n")


@case("YAML bomb (billion laughs)", "yaml-alias-budget")
def _bomb(tmp: Path) -> list[str]:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 12):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return repo_with_definition(tmp, "\n".join(lines) + "\n")


@case("ten thousand aliases", "yaml-alias-budget")
def _alias_flood(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: &x 1\nb: [" + ", ".join(["*x"] * 10_000) + "]\n")


@case("a recursive alias", "yaml-alias-budget")
def _recursive(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: &loop\n  - *loop\n")


@case("too many nodes", "yaml-too-large")
def _many_nodes(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: [" + ",".join(["1"] * 250_000) + "]\n")


@case("a 5,000-digit number", "version-semver")
def _huge_number(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge", version="1" * 5000))


# ---------------------------------------------------------------- bytes


@case("invalid UTF-8", "yaml-encoding")
def _invalid_utf8(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, b"apiVersion: cosgitops/v1\nkind: \xc3\x28\n")


@case("UTF-16 with a byte order mark", "yaml-encoding")
def _utf16(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge").encode("utf-16"))


@case("binary content", "yaml-binary")
def _binary(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, bytes(range(256)) * 64)


@case("a NUL byte inside text", "yaml-binary")
def _nul(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge").encode().replace(b"edge", b"ed\x00ge"))


@case("a control character", "yaml-syntax")
def _control(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge").replace("edge", "ed\x1bge"))


# ---------------------------------------------------------------- syntax


@case("duplicate keys", "yaml-duplicate-key")
def _duplicates(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge") + "kind: Derivative\n")


@case("several documents", "yaml-multiple-documents")
def _documents(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge") + "---\n" + derivative_yaml("edge"))


@case("a python object tag", "yaml-tag")
def _python_tag(tmp: Path) -> list[str]:
    return repo_with_definition(
        tmp, derivative_yaml("edge") + "  labels: !!python/object/apply:os.system [id]\n"
    )


@case("an unclosed flow sequence", "yaml-syntax")
def _unclosed(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: [b, c\nd: e\n")


@case("an unclosed quote", "yaml-syntax")
def _quote(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, 'a: "open\nb: c\n')


@case("tab indentation", "yaml-syntax")
def _tabs(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "metadata:\n\tname: edge\n")


@case("an undefined alias", "yaml-syntax")
def _undefined_alias(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a: *nowhere\n")


@case("a complex key", "yaml-complex-key")
def _complex_key(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "? [a, b]\n: c\n")


@case("a merge of a scalar", "yaml-syntax")
def _bad_merge(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, "a:\n  <<: 5\n  b: 1\n")


# ---------------------------------------------------------------- YAML 1.1 traps


@case("version: 1.10 is a float", "yaml-implicit-type")
def _float_version(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("edge", version="1.10"))


@case("name: no is a boolean", "yaml-implicit-type")
def _bool_name(tmp: Path) -> list[str]:
    return repo_with_definition(tmp, derivative_yaml("no"), name="no")


# ---------------------------------------------------------------- the file system


@case("derivative.yaml symlinked out of the repository", "path-escape")
def _symlink_definition(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, b"")
    os.unlink(paths[0])
    os.symlink("/etc/passwd", paths[0])
    return paths


@case("an overlay symlink climbing to the host's /etc/shadow", "path-escape")
def _symlink_overlay(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, derivative_yaml("edge"))
    overlay = Path(paths[0]).parent / "overlay" / "etc"
    overlay.mkdir(parents=True)
    # relative, so it resolves on the build machine (an absolute link is an image path)
    (overlay / "shadow").symlink_to("../" * 32 + "etc/shadow")
    return paths


@case("a derivative folder symlinked elsewhere", "path-escape")
def _symlink_folder(tmp: Path) -> list[str]:
    root = make_repository(tmp / "fleet")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "derivative.yaml").write_text(derivative_yaml("edge"))
    (root / "derivatives").mkdir()
    (root / "derivatives" / "edge").symlink_to(elsewhere)
    return [str(root)]


@case("a dangling derivative.yaml symlink", "file-unreadable")
def _dangling(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, b"")
    os.unlink(paths[0])
    os.symlink("missing.yaml", paths[0])
    return paths


@case("a FIFO named derivative.yaml", "file-unreadable")
def _fifo(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, b"")
    os.unlink(paths[0])
    os.mkfifo(paths[0])
    return paths


@case("a folder named derivative.yaml", "file-unreadable")
def _folder(tmp: Path) -> list[str]:
    paths = repo_with_definition(tmp, b"")
    os.unlink(paths[0])
    os.mkdir(paths[0])
    return [str(Path(paths[0]).parent)]


@case("a private key in a cloud-config", "private-key")
def _key_in_cloud_config(tmp: Path) -> list[str]:
    key = "\n".join("          " + line for line in private_key_pem().splitlines())
    return cloud_config(
        tmp,
        "stages:\n  boot:\n    - files:\n        - path: /etc/ssh/key\n          content: |\n"
        + key
        + "\n",
    )


# ---------------------------------------------------------------- the runner


def run_measured(
    args: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], float, int]:
    usage_file = tmp_path / "usage.txt"
    result = subprocess.run(
        [sys.executable, "-c", MEASURED_RUN, "validate", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COSGITOPS_TEST_USAGE": str(usage_file)},
    )
    cpu, rss = usage_file.read_text().split()
    return result, float(cpu), int(rss)


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory: pytest.TempPathFactory) -> int:
    tmp = tmp_path_factory.mktemp("baseline")
    (tmp / "ok.yaml").write_text("stages: {}\n")
    _, _, rss = run_measured(["--as", "cloud-config", str(tmp / "ok.yaml")], tmp)
    return rss


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_with_a_location(name: str, tmp_path: Path, baseline_rss: int) -> None:
    rule, build = CASES[name]
    work = tmp_path / "case"
    work.mkdir()
    args = build(work)
    result, cpu, rss = run_measured(args, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""
    located = [m.groupdict() for m in LOCATED.finditer(result.stdout)]
    assert any(m["rule"] == rule for m in located), result.stdout
    for match in located:
        assert int(match["line"]) >= 1 and int(match["column"]) >= 1
    assert cpu < CPU_SECONDS, f"{name} took {cpu:.2f}s of CPU"
    assert rss - baseline_rss < EXTRA_MEMORY_KIB, f"{name} used {rss} KiB"
