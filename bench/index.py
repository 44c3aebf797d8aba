#!/usr/bin/env python3
"""The release index at fleet scale: publish time and one device's refresh bytes.

Builds the index for N derivatives x R releases (default 1,000 x 20) with
``publish_releases`` (R waves of N releases, as a fleet's history accumulates), then
measures in the same run:

* publish time: the whole history, one incremental release into the full index (what
  CI does per merge), a yank, and a scheduled ``refresh``;
* one device's refresh through python-tuf's stock ``ngclient.Updater`` over HTTP on
  127.0.0.1 (bytes from the server's request log): cold (bootstrapped from
  ``1.root.json``), warm after a release of another derivative, warm after a release
  of its own derivative, and warm after a refresh;
* the same cold refresh against two other layouts built from the same releases and
  keys, side by side: one flat targets role holding every release, and top-level
  targets delegating straight to one role per derivative (DESIGN.md's first sketch).

Target (issue 5): one device's refresh downloads at most 64 KB of metadata.

    .venv/bin/python bench/index.py [--derivatives 1000] [--releases 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuf.ngclient.config import UpdaterConfig  # noqa: E402
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher  # noqa: E402

from cosgitops import model  # noqa: E402
from cosgitops.publish import paths  # noqa: E402
from cosgitops.publish.listing import LISTING_NAME, listing_target_path  # noqa: E402
from cosgitops.publish.publisher import open_index, publish_releases, refresh, yank  # noqa: E402
from cosgitops.publish.rolekeys import KeyRing  # noqa: E402
from cosgitops.publish.tufapi import (  # noqa: E402
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from cosgitops.publish.tufrepo import release_targets, serializer  # noqa: E402
from tests.helpers.services import StaticServer  # noqa: E402
from tests.publish import factory  # noqa: E402

KB = 1000
TARGET_BYTES = 64 * 1024


def derivative_name(number: int) -> str:
    # 12 characters, like DESIGN.md's "edge-gateway". The snapshot lists every role, so
    # each extra character of average name length adds about N bytes to every refresh.
    return f"gateway-{number:04d}"


def release(number: int, wave: int) -> model.ReleaseManifest:
    name = derivative_name(number)
    return factory.manifest(
        name,
        f"1.{wave}.0",
        channels=("stable",) if wave % 4 else ("stable", "beta"),
        upgrade_from=">=1.0.0" if wave else None,
        rollout=model.Rollout(10, 2880),
        display_name=f"Site {number} gateway",
    )


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    outcome = action()
    return time.perf_counter() - began, outcome


class CountingFetcher(Urllib3Fetcher):
    """python-tuf's own HTTP fetcher, counting the body bytes it receives per URL (the
    server's log is written after the response, so it can trail the client)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in super()._fetch(url):
                received += len(chunk)
                yield chunk
        finally:
            self.log.append((url, received))


def _counted(url: str) -> bool:
    return "/metadata/" in url or url.endswith("." + LISTING_NAME)


class Device:
    """A device with a persistent metadata cache, looking up its own releases."""

    def __init__(self, public: Path, server: StaticServer, workdir: Path, derivative: str):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.fetcher = CountingFetcher()
        self.client = factory.Client(public, server.url, workdir, fetcher=self.fetcher)
        self.derivative = derivative
        self.log: list[tuple[str, int]] = []

    def refresh(self, versions: Sequence[str]) -> int:
        """Bytes one refresh downloads as the agent does it: the metadata, the release
        listing (when it changed) and a lookup of ``versions``."""
        self.fetcher.log.clear()
        updater = self.client.refresh()
        listing = updater.get_targetinfo(listing_target_path(self.derivative))
        if listing is not None:
            local = self.workdir / f"{self.derivative}.versions.json"
            if updater.find_cached_target(listing, str(local)) is None:
                updater.download_target(listing, str(local))
        for version in versions:
            info = updater.get_targetinfo(paths.release_target_path(self.derivative, version))
            assert info is not None, version
        self.log = [(url.rsplit("/", 1)[-1], n) for url, n in self.fetcher.log]
        return sum(n for url, n in self.fetcher.log if _counted(url))


