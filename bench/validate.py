"""cosgitops validate vs check-jsonschema, side by side on the same files.

Generates a repository with 1,000 derivatives (derivatives/d-NNNN/derivative.yaml), then
times, in alternation so both see the same machine load:

* all 1,000 files passed at once (what a pre-commit run over a big change does),
* one file alone (the usual pre-commit case: process start-up dominates),

each as the installed console scripts ``cosgitops validate`` and
``check-jsonschema --schemafile schemas/derivative.schema.json``. cosgitops does more
work per file (folder rules, channels, secrets scan) and reports line and column for
every diagnostic; a second set with 5% broken files checks that in its JSON output.

Targets: >= 10x faster on 1,000 files; <= 0.5x check-jsonschema's time on one file.

    python bench/validate.py [--runs 5] [--files 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCHEMA = PROJECT / "schemas" / "derivative.schema.json"

REPOSITORY = """\
apiVersion: cosgitops/v1
kind: Repository
metadata:
  name: bench
spec:
  channels:
    stable: {description: Production}
    beta: {description: Early adopters}
"""
DIGEST = "sha256:" + "0123456789abcdef" * 4


def derivative(index: int, broken: bool) -> str:
    version = "1.10" if broken else f"1.{index % 7}.{index}"  # 1.10 is a float: an error
    return f"""\
# yaml-language-server: $schema=https://cosgitops.dev/schemas/derivative.schema.json
apiVersion: cosgitops/v1
kind: Derivative
metadata:
  name: d-{index:04d}
  description: Derivative number {index}
spec:
  version: {version}
  base: registry.example.com/cos/base:0.10.{index % 5}@{DIGEST}
  platforms: [linux/amd64, linux/arm64]
  packages: [htop, nginx]
  run: ["systemctl enable nginx"]
  osRelease: {{GRUB_ENTRY_NAME: "Derivative {index}", VARIANT_ID: d{index}}}
  labels:
    org.example.team: team-{index % 10}
  release:
    channels: [stable, beta]
    upgradeFrom: ">=1.0.0"
    rollout: {{startPercentage: 10, durationMinutes: 2880}}
    notes: "Release notes for derivative {index}."
"""


def generate(root: Path, count: int, broken_every: int = 0) -> list[Path]:
    root.mkdir(parents=True)
    (root / "cosgitops.yaml").write_text(REPOSITORY)
    files = []
    for index in range(count):
        folder = root / "derivatives" / f"d-{index:04d}"
        folder.mkdir(parents=True)
        path = folder / "derivative.yaml"
        path.write_text(derivative(index, broken_every > 0 and index % broken_every == 0))
        files.append(path)
    return files


def timed(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    seconds, _, result = timed_with_cpu(command, cwd)
    return seconds, result


def timed_with_cpu(
    command: list[str], cwd: Path
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall time, CPU time (user + system, forked workers included) and the result. The
    CPU time moves less than the wall time when other jobs load the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, result


def compare(label: str, files: list[Path], cwd: Path, runs: int) -> tuple[float, float]:
    names = [str(path.relative_to(cwd)) for path in files]
    ours = [str(BIN / "cosgitops"), "validate", *names]
    theirs = [str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), *names]
    timings: dict[str, list[float]] = {"cosgitops": [], "check-jsonschema": []}
    cpu: dict[str, list[float]] = {"cosgitops": [], "check-jsonschema": []}
    for _ in range(runs):
        for name, command in (("cosgitops", ours), ("check-jsonschema", theirs)):
            seconds, cpu_seconds, result = timed_with_cpu(command, cwd)
            if result.returncode != 0:
                sys.exit(f"{name} failed on valid files:\n{result.stdout}\n{result.stderr}")
            timings[name].append(seconds)
            cpu[name].append(cpu_seconds)
    best = {name: min(values) for name, values in timings.items()}
    median = {name: statistics.median(values) for name, values in timings.items()}
    least = {name: min(values) for name, values in cpu.items()}
    print(
        f"{label:>10}: cosgitops {best['cosgitops']:.3f}s (median {median['cosgitops']:.3f}s)"
        f"   check-jsonschema {best['check-jsonschema']:.3f}s "
        f"(median {median['check-jsonschema']:.3f}s)"
    )
    print(
        f"{'':>10}  CPU time: cosgitops {least['cosgitops']:.3f}s   check-jsonschema "
        f"{least['check-jsonschema']:.3f}s   "
        f"({least['check-jsonschema'] / least['cosgitops']:.1f}x less)"
    )
    return best["cosgitops"], best["check-jsonschema"]


def check_locations(root: Path, files: list[Path]) -> None:
    names = [str(path.relative_to(root)) for path in files]
    seconds, result = timed([str(BIN / "cosgitops"), "validate", "--format", "json", *names], root)
    report = json.loads(result.stdout)
    diagnostics = report["diagnostics"]
    located = all(d["line"] >= 1 and d["column"] >= 1 for d in diagnostics)
    print(
        f"broken set: {len(diagnostics)} diagnostics in {seconds:.3f}s, exit {result.returncode}, "
        f"every one with line and column: {located}"
    )
    if not located or result.returncode != 1 or not diagnostics:
        sys.exit("diagnostics without a location")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cosgitops-bench-"))
    # An installed package has bytecode (pip compiles it; check-jsonschema's is); an
    # editable checkout run with PYTHONDONTWRITEBYTECODE would recompile on every start.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(PROJECT / "cosgitops")], check=True
    )
    try:
        files = generate(work / "valid", args.files)
        broken = generate(work / "broken", args.files, broken_every=20)
        for module in ("pass", "import cosgitops.commands.validate"):
            seconds = min(timed([sys.executable, "-c", module], work)[0] for _ in range(5))
            print(f"python -c {module!r}: {seconds:.3f}s")
        many_ours, many_theirs = compare(f"{args.files} files", files, work / "valid", args.runs)
        one_ours, one_theirs = compare("1 file", files[:1], work / "valid", args.runs)
        check_locations(work / "broken", broken)
        speedup = many_theirs / many_ours
        share = one_ours / one_theirs
        print(
            f"\n{args.files} files: cosgitops is {speedup:.1f}x faster than check-jsonschema "
            f"(target >= 10x: {'met' if speedup >= 10 else 'MISSED'})"
        )
        print(
            f"1 file: cosgitops takes {share:.2f}x check-jsonschema's time "
            f"(target <= 0.5x: {'met' if share <= 0.5 else 'MISSED'})"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
