"""What a ``boot`` stage costs: ``cosgitops device run-stage boot`` with the scaffold's
cloud-config (templates/scaffold/derivatives/example/oem: a file and the host name),
applied to a root folder, as the boot unit runs it.

Timed, best and median of ``--runs``:

* the whole command, a fresh interpreter each time, on a fresh root (first boot: the
  file is written, the host name set) and again on the same root (every later boot:
  nothing to change),
* the library call ``run_stage`` alone in a warm interpreter (no start-up, no imports),
* ``python -c pass`` and ``cosgitops --help``: the interpreter's and the CLI's floor.

yip itself is a Go binary whose start-up is a few milliseconds; the difference is
Python's start-up and imports, which this script separates from the work itself.

    python bench/stages.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "templates" / "scaffold" / "derivatives" / "example" / "oem"
COSGITOPS = Path(sys.executable).parent / "cosgitops"
MACHINE_ID = "0123456789abcdef0123456789abcdef\n"


def fresh_root(base: Path, name: str) -> Path:
    root = base / name
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "machine-id").write_text(MACHINE_ID)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    return root


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def stage_command(root: Path) -> list[str]:
    return [str(COSGITOPS), "device", "run-stage", "boot", "--root", str(root),
            "--config-dir", str(CONFIG), "--only-config-dirs", "--console-event"]  # fmt: skip


def row(name: str, samples: list[float]) -> str:
    return f"| {name} | {min(samples) * 1000:.0f} ms | {statistics.median(samples) * 1000:.0f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cosgitops-bench-stages-"))
    try:
        floor = [timed([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
        cli = [timed([str(COSGITOPS), "--help"]) for _ in range(args.runs)]
        first: list[float] = []
        again: list[float] = []
        for run in range(args.runs):
            root = fresh_root(work, f"root-{run}")
            first.append(timed(stage_command(root)))
            again.append(timed(stage_command(root)))
        check = fresh_root(work, "check")
        subprocess.run(stage_command(check), check=True, capture_output=True)
        hostname = (check / "etc" / "hostname").read_text().strip()
        assert hostname == "example-0123", hostname

        from cosgitops.stages.runner import run_stage

        warm_root = fresh_root(work, "warm")
        run_stage("boot", root=warm_root, config_dirs=[CONFIG], default_dirs=False)
        library_first: list[float] = []
        library_again: list[float] = []
        for run in range(args.runs):
            root = fresh_root(work, f"lib-{run}")
            started = time.perf_counter()
            report = run_stage("boot", root=root, config_dirs=[CONFIG], default_dirs=False)
            library_first.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = run_stage("boot", root=root, config_dirs=[CONFIG], default_dirs=False)
            library_again.append(time.perf_counter() - started)
            assert report.ok and report.counts()["unchanged"] == 2, report.counts()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"boot stage, scaffold cloud-config ({CONFIG.relative_to(PROJECT)}), "
          f"{args.runs} runs\n")  # fmt: skip
    print("| what | best | median |\n|---|---|---|")
    print(row("`python -c pass`", floor))
    print(row("`cosgitops --help`", cli))
    print(row("`run-stage boot`, first boot (writes the file, sets the host name)", first))
    print(row("`run-stage boot`, later boots (nothing to change)", again))
    print(row("`run_stage` library call, first boot", library_first))
    print(row("`run_stage` library call, later boots", library_again))


if __name__ == "__main__":
    main()
