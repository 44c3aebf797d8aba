"""Every step kind applied to a real Debian root, its effect checked on disk, and a
second run that changes nothing."""

from __future__ import annotations

import base64
import gzip
import os
import stat
from pathlib import Path

from cosgitops.stages import crypt
from tests.stages.conftest import Stage, statuses, tree_state

ALICE_HASH = (
    "$6$saltsalt$"
    + "Bq0vzqTAYCHGqOXH9Le8Jg0m1hBh0nIuVkfgD6J6l2OAIxtflmv"
    + ("MbJh0wEZ.hJtqLSn1cPn2Dp81M0H4W9oo21")
)
ALICE_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBzqjjQNzYaW0dk4A2v7HuKqKYO6SQ3YCPhLhTb0uZ2F alice@laptop"
)
ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHK8PQGgLHf2zjY6CI2n2JsAKv7OBqWLEVYH7EMz0k3p ops@ci"

ENCODED = base64.b64encode(b"encoded\x00binary\n").decode()
COMPRESSED = base64.b64encode(gzip.compress(b"compressed text\n" * 50, mtime=0)).decode()

EVERY_KIND = f"""
name: Every kind
stages:
  boot:
    - name: Groups
      ensure_entities:
        - entity: |
            kind: group
            group_name: admins
            password: x
            gid: 900
    - name: Folders
      directories:
        - path: /srv/data/deep
          permissions: 0750
          owner: 0
          group: 900
    - name: Users
      users:
        alice:
          passwd: "{ALICE_HASH}"
          groups: [sudo, admins]
          shell: /bin/bash
          gecos: Alice Example
          ssh_authorized_keys: ["{ALICE_KEY}"]
        bob:
          passwd: plain-secret
          homedir: /home/robert
        carol:
          lock_passwd: true
          system: true
          no_create_home: true
    - name: Files
      files:
        - path: /etc/cosgitops/hello.txt
          permissions: 0640
          owner: 0
          group: 900
          content: |
            hello from {{{{ .Values.os.vendor }}}}
        - path: /etc/cosgitops/encoded.bin
          permissions: 0600
          encoding: base64
          content: {ENCODED}
        - path: /etc/cosgitops/compressed.txt
          permissions: 0644
          encoding: gz+base64
          content: {COMPRESSED}
        - path: /home/alice/notes.txt
          permissions: 0600
          ownerstring: alice:admins
          content: mine
    - name: Commands
      commands:
        - "[ -e /srv/marker ] || echo made > /srv/marker"
        - test -d /srv/data/deep
    - name: Host
      hostname: edge-{{{{ trunc 4 .MachineID }}}}
      dns:
        nameservers: [192.0.2.53, 192.0.2.54]
        search: [example.internal]
        options: [edns0]
      sysctl:
        net.ipv4.ip_forward: "1"
        vm.swappiness: "10"
      modules:
        - dummy numdummies=2
      timesyncd:
        NTP: ntp.example.internal
    - name: Keys
      authorized_keys:
        root: ["{ROOT_KEY}"]
    - name: Units
      systemctl:
        enable: [systemd-networkd.service]
        disable: [e2scrub_reap.service]
        mask: [e2scrub_all.service]
        overrides:
          - service: systemd-networkd
            content: |
              [Service]
              Environment=SYSTEMD_LOG_LEVEL=debug
    - name: Environment
      environment:
        HTTP_PROXY: http://proxy.example.internal:3128
        RETRIES: "3"
    - name: Own environment file
      environment_file: /etc/cosgitops/env
      environment:
        MODE: edge
    - name: First boot
      systemd_firstboot:
        locale: C.UTF-8
    - name: Drop a group
      delete_entities:
        - entity: |
            kind: group
            group_name: games
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _owner(path: Path) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def _line(root: Path, file: str, name: str) -> list[str]:
    for line in (root / file.lstrip("/")).read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in {file}")


def test_every_kind_applies_and_a_second_run_changes_nothing(stage: Stage, root: Path) -> None:
    first = stage(EVERY_KIND)
    assert first.ok, [(s.name, s.error) for s in first.steps if s.error]
    assert all(status == "applied" for _, status in statuses(first)), statuses(first)

    # groups and folders
    assert _line(root, "/etc/group", "admins")[:3] == ["admins", "x", "900"]
    assert ":60:" not in (root / "etc/group").read_text()  # games, deleted
    deep = root / "srv/data/deep"
    assert _mode(deep) == _mode(deep.parent) == 0o750
    assert _owner(deep) == (0, 900)

    # users, made by useradd/chpasswd inside the root
    alice = _line(root, "/etc/passwd", "alice")
    assert alice[4:] == ["Alice Example", "/home/alice", "/bin/bash"]
    assert int(alice[2]) >= 1000
    assert _line(root, "/etc/shadow", "alice")[1] == ALICE_HASH
    assert "alice" in _line(root, "/etc/group", "sudo")[3].split(",")
    assert "alice" in _line(root, "/etc/group", "admins")[3].split(",")
    assert _line(root, "/etc/group", "alice")[2] == alice[3]  # own group, made by useradd
    bob = _line(root, "/etc/passwd", "bob")
    assert bob[5] == "/home/robert" and (root / "home/robert").is_dir()
    bob_hash = _line(root, "/etc/shadow", "bob")[1]
    assert bob_hash.startswith("$") and crypt.matches("plain-secret", bob_hash)
    carol = _line(root, "/etc/passwd", "carol")
    assert int(carol[2]) < 1000 and not (root / "home/carol").exists()
    assert _line(root, "/etc/shadow", "carol")[1] == "!"
    uid, gid = int(alice[2]), int(alice[3])
    ssh = root / "home/alice/.ssh"
    assert _mode(ssh) == 0o700 and _owner(ssh) == (uid, gid)
    keys = ssh / "authorized_keys"
    assert keys.read_text() == ALICE_KEY + "\n"
    assert _mode(keys) == 0o600 and _owner(keys) == (uid, gid)
    assert (root / "root/.ssh/authorized_keys").read_text() == ROOT_KEY + "\n"

    # files: content decoded and templated, modes and owners
    hello = root / "etc/cosgitops/hello.txt"
    assert hello.read_text() == "hello from debian\n"
    assert _mode(hello) == 0o640 and _owner(hello) == (0, 900)
    assert _mode(hello.parent) == 0o750  # a folder made for a file: searchable where readable
    assert (root / "etc/cosgitops/encoded.bin").read_bytes() == b"encoded\x00binary\n"
    assert (root / "etc/cosgitops/compressed.txt").read_text() == "compressed text\n" * 50
    notes = root / "home/alice/notes.txt"
    assert _owner(notes) == (uid, 900) and notes.read_text() == "mine"

    # commands ran inside the root
    assert (root / "srv/marker").read_text() == "made\n"

    # host, dns, sysctl, modules, timesyncd
    assert (root / "etc/hostname").read_text() == "edge-0123\n"
    assert "127.0.0.1 localhost edge-0123" in (root / "etc/hosts").read_text().splitlines()
    assert (root / "etc/resolv.conf").read_text() == (
        "search example.internal\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0\n"
    )
    sysctl = (root / "etc/sysctl.d/90-cosgitops.conf").read_text()
    assert "net.ipv4.ip_forward = 1\n" in sysctl and "vm.swappiness = 10\n" in sysctl
    assert "dummy\n" in (root / "etc/modules-load.d/cosgitops.conf").read_text()
    assert "options dummy numdummies=2\n" in (root / "etc/modprobe.d/cosgitops.conf").read_text()
    timesyncd = (root / "etc/systemd/timesyncd.conf.d/10-yip.conf").read_text()
    assert timesyncd == "[Time]\nNTP=ntp.example.internal\n"

    # systemd: the links systemctl itself made inside the root
    system = root / "etc/systemd/system"
    wants = system / "multi-user.target.wants"
    assert os.readlink(wants / "systemd-networkd.service").endswith("/systemd-networkd.service")
    assert not (wants / "e2scrub_reap.service").is_symlink()
    assert os.readlink(system / "e2scrub_all.service") == "/dev/null"
    override = system / "systemd-networkd.service.d/override-yip.conf"
    assert override.read_text() == "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug\n"

    # environment files, systemd-firstboot
    environment = (root / "etc/environment").read_text()
    assert 'HTTP_PROXY="http://proxy.example.internal:3128"\n' in environment
    assert "RETRIES=3\n" in environment
    assert (root / "etc/cosgitops/env").read_text() == 'MODE="edge"\n'
    # (Debian's systemd-firstboot writes /etc/default/locale)
    assert (root / "etc/default/locale").read_text().strip() == "LANG=C.UTF-8"

    # the second run finds everything in place: only the commands run again
    before = tree_state(root)
    second = stage()
    assert second.ok
    changed = [
        (s.name, s.status, [k.detail for k in s.kinds])
        for s in second.steps
        if s.status != "unchanged"
    ]
    assert [c[:2] for c in changed] == [("Commands", "applied")], changed
    assert tree_state(root) == before


def test_an_existing_user_gets_password_groups_and_shell_only(stage: Stage, root: Path) -> None:
    report = stage("""
        stages:
          boot:
            - users:
                dave: {shell: /bin/sh}
    """)
    assert report.ok
    uid = _line(root, "/etc/passwd", "dave")[2]
    report = stage(f"""
        stages:
          boot:
            - users:
                dave:
                  passwd: "{ALICE_HASH}"
                  groups: [sudo]
                  shell: /bin/bash
                  uid: 4321
    """)
    assert report.ok, report.steps[0].error
    dave = _line(root, "/etc/passwd", "dave")
    assert dave[2] == uid and dave[6] == "/bin/bash"
    assert _line(root, "/etc/shadow", "dave")[1] == ALICE_HASH
    assert "dave" in _line(root, "/etc/group", "sudo")[3].split(",")
    assert "left as they are" in report.steps[0].kinds[0].detail


def test_a_new_user_keeps_the_uid_of_its_persistent_home(stage: Stage, root: Path) -> None:
    """/etc is rebuilt on every boot of an immutable system while /home persists: the
    user made again must own its files again."""
    home = root / "home/erin"
    home.mkdir(parents=True)
    os.chown(home, 2345, 2345)
    assert stage("stages: {boot: [{users: {erin: {}}}]}").ok
    erin = _line(root, "/etc/passwd", "erin")
    assert erin[2:4] == ["2345", "2345"]
    assert _line(root, "/etc/group", "erin")[2] == "2345"


def test_shadow_entities_hash_plain_text_once(stage: Stage, root: Path) -> None:
    document = """
        stages:
          initramfs:
            - ensure_entities:
                - path: /etc/shadow
                  entity: |
                    kind: shadow
                    username: root
                    password: elemental
                    last_changed: now
    """
    assert stage(document, name="initramfs").ok
    hashed = _line(root, "/etc/shadow", "root")[1]
    assert hashed.startswith("$6$") and crypt.matches("elemental", hashed)
    before = tree_state(root)
    again = stage(name="initramfs")
    assert statuses(again) == [("step 1", "unchanged")]
    assert tree_state(root) == before


def test_sysctl_and_modules_merge_into_one_file(stage: Stage, root: Path) -> None:
    assert stage(
        "stages: {boot: [{sysctl: {a.b: '1'}, modules: [loop]}, "
        "{sysctl: {c.d: '2', a.b: '3'}, modules: [dummy]}]}"
    ).ok
    text = (root / "etc/sysctl.d/90-cosgitops.conf").read_text()
    assert text.splitlines()[1:] == ["a.b = 3", "c.d = 2"]
    modules = (root / "etc/modules-load.d/cosgitops.conf").read_text().splitlines()
    assert modules[1:] == ["loop", "dummy"]


def test_live_effects_are_left_alone_with_a_root(stage: Stage, root: Path) -> None:
    import socket

    name = socket.gethostname()
    report = stage("stages: {boot: [{hostname: elsewhere, systemctl: {start: [foo.service]}}]}")
    assert socket.gethostname() == name
    details = " ".join(kind.detail for kind in report.steps[0].kinds)
    assert "the running kernel is left alone" in details
    assert "start foo.service: needs the running system" in details


def test_remote_keys_are_skipped_with_the_reason(stage: Stage, root: Path) -> None:
    report = stage(
        "stages: {network: [{authorized_keys: {root: ['github:someone']}}]}", name="network"
    )
    step = report.steps[0]
    assert step.status == "skipped", step
    assert "github:someone" in step.reason and "needs the network" in step.reason
    assert report.ok


def test_kinds_that_need_the_network_or_packages_are_skipped(stage: Stage) -> None:
    report = stage("""
        stages:
          boot:
            - name: Fetch
              downloads: [{path: /tmp/x, url: "http://192.0.2.1/x"}]
              packages: {install: [htop]}
              git: {url: "https://192.0.2.1/r.git", path: /srv/r}
              unpack_images: [{source: "example/image:1", target: /srv/i}]
              datasource: {providers: [cdrom]}
              package_pins: {htop: "3.2"}
    """)
    step = report.steps[0]
    assert step.status == "skipped"
    assert {kind.kind: kind.status for kind in step.kinds} == dict.fromkeys(
        ("downloads", "git", "datasource", "package_pins", "packages", "unpack_images"),
        "skipped",
    )
    assert "needs the network" in step.reason and "changes packages" in step.reason
    assert report.ok


def test_cloud_init_files_are_translated_as_yip_does(stage: Stage, root: Path) -> None:
    document = f"""#cloud-config
