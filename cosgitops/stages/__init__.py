"""The cloud-config stage runner: applies yip cloud-config files to a root, the way yip
does on cOS, Elemental and Kairos.

Public API::

    run_stage(stage, *, root=Path("/"), config_dirs=(), ...) -> RunReport
    load_records(directory) -> dict[str, dict]          (the last run of each stage)

``cosgitops.stages.model`` is the one description of stages, step filters and step
kinds that both this runner and ``cosgitops validate`` read. This package's
``__init__`` stays light: ``validate`` imports the model on the pre-commit hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosgitops.stages.report import RunReport
    from cosgitops.stages.runner import run_stage

__all__ = ["RunReport", "load_records", "run_stage"]


def __getattr__(name: str) -> Any:
    if name == "run_stage":
        from cosgitops.stages.runner import run_stage

        return run_stage
    if name == "RunReport":
        from cosgitops.stages.report import RunReport

        return RunReport
    if name == "load_records":
        from cosgitops.stages.report import load_records

        return load_records
    raise AttributeError(name)
