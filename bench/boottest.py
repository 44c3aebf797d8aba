#!/usr/bin/env python3
"""The time a boot test adds to a release, measured side by side in one run.

One repository: ``example`` 1.0.0 released on the bootable base, then 1.1.0 (one overlay
file changed) committed. From that same state (the repository copied):

* A: ``release`` of 1.1.0 as without the gate (build, sign, publish);
* B: ``boot-test example`` (build, a cOS disk with 1.0.0, boot, upgrade through the
  agent in the guest, boot 1.1.0, health checks, a forced failure and GRUB's fallback;
  a signed attestation), then ``release`` with ``spec.release.bootTest: required``
  (the gate verifies the attestation).

Printed: each step's time, A, B, and what B adds over A, with the accelerator used.

    sudo .venv/bin/python bench/boottest.py [--mirror LINE] [--wheelhouse DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosgitops.boottest.run import BootTestOptions, boot_test  # noqa: E402
from cosgitops.demoboot import (  # noqa: E402
    DERIVATIVE,
    _commit,
    build_base_for,
    commit_version,
    scaffold_repository,
    write_example,
)
from cosgitops.release import release  # noqa: E402


def _timed_release(repo: Path, public: Path) -> float:
    started = time.monotonic()
    report = release(repo, public_dir=public)
    seconds = time.monotonic() - started
    if not report.ok:
        raise SystemExit(f"release failed: {report.failed}")
    return seconds


def _require_boot_test(repo: Path) -> None:
    path = repo / "derivatives" / DERIVATIVE / "derivative.yaml"
    definition = yaml.safe_load(path.read_text())
    definition["spec"]["release"]["bootTest"] = "required"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    if _commit(repo, "the boot-test gate").returncode != 0:
        raise SystemExit("the hook refused the gate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", action="append", help="apt source line (a local mirror)")
    parser.add_argument("--wheelhouse", type=Path)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "bases")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "boottest")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-boottest-") as tmp:
        work = Path(tmp)
        repo, public = work / "repo", work / "public"
        scaffold_repository(repo)
        spec_base, _ = build_base_for(repo, args.mirror, args.wheelhouse, args.cache, print)
        write_example(repo, spec_base)
        _timed_release(repo, public)
        commit_version(repo, "1.1.0", motd="one changed overlay file")
        plain_repo, plain_public = work / "plain-repo", work / "plain-public"
        shutil.copytree(repo, plain_repo, symlinks=True)
        shutil.copytree(public, plain_public, symlinks=True)

        figures["release_without_gate_s"] = round(_timed_release(plain_repo, plain_public), 1)
        started = time.monotonic()
        report = boot_test(
            repo,
            DERIVATIVE,
            BootTestOptions(public_dir=public, accelerator=args.accel, work_dir=work / "bt"),
        )
        figures["boot_test_s"] = round(time.monotonic() - started, 1)
        if report.status != "passed" or report.result is None:
            raise SystemExit(f"the boot test failed: {report.error} ({report.failed_log})")
        figures["steps_s"] = {
            step.name: round(step.duration_seconds, 1) for step in report.result.steps
        }
        figures["accelerator"] = report.result.environment.get("accelerator")
        _require_boot_test(repo)
        figures["gated_release_s"] = round(_timed_release(repo, public), 1)
    gated = figures["boot_test_s"] + figures["gated_release_s"]
    figures["boot_test_and_gated_release_s"] = round(gated, 1)
    figures["added_s"] = round(gated - figures["release_without_gate_s"], 1)
    (args.out / "boottest.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