hostname: ci-host
users:
  - name: frank
    passwd: "{ALICE_HASH}"
ssh_authorized_keys:
  - "{ALICE_KEY}"
write_files:
  - path: /etc/motd
    content: from cloud-init
    permissions: "0600"
runcmd:
  - echo ok > /srv/runcmd
"""
    assert stage(document, file="user-data.yaml").ok
    assert _line(root, "/etc/shadow", "frank")[1] == ALICE_HASH
    assert (root / "home/frank/.ssh/authorized_keys").read_text() == ALICE_KEY + "\n"
    assert (root / "etc/motd").read_text() == "from cloud-init"
    assert _mode(root / "etc/motd") == 0o600
    assert (root / "srv/runcmd").read_text() == "ok\n"
    assert stage(name="initramfs").ok
    assert (root / "etc/hostname").read_text() == "ci-host\n"


def test_what_validates_without_warnings_runs_without_failures(root: Path, tmp_path: Path) -> None:
    """The fixture holding every kind the runner applies: no warning from validate, no
    failed or skipped step here but the disk that is not there."""
    from cosgitops.stages.runner import run_stage
    from cosgitops.validate import validate_paths

    fixture = Path(__file__).parent.parent / "data/valid/cloud-config"
    path = fixture / "every-kind-the-runner-applies.yaml"
    assert validate_paths([path], as_kind="cloud-config").diagnostics == []
    outcomes = []
    for name in ("rootfs", "initramfs", "boot"):
        report = run_stage(name, root=root, config_dirs=[path], default_dirs=False)
        outcomes += [(s.name, s.status, s.reason or s.error) for s in report.steps]
    assert [o[:2] for o in outcomes] == [
        ("Grow persistent", "skipped"),
        ("Groups and host", "applied"),
        ("Everything else", "applied"),
    ], outcomes
    assert "admin" in _line(root, "/etc/group", "admin")[3].split(",")
