#!/usr/bin/env python3
"""Over-the-air cost of the device agent, measured side by side in one run.

Against a real docker-registry and a static HTTP server on 127.0.0.1 (the same services
the tests use), a device installs v1 of an image made of a base layer and an overlay
layer, then upgrades to v2, which changes one file of the overlay. Printed:

* the upgrade: layer bytes downloaded, all bytes from the registry (manifests, config,
  signatures, layer) and from the index (TUF metadata, release manifest), next to the
  full image size and the changed layer's compressed size;
* a ``check`` when nothing is new: requests, bytes and wall time (in-process, and the
  whole ``cosgitops device check`` command including interpreter start-up).

Target (issue 6): bytes downloaded for the upgrade at most 1.05x the changed layer.

    .venv/bin/python bench/ota.py [--base-mib 64] [--overlay-kib 512] [--checks 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosgitops.device.agent import DeviceAgent  # noqa: E402
from cosgitops.oci.store import StoreOptions  # noqa: E402
from tests.device.fleet import DERIVATIVE, Fleet  # noqa: E402
from tests.device.tarbuild import Entry, directory, file  # noqa: E402
from tests.helpers.services import RegistryServer, StaticServer  # noqa: E402

TARGET_RATIO = 1.05


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def base_entries(mib: int) -> list[Entry]:
    """A stand-in OS: half incompressible (binaries), half text-like (compresses well)."""
    half = mib * 1024 * 1024 // 2
    text = (b"/usr/lib/systemd/system/example.service\nExecStart=/usr/bin/example\n" * 16)[:4096]
    return [
        directory("usr"),
        directory("usr/lib"),
        file("usr/lib/blob.bin", os.urandom(half)),
        file("usr/share/doc.txt", (text * (half // len(text) + 1))[:half]),
        file("etc/hostname", "device\n"),
    ]


def overlay_entries(kib: int, changed: str) -> list[Entry]:
    """The derivative's overlay: several files; only ``changed`` differs between releases."""
    entries = [directory("etc"), directory("etc/edge")]
    rng = __import__("random").Random(42)
    per_file = max(kib * 1024 // 8, 1)
    for index in range(8):
        data = bytes(rng.getrandbits(8) for _ in range(per_file))
        entries.append(file(f"etc/edge/asset-{index}.bin", data))
    entries.append(file("etc/edge/config.yaml", f"setting: {changed}\n"))
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-mib", type=int, default=64)
    parser.add_argument("--overlay-kib", type=int, default=512)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="keep the work folder here")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="cosgitops-ota-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DOCKER_CONFIG", str(work / "docker-config"))
    try:
        with RegistryServer(work / "registry") as registry:
            fleet = Fleet(
                work / "fleet",
                f"{registry.host}/fleet/{DERIVATIVE}",
                StoreOptions(insecure=True),
            )
            base = base_entries(args.base_mib)
            print(f"building images: base {args.base_mib} MiB, overlay {args.overlay_kib} KiB")
            fleet.release("1.0.0", [base, overlay_entries(args.overlay_kib, "one")])
            with StaticServer(fleet.public_dir) as index_server:
                root = work / "device"
                agent = DeviceAgent(root)
                started = time.monotonic()
                agent.install(fleet.setup(index_server.url, checks=()), recovery=False)
                install_seconds = time.monotonic() - started

                _, v2 = fleet.release("1.1.0", [base, overlay_entries(args.overlay_kib, "two")])
                index_server.reset_log()
                started = time.monotonic()
                report = agent.upgrade()
                upgrade_seconds = time.monotonic() - started
                index_bytes = index_server.bytes_sent()
                index_requests = len(index_server.requests)
                agent.boot_check()

                full = v2.size
                changed = v2.layers[-1].size
                layer_bytes = report.cache.bytes_downloaded
                registry_bytes = report.registry_bytes
                total = registry_bytes + index_bytes

                wall: list[float] = []
                requests: list[int] = []
                sent: list[int] = []
                for _ in range(args.checks):
                    index_server.reset_log()
                    started = time.monotonic()
                    result = agent.check()
                    wall.append(time.monotonic() - started)
                    assert result.choice.release is None
                    requests.append(len(index_server.requests))
                    sent.append(index_server.bytes_sent())
                index_server.reset_log()
                started = time.monotonic()
                subprocess.run(
                    [sys.executable, "-m", "cosgitops", "device", "check", "--root", str(root)],
                    check=True,
                    capture_output=True,
                )
                cli_seconds = time.monotonic() - started
                cli_requests = len(index_server.requests)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("upgrade 1.0.0 -> 1.1.0 (one overlay file changed)")
    print(f"  full image (all layers, compressed)   {human(full):>12}")
    print(f"  changed layer (compressed)            {human(changed):>12}")
    print(
        f"  layers downloaded                     {human(layer_bytes):>12}  "
        f"({len(report.cache.downloaded)} layer, {len(report.cache.reused)} reused)"
    )
    print(
        f"  all registry bytes (+manifests, sigs) {human(registry_bytes):>12}  "
        f"({report.registry_requests} requests)"
    )
    print(
        f"  index bytes (TUF metadata, release)   {human(index_bytes):>12}  "
        f"({index_requests} requests)"
    )
    print(f"  total downloaded                      {human(total):>12}")
    print(f"  layers / changed layer                {layer_bytes / changed:>12.3f}x")
    print(
        f"  total / changed layer                 {total / changed:>12.3f}x   "
        f"target <= {TARGET_RATIO}x: {'met' if total / changed <= TARGET_RATIO else 'MISSED'}"
    )
    print(
        f"  total / full image                    {total / full:>12.4f}x   "
        f"(a device without the layer cache: 1.000x+)"
    )
    print(
        f"  upgrade wall time                     {upgrade_seconds:>11.2f}s   "
        f"(install of 1.0.0: {install_seconds:.2f}s)"
    )
    print()
    print(f"check with nothing new ({args.checks} runs, in-process)")
    print(f"  requests                              {statistics.median(requests):>12.0f}")
    print(f"  bytes                                 {statistics.median(sent):>12.0f}")
    print(
        f"  wall time median / max               {statistics.median(wall) * 1000:>9.1f} ms"
        f" / {max(wall) * 1000:.1f} ms"
    )
    print(
        f"  `cosgitops device check` command      {cli_seconds * 1000:>9.1f} ms  "
        f"({cli_requests} requests, interpreter start-up included)"
    )
    return 0 if total / changed <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
