"""A stage on a running system (root ``/``): what ``--root`` leaves alone is done here too,
the host name of the running kernel, sysctl values, users made in the system's own
/etc. The machine running the test is protected by namespaces: its own UTS, network,
PID and mount namespaces, with overlays over /etc, /home, /root and /srv and a fresh
/run, all thrown away when the test's process ends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.helpers.tools import require, require_root

CONFIG = """
stages:
  boot:
    - name: live
      hostname: live-test-host
      sysctl:
        net.ipv4.ip_default_ttl: "65"
      files:
        - path: /etc/cosgitops-live-test
          permissions: 0640
          content: live
      users:
        livetester: {shell: /bin/sh}
"""

# Runs inside the namespaces: sets the overlays up, runs the stage twice, reports.
INNER = """
import json, os, socket, subprocess, sys
from pathlib import Path

work = Path(sys.argv[1])
for name in ("etc", "home", "root", "srv"):
    upper, scratch = work / f"upper-{name}", work / f"work-{name}"
    upper.mkdir()
    scratch.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/{name},upperdir={upper},workdir={scratch}", f"/{name}"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
from cosgitops.stages.runner import run_stage

ttl = Path("/proc/sys/net/ipv4/ip_default_ttl")
before = {"hostname": socket.gethostname(), "ttl": ttl.read_text().strip()}
first = run_stage("boot", config_dirs=[work / "config"], default_dirs=False)
second = run_stage("boot", config_dirs=[work / "config"], default_dirs=False)
info = os.stat("/etc/cosgitops-live-test")
passwd = [line for line in Path("/etc/passwd").read_text().splitlines()
          if line.startswith("livetester:")]
print(json.dumps({
    "before": before,
    "first": [(s.status, [k.detail for k in s.kinds], s.error) for s in first.steps],
    "second": [s.status for s in second.steps],
    "live": first.live,
    "hostname": socket.gethostname(),
    "ttl": ttl.read_text().strip(),
    "sysctl_file": Path("/etc/sysctl.d/90-cosgitops.conf").read_text(),
    "mode": info.st_mode & 0o7777,
    "passwd": passwd,
    "record": sorted(os.listdir("/run/cosgitops/stages")),
}))
"""


def _inside(work: Path) -> dict[str, Any]:
    command = ["unshare", "--mount", "--uts", "--net", "--ipc", "--pid", "--fork",
               "--mount-proc", "--propagation", "private", sys.executable, "-c", INNER,
               str(work)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_a_stage_on_the_running_system(tmp_path: Path) -> None:
    require_root()
    require("unshare", "useradd")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "50_live.yaml").write_text(textwrap.dedent(CONFIG))
    host_name = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    host_passwd = Path("/etc/passwd").read_text()

    seen = _inside(tmp_path)

    assert seen["live"] is True
    [(status, details, error)] = seen["first"]
    assert (status, error) == ("applied", None)
    assert "host name set to live-test-host" in details[1]
    assert "net.ipv4.ip_default_ttl = 65" in details[2]
    assert seen["hostname"] == "live-test-host" != seen["before"]["hostname"]
    assert seen["ttl"] == "65" and seen["before"]["ttl"] != "65"
    assert "net.ipv4.ip_default_ttl = 65\n" in seen["sysctl_file"]
    assert seen["mode"] == 0o640
    assert len(seen["passwd"]) == 1 and seen["passwd"][0].endswith(":/bin/sh")
    assert seen["second"] == ["unchanged"]
    assert seen["record"] == ["boot.json"]
    # and the machine running the test saw none of it
    assert subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip() == host_name
    assert Path("/etc/passwd").read_text() == host_passwd
    assert not Path("/etc/cosgitops-live-test").exists()
