"""Every real cloud-config shipped in cOS/Elemental and Kairos images runs in a Debian
root with no internal error: each step ends applied, unchanged, skipped or filtered
with its reason, or failed with a located error (commands that need a running
system, such as mounting, fail inside a chroot as they would)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.stages.report import STATUSES
from cosgitops.stages.runner import run_stage
from cosgitops.validate import validate_paths
from tests.helpers.debian import private_copy
from tests.stages.conftest import MACHINE_ID


def _base_stages(path: Path) -> list[str]:
    from cosgitops.source import load_yaml

    value = load_yaml(path).value
    stages = value.get("stages") if isinstance(value, dict) else None
    names = {str(name).removesuffix(".before").removesuffix(".after") for name in stages or {}}
    if "#cloud-config" in path.read_text():
        names |= {"boot", "initramfs", "network"}
    return sorted(names)


def test_every_real_cloud_config_runs_without_an_internal_error(
    interop: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # the tree only once the data is known to be there: without ../shared the skip
    # names the missing data, not the Debian mirror
    debian_base_tree: Path = request.getfixturevalue("debian_base_tree")
    files = sorted(path for path in (interop / "yip").rglob("*.yaml") if path.is_file())
    assert len(files) >= 70
    seen: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for number, path in enumerate(files):
        assert validate_paths([path], as_kind="cloud-config").ok, path
        config_dir = tmp_path / f"config-{number}"
        config_dir.mkdir()
        (config_dir / path.name).write_bytes(path.read_bytes())
        with private_copy(debian_base_tree, tmp_path / f"root-{number}") as root:
            (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
            for stage in _base_stages(path):
                report = run_stage(
                    stage, root=root, config_dirs=[config_dir], default_dirs=False, record=False
                )
                assert report.problems == [], (path, report.problems)
                assert report.internal_errors == [], [s.error for s in report.internal_errors]
                for step in report.steps:
                    seen[step.status] += 1
                    where = f"{path.name}: {step.stage} {step.name!r}"
                    if step.status == "failed":
                        assert step.error and step.error_line, where
                        assert step.location.startswith(str(config_dir)), where
                    if step.status in ("filtered", "skipped"):
                        assert step.reason, where
                    if step.status == "skipped":
                        assert all(kind.status == "skipped" for kind in step.kinds), where
    # the real files hold steps of every outcome but "unchanged" on a fresh root
    assert seen["applied"] and seen["filtered"] and seen["skipped"], seen
    print(f"\nreal cloud-configs: {len(files)} files, steps: {seen}")