def cold_bytes_per_device(public: Path) -> dict[str, int]:
    """For every derivative: the metadata a cold refresh of its device downloads
    (timestamp, snapshot, targets, its shard, its role), from the file sizes."""
    index = open_index(public).index
    folder = public / "metadata"

    def size(role: str) -> int:
        version = index.role_version(role)
        return (folder / paths.metadata_file(role, version)).stat().st_size

    assert index.snapshot is not None
    common = (folder / "timestamp.json").stat().st_size + size("targets")
    common += (
        (folder / paths.metadata_file("snapshot", index.snapshot.signed.version)).stat().st_size
    )
    shards = {shard: size(shard) for shard in paths.SHARD_ROLES}

    def listing(name: str) -> int:
        target = index.role(name).signed.targets.get(listing_target_path(name))
        return 0 if target is None else int(target.length)

    return {
        name: common + shards[paths.shard_role_for(name)] + size(name) + listing(name)
        for name in index.derivatives()
    }


# ---------------------------------------------------------------- alternative layouts


def _write(folder: Path, name: str, metadata: Metadata[Any]) -> None:
    (folder / name).write_bytes(metadata.to_bytes(serializer()))


def build_alternative(
    source: Path, destination: Path, ring: KeyRing, *, flat: bool, now: datetime
) -> None:
    """The same releases (targets, custom, keys) in a flat or a one-level layout."""
    index = open_index(source)
    metadata_dir = destination / "metadata"
    metadata_dir.mkdir(parents=True)
    shutil.copytree(source / "targets", destination / "targets")
    expires = now + timedelta(days=90)
    root = Root(expires=now + timedelta(days=365), consistent_snapshot=True)
    for role in paths.TOP_LEVEL_ROLES:
        root.add_key(ring.keys(role)[0].public, role)
    roles: dict[str, Metadata[Any]] = {}
    targets_key = ring.keys("targets")[0]
    if flat:
        top = Targets(expires=expires)
        for derivative in index.derivatives():
            top.targets.update({t.path: t for t in release_targets(index.index.role(derivative))})
    else:
        top = Targets(
            expires=expires,
            delegations=Delegations(keys={targets_key.keyid: targets_key.public}, roles={}),
        )
        assert top.delegations is not None and top.delegations.roles is not None
        for derivative in index.derivatives():
            top.delegations.roles[derivative] = DelegatedRole(
                derivative, [targets_key.keyid], 1, True, paths.derivative_paths(derivative)
            )
            roles[derivative] = Metadata(
                Targets(
                    expires=expires,
                    targets={t.path: t for t in release_targets(index.index.role(derivative))},
                )
            )
    roles["targets"] = Metadata(top)
    snapshot = Snapshot(expires=now + timedelta(days=7))
    snapshot.meta = {}
    for name, metadata in roles.items():
        metadata.sign(targets_key.signer())
        _write(metadata_dir, f"1.{name}.json", metadata)
        snapshot.meta[f"{name}.json"] = MetaFile(version=1)
    timestamp = Timestamp(expires=now + timedelta(days=1), snapshot_meta=MetaFile(version=1))
    for name, signed, role in (
        ("1.root.json", root, "root"),
        ("1.snapshot.json", snapshot, "snapshot"),
        ("timestamp.json", timestamp, "timestamp"),
    ):
        metadata = Metadata(signed)
        metadata.sign(ring.keys(role)[0].signer())
        _write(metadata_dir, name, metadata)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--derivatives", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="cosgitops-bench-index-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HOME", str(work))
    n, r = args.derivatives, args.releases
    repo_root = work / "repo"
    repo_root.mkdir()
    repository = factory.repository(repo_root)
    ring = factory.keyring(factory.role_keys())  # keys in memory: time the index, not scrypt
    now = datetime.now(UTC).replace(microsecond=0)
    public = repo_root / "public"

    print(f"index: {n} derivatives x {r} releases = {n * r} releases in {public}")
    wave_times = []
    for wave in range(r):
        batch = [release(i, wave) for i in range(n)]
        began = time.perf_counter()
        publish_releases(repository, batch, keyring=ring, now=now)
        wave_times.append(time.perf_counter() - began)
    history = sum(wave_times)
    me = derivative_name(min(7, n - 1))
    other = derivative_name(min(8, n - 1)) if n > 1 else me
    own_versions = [f"1.{w}.0" for w in range(r)]

    with StaticServer(public) as server:
        device = Device(public, server, work / "device", me)
        cold = device.refresh(own_versions)
        per_device = cold_bytes_per_device(public)
        assert per_device[me] == cold, (per_device[me], cold)  # the sizes add up to the log
        fleet = sorted(per_device.values())
        requests = [(name, sent) for name, sent in device.log if sent]

        one_seconds, _ = timed(
            lambda: publish_releases(
                repository, [factory.manifest(other, "2.0.0")], keyring=ring, now=now
            )
        )
        warm_other = device.refresh(own_versions)
        publish_releases(repository, [factory.manifest(me, "2.0.0")], keyring=ring, now=now)
        warm_own = device.refresh([*own_versions, "2.0.0"])
        yank_seconds, _ = timed(lambda: yank(repository, me, "2.0.0", reason="bench", keyring=ring))
        warm_yank = device.refresh(own_versions)
        refresh_seconds, _ = timed(
            lambda: refresh(repository, keyring=ring, now=now + timedelta(hours=6))
        )
        warm_refresh = device.refresh(own_versions)
        files = sum(1 for _ in public.rglob("*") if _.is_file())
        size = sum(p.stat().st_size for p in public.rglob("*") if p.is_file())

    layouts: dict[str, str] = {}
    for label, flat in (
        ("flat (one targets role)", True),
        ("one level (1 role/derivative)", False),
    ):
        folder = work / ("flat" if flat else "onelevel")
        build_alternative(public, folder, ring, flat=flat, now=now)
        sizes = {
            name: (folder / "metadata" / name).stat().st_size
            for name in ("timestamp.json", "1.snapshot.json", "1.targets.json")
        }
        if sizes["1.targets.json"] > UpdaterConfig().targets_max_length:
            # The stock client refuses a targets file over its limit outright.
            value = sum(sizes.values())
            limit = UpdaterConfig().targets_max_length
            layouts[label] = f"{value:10d} B  {value / cold:5.1f}x  (ngclient refuses > {limit} B)"
            continue
        with StaticServer(folder) as server:
            value = Device(folder, server, work / f"device-{folder.name}", me).refresh(own_versions)
            layouts[label] = f"{value:10d} B  {value / cold:5.1f}x"

    print("\npublish time")
    print(
        f"  history, {r} waves of {n}:        {history:8.1f} s "
        f"({history / (n * r) * 1000:.2f} ms per release, last wave {wave_times[-1]:.1f} s)"
    )
    print(f"  one release into the full index:  {one_seconds:8.2f} s")
    print(f"  yank one release:                 {yank_seconds:8.2f} s")
    print(f"  scheduled refresh (timestamp):    {refresh_seconds:8.2f} s")
    print(f"  index on disk: {files} files, {size / 1e6:.1f} MB")
    print("\none device's refresh (metadata bytes, stock ngclient over HTTP)")
    print(f"  cold, from 1.root.json:           {cold:8d} B  ({cold / 1024:.1f} KiB)")
    for path, sent in requests:
        print(f"      {path:40s} {sent:7d} B")
    print(
        f"  cold, every device of the fleet:  median {fleet[len(fleet) // 2]} B, "
        f"worst {fleet[-1]} B ({fleet[-1] / 1024:.1f} KiB)"
    )
    print(f"  warm, another derivative released:{warm_other:8d} B")
    print(f"  warm, its own derivative released:{warm_own:8d} B")
    print(f"  warm, after a yank of its own:    {warm_yank:8d} B")
    print(f"  warm, after a scheduled refresh:  {warm_refresh:8d} B")
    print("\nlayouts side by side (cold refresh of the same device)")
    print(f"  sharded (cosgitops):              {cold:10d} B  1.00x")
    for label, text in layouts.items():
        print(f"  {label + ':':34s}{text}")
    worst = max(fleet[-1], cold)
    verdict = "OK" if worst <= TARGET_BYTES else "OVER"
    print(
        f"\ntarget: any device's refresh <= {TARGET_BYTES} B (64 KiB): worst {worst} B -> {verdict}"
    )
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if worst <= TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
