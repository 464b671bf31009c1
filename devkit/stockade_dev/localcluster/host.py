"""What the local super cluster changes on the host, recorded before and undone after.

`take_snapshot()` runs before anything starts and records the host's nftables tables (iptables
rules live there on Debian), ipsets, the sysctls the node needs, and the network namespaces and
links present.
`restore()` puts all of that back and removes every process, cgroup, mount, network device and
folder the cluster created. Both are idempotent; `restore()` works from the recorded snapshot even
when the process that took it was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stockade_dev.localcluster.node import BRIDGE, Layout

SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}
# Raised to at least these while the cluster runs (never lowered): the kubelet, containerd's CRI
# plugin, kube-proxy, CoreDNS and every control plane each take inotify instances, and with other
# Kubernetes processes on the machine Debian's default of 128 runs out ("too many open files").
SYSCTL_MINIMUMS = {
    "fs/inotify/max_user_instances": 1024,
    "fs/inotify/max_user_watches": 524288,
}
PROC_SYS = Path("/proc/sys")


class HostLimitError(Exception):
    """A kernel setting the cluster needs is too low and cannot be raised here."""


CGROUP_ROOT = Path("/sys/fs/cgroup")
# kubelet's pod cgroups (cgroupfs driver): everything below them belongs to the cluster.
POD_CGROUP = "kubepods"
NETNS_DIR = Path("/run/netns")
CONTAINERD_RUN = Path("/run/containerd")


@dataclass
class HostSnapshot:
    nft_tables: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ipsets: list[str] = field(default_factory=list)
    cni_state_existed: bool = False
    # containerd 1.6 puts shim sockets in /run/containerd/s whatever its configured state folder.
    containerd_run_existed: bool = False

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> HostSnapshot | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


def snapshot_path(layout: Layout) -> Path:
    # Outside the state folder, so a failed start that removes state still knows what to restore.
    return layout.run.parent / f"{layout.run.name}.host-snapshot.json"


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def nft_tables() -> list[str]:
    """`family name` of each nftables table, e.g. `ip nat`."""
    return [line.removeprefix("table ").strip() for line in _run("nft", "list", "tables").splitlines() if line]


def ipsets() -> list[str]:
    return _run("ipset", "list", "-n").split()


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def links() -> list[str]:
    return names_in(Path("/sys/class/net"))


def take_snapshot(layout: Layout) -> HostSnapshot:
    """Record the host; an existing snapshot (a start that never got torn down) is kept."""
    path = snapshot_path(layout)
    existing = HostSnapshot.load(path)
    if existing is not None:
        return existing
    taken = HostSnapshot(
        nft_tables=nft_tables(),
        sysctls={key: (PROC_SYS / key).read_text().strip() for key in [*SYSCTLS, *SYSCTL_MINIMUMS]},
        netns=names_in(NETNS_DIR),
        links=links(),
        ipsets=ipsets(),
        cni_state_existed=Path("/var/lib/cni").exists(),
        containerd_run_existed=CONTAINERD_RUN.exists(),
    )
    taken.save(path)
    return taken


def apply_sysctls(root: Path = PROC_SYS) -> dict[str, tuple[int, int]]:
    """Set SYSCTLS, and raise each of SYSCTL_MINIMUMS that is lower (restored on teardown from the
    snapshot). Returns what was raised: {key: (before, after)}. A limit that stays too low is a
    `HostLimitError` naming the setting, its value and the command that fixes it."""
    for key, value in SYSCTLS.items():
        (root / key).write_text(value)
    raised: dict[str, tuple[int, int]] = {}
    for key, minimum in SYSCTL_MINIMUMS.items():
        current = int((root / key).read_text().split()[0])
        if current >= minimum:
            continue
        try:
            (root / key).write_text(str(minimum))
        except OSError as error:
            name = key.replace("/", ".")
            raise HostLimitError(
                f"{name} is {current}, below the {minimum} the local cluster needs, and cannot be raised here "
                f"({error.strerror}); as root on the host: sysctl -w {name}={minimum}"
            ) from None
        raised[key] = (current, minimum)
    return raised


# -- teardown --------------------------------------------------------------------------------------


def _pids_where(matches: Callable[[str, bytes], bool]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if matches(cmdline, environ):
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int], grace: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cluster_processes(layout: Layout, owner_marker: bytes) -> list[int]:
    """The supervisor's children (tagged in their environment) and containerd's shims and runsc
    processes (which name the cluster's socket or state folders on their command line)."""
    paths = [str(p) for p in layout.owned_paths()]

    def belongs(cmdline: str, environ: bytes) -> bool:
        return bool(owner_marker and owner_marker in environ.split(b"\0")) or any(p in cmdline for p in paths)

    return _pids_where(belongs)


def pod_cgroups() -> list[Path]:
    """Every cgroup below `kubepods`, in every v1 hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / POD_CGROUP
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pod_processes() -> None:
    """Containers outlive the kubelet and containerd: end every process in a pod cgroup."""
    for _ in range(3):
        pids: set[int] = set()
        for cgroup in pod_cgroups():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        if not pids:
            return
        kill_all(sorted(pids), grace=2.0)


def remove_pod_cgroups() -> None:
    for cgroup in pod_cgroups():
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def mount_options(path: Path) -> set[str] | None:
    """The options of the mount at exactly `path` (the last one stacked there), or None."""
    found = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1].replace("\\040", " ") == str(path):
            found = set(fields[3].split(","))
    return found


def seal_mount(path: Path) -> None:
    """`path` becomes its own mount with `nosuid,nodev`: a setuid binary or device node that a
    tenant writes into a local volume is inert for the host. Idempotent."""
    options = mount_options(path)
    if options is not None and {"nosuid", "nodev"} <= options:
        return
    if options is None:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,nosuid,nodev", str(path)], check=True, capture_output=True)


ETC_HOSTS = Path("/etc/hosts")
HOSTS_MARKER = "# stockade-local"


def add_hosts_entries(entries: dict[str, str], path: Path = ETC_HOSTS) -> None:
    """Name → address lines in /etc/hosts, each marked so `remove_hosts_entries` finds it. Idempotent."""
    kept = [line for line in path.read_text().splitlines() if not line.endswith(HOSTS_MARKER)]
    added = [f"{address} {name} {HOSTS_MARKER}" for name, address in sorted(entries.items())]
    path.write_text("\n".join([*kept, *added]) + "\n")


def remove_hosts_entries(path: Path = ETC_HOSTS) -> None:
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not line.endswith(HOSTS_MARKER)]
    if kept != lines:
        path.write_text("\n".join(kept) + "\n")


def unmount_below(prefixes: list[Path]) -> None:
    """Lazily unmount every mount point below `prefixes`, deepest first (repeat for stacked mounts)."""
    for _ in range(5):
        targets = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mount_point = line.split()[1].replace("\\040", " ")
            if any(mount_point == str(p) or mount_point.startswith(f"{p}/") for p in prefixes):
                targets.append(mount_point)
        if not targets:
            return
        for target in sorted(set(targets), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def restore(layout: Layout, owner_marker: bytes, log: Callable[[str], None] = print) -> None:
    """Undo everything the local cluster did to this host (idempotent)."""
    snap = HostSnapshot.load(snapshot_path(layout))
    kill_all(cluster_processes(layout, owner_marker))
    kill_pod_processes()
    kill_all(cluster_processes(layout, owner_marker), grace=2.0)  # shims that respawned nothing
    log("processes stopped")

    new_netns = [n for n in names_in(NETNS_DIR) if n.startswith("cni-")]
    if snap is not None:
        new_netns = [n for n in new_netns if n not in snap.netns]
    unmount_below([*layout.owned_paths(), *(NETNS_DIR / n for n in new_netns)])
    for name in new_netns:
        with contextlib.suppress(FileNotFoundError):
            (NETNS_DIR / name).unlink()
    if snap is not None and not snap.netns and NETNS_DIR.exists() and not names_in(NETNS_DIR):
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()
    remove_pod_cgroups()
    remove_hosts_entries()
    log("mounts, network namespaces, pod cgroups and /etc/hosts entries removed")

    before_links = set(snap.links) if snap is not None else set()
    for link in links():
        if link == BRIDGE or (snap is not None and link not in before_links and link.startswith("veth")):
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
    if snap is not None:
        for table in nft_tables():
            if table not in snap.nft_tables:
                subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True, check=False)
        for ipset in ipsets():  # kube-router's; only once no firewall rule refers to them
            if ipset not in snap.ipsets:
                subprocess.run(["ipset", "destroy", ipset], capture_output=True, check=False)
        for key, value in snap.sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)
        if not snap.cni_state_existed:
            shutil.rmtree("/var/lib/cni", ignore_errors=True)
        if not snap.containerd_run_existed:
            unmount_below([CONTAINERD_RUN])
            shutil.rmtree(CONTAINERD_RUN, ignore_errors=True)
    log("network devices, firewall tables and sysctls restored")

    for path in layout.owned_paths():
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        snapshot_path(layout).unlink()
    log("state folders removed")
