#!/usr/bin/env python3
"""Daemonless build + push versus ``docker build`` + ``docker push``, side by side.

A config-only derivative (an overlay, a cloud-config file, os-release keys) over a base
image of about 200 MB that sits in a registry but not on the build machine (a cold CI
runner: the base is removed from dockerd before every docker run). Everything is local:
a docker-registry on 127.0.0.1, a base made of a busybox-static root plus layers of
random (incompressible) bytes, the local dockerd.

Measured per run: wall time of each path (the daemonless one both as a library call
and as the ``cosgitops build --push`` command, interpreter start-up and repository
validation included), bytes each path moved. For the daemonless
builder the bytes come from its stores' counters and are cross-checked against the
registry's access log (GET response sizes); for docker, downloads come from the
registry log and uploads from ``docker push``'s own progress.

Targets (issue 3): daemonless at least 10x faster; its bytes at most the new layers
plus 64 KiB.

    .venv/bin/python bench/build.py [--base-mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosgitops.builder import build_derivative  # noqa: E402
from cosgitops.builder.inputs import collect_inputs  # noqa: E402
from cosgitops.builder.render import render_context  # noqa: E402
from cosgitops.oci import open_store  # noqa: E402
from cosgitops.oci.store import StoreOptions  # noqa: E402
from cosgitops.oci.transfer import copy_image  # noqa: E402
from tests.builder.helpers import (  # noqa: E402
    busybox_entries,
    load,
    make_repo,
    random_entries,
    write_base_layout,
)
from tests.helpers.services import RegistryServer  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
_LOG_LINE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')


@dataclass
class RunResult:
    seconds: float
    downloaded: int
    uploaded: int
    registry_get_bytes: int


def _registry_get_bytes(log: Path, start: int) -> tuple[int, int]:
    """Bytes the registry sent in GET responses after byte offset ``start`` of its log."""
    with log.open("rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    total = 0
    for match in _LOG_LINE.finditer(text):
        if match.group(1) == "GET" and match.group(4) != "-":
            total += int(match.group(4))
    return total, start + len(text.encode())


def _docker(*args: str, timeout: int = 900) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _remove_image(name: str) -> None:
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True, check=False, timeout=120)


def _pushed_layer_bytes(name: str, tag: str, base_layers: set[str], options: StoreOptions) -> int:
    """What ``docker push`` had to upload: the pushed image's layers that the base
    (already in the registry, mounted by dockerd) does not have."""
    store = open_store(name, options)
    manifest = store.get_manifest(tag)
    return sum(d.size for d in manifest.children()[1:] if d.digest not in base_layers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-mb", type=int, default=200, help="size of the base image")
    parser.add_argument("--layers", type=int, default=4, help="random layers in the base")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    for tool in ("docker", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required")
    work = Path(tempfile.mkdtemp(prefix="cosgitops-bench-build-"))
    os.environ.setdefault("GIT_AUTHOR_NAME", "bench")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "bench@example.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "bench")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "bench@example.invalid")
    options = StoreOptions(insecure=True)
    try:
        with RegistryServer(work / "registry") as registry:
            print(f"registry {registry.url}, work folder {work}")
            # -- the base: busybox root + incompressible layers, pushed to the registry
            started = time.perf_counter()
            per_layer = args.base_mb * MiB // args.layers
            layers = [busybox_entries()] + [
                random_entries(f"blob{i}", per_layer) for i in range(args.layers)
            ]
            base = write_base_layout(work / "base-layout", layers, tag="1")
            base_name = f"{registry.host}/bench/base:1"
            copy_image(
                open_store(f"oci:{base.layout}"), "1", open_store(base_name, options), tag="1"
            )
            print(
                f"base image: {base.size / MiB:.1f} MiB in {len(layers)} layers "
                f"(made and pushed in {time.perf_counter() - started:.1f} s)"
            )
            repo = make_repo(
                work / "repo",
                {"edge": {"base": base_name, "osRelease": {"VARIANT": "bench"}}},
                {
                    "derivatives/edge/overlay/etc/motd": "welcome\n",
                    "derivatives/edge/overlay/etc/edge/agent.toml": "interval = 60\n" * 50,
                    "derivatives/edge/oem/90_edge.yaml": "name: edge\nstages: {boot: []}\n",
                },
            )
            repository, derivatives = load(repo)
            derivative = derivatives["edge"]
            context = work / "context"
            render_context(collect_inputs(repository, derivative), context)

            daemonless: list[RunResult] = []
            cli_times: list[float] = []
            # Time the command as an installed tool runs: with compiled bytecode (kept in
            # the work folder, whatever PYTHONDONTWRITEBYTECODE says here), warmed once.
            cli_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            cli_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

            def cli_build(target: str) -> float:
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "cosgitops", "build", "edge", "--push", "-q",
                     "--insecure", "--to", target, "-C", str(repo)],
                    capture_output=True, text=True, timeout=300, check=False, env=cli_env,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(f"cosgitops build failed:\n{done.stderr}")
                return time.perf_counter() - started

            cli_build(f"{registry.host}/bench/edge-cli-warm-up")
            docker: list[RunResult] = []
            new_layer_bytes = 0
            log_offset = registry.log.stat().st_size
            for run in range(args.runs):
                # daemonless: build + push into a fresh repository of the same registry
                target = f"{registry.host}/bench/edge-oci-{run}"
                _, log_offset = _registry_get_bytes(registry.log, log_offset)
                started = time.perf_counter()
                result = build_derivative(
                    repository, derivative, push=True, target=target, options=options
                )
                elapsed = time.perf_counter() - started
                got, log_offset = _registry_get_bytes(registry.log, log_offset)
                new_layer_bytes = sum(layer.size for layer in result.new_layers)
                daemonless.append(
                    RunResult(elapsed, result.bytes_downloaded, result.bytes_uploaded, got)
                )

                # the same through the command line, interpreter start-up and validation included
                cli_times.append(cli_build(f"{registry.host}/bench/edge-cli-{run}"))
                _, log_offset = _registry_get_bytes(registry.log, log_offset)

                # docker: cold runner (no base locally), build the rendered context, push
                tag = f"{registry.host}/bench/edge-docker-{run}:1.0.0"
                _remove_image(base_name)
                _remove_image(tag)
                started = time.perf_counter()
                _docker("build", "-q", "-t", tag, str(context))
                _docker("push", tag)
                elapsed = time.perf_counter() - started
                got, log_offset = _registry_get_bytes(registry.log, log_offset)
                inspect = _docker("image", "inspect", "--format", "{{.Size}}", tag)
                uploaded = _pushed_layer_bytes(
                    tag.rsplit(":", 1)[0], "1.0.0", set(base.layer_digests), options
                )
                docker.append(RunResult(elapsed, got, uploaded, got))
                _remove_image(tag)
                _remove_image(base_name)
                print(
                    f"run {run + 1}: daemonless {daemonless[-1].seconds:.2f} s "
                    f"(CLI {cli_times[-1]:.2f} s), docker {docker[-1].seconds:.2f} s "
                    f"(image {int(inspect) / MiB:.0f} MiB)"
                )

            oci_time = statistics.median(r.seconds for r in daemonless)
            cli_time = statistics.median(cli_times)
            docker_time = statistics.median(r.seconds for r in docker)
            oci_bytes = daemonless[-1].downloaded + daemonless[-1].uploaded
            docker_bytes = docker[-1].downloaded + docker[-1].uploaded
            limit = new_layer_bytes + 64 * KiB
            print()
            print(f"{'':28}{'daemonless':>14}{'docker':>14}")
            print(f"{'median time (s)':28}{oci_time:>14.2f}{docker_time:>14.2f}")
            print(f"{'  as a CLI command (s)':28}{cli_time:>14.2f}")
            print(
                f"{'downloaded (bytes)':28}{daemonless[-1].downloaded:>14,}"
                f"{docker[-1].downloaded:>14,}"
            )
            print(
                f"{'uploaded (bytes)':28}{daemonless[-1].uploaded:>14,}{docker[-1].uploaded:>14,}"
            )
            print(
                f"{'registry GET bytes (log)':28}{daemonless[-1].registry_get_bytes:>14,}"
                f"{docker[-1].registry_get_bytes:>14,}"
            )
            print(f"{'total transferred (bytes)':28}{oci_bytes:>14,}{docker_bytes:>14,}")
            print()
            for label, ours in (
                ("library call", oci_time),
                ("`cosgitops build` command", cli_time),
            ):
                speedup = docker_time / ours
                verdict = "met" if speedup >= 10 else "MISSED"
                print(f"speed-up, {label}: {speedup:.1f}x  (target >= 10x: {verdict})")
            print(
                f"daemonless bytes: {oci_bytes:,} vs new layers {new_layer_bytes:,} + 64 KiB = "
                f"{limit:,} (target: {'met' if oci_bytes <= limit else 'MISSED'})"
            )
            print(f"docker moved {docker_bytes / max(oci_bytes, 1):.0f}x the bytes")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
