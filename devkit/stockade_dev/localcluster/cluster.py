"""A real single-node super cluster: the test bed's control plane plus a node (containerd with runc
and gVisor, the kubelet, kube-proxy, CNI bridge), cluster DNS, local volumes and images.

`SuperCluster.start()` is used in-process by `stockade up` and by the detached supervisor of
`python -m stockade_dev.localcluster up`; both stop it with `stop()`, which also restores the host.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from stockade import certificates as certs
from stockade import pki
from stockade.config import ETCD_IMAGE_TAGS
from stockade_dev.localcluster import host, images, operator_image, registry
from stockade_dev.localcluster import node as n
from stockade_dev.testbed.binaries import (
    REPO_ROOT,
    cache_root,
    find_binary,
    pinned_versions,
    previous_testbin_dir,
    testbin_dir,
)
from stockade_dev.testbed.controlplane import LocalControlPlane
from stockade_dev.testbed.kubectl import Kubectl, Step
from stockade_dev.testbed.process import OWNER_ENV

ADDONS = REPO_ROOT / "e2e" / "addons"
PAUSE_SOURCE = REPO_ROOT / "e2e" / "images" / "pause.c"
# Stockade's network gate (images/netgate), built here the way its Dockerfile builds it.
NETGATE_SOURCE = REPO_ROOT / "images" / "netgate" / "netgate.c"
NETGATE_IMAGE = "stockade.local/netgate:0.2.0"
KUBELET_SOURCE = REPO_ROOT / "images" / "kubelet"
KUBELET_IMAGE = "stockade.local/kubelet:0.1.0"
# An image only a tenant holding the pull secret may run (see `registry`); the same busybox inside.
LICENSED_IMAGE = f"{registry.PRIVATE_HOST}/e2e/licensed:1"
REGISTRY = "registry.k8s.io"
# A workload image for tests: Debian's static busybox (sh, wget, nc, nslookup, httpd).
WORKLOAD_IMAGE = "stockade.local/e2e/busybox:1.35"
BUSYBOX = Path("/bin/busybox")
# What a test workload's container sets to pass Pod Security `restricted` (the tenants' default).
RESTRICTED_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": images.NONROOT_UID,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
VOLUME_POOL = 24
REQUIRED_COMMANDS = ("containerd", "ctr", "runc", "iptables", "nft", "ipset", "ip", "gcc", "conntrack")
NODE_READY_TIMEOUT = 120


class LocalClusterError(RuntimeError):
    pass


def host_ip() -> str:
    """The address of the default route's interface: where pods reach the API server."""
    routes = json.loads(subprocess.run(["ip", "-j", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout)
    if not routes or "prefsrc" not in routes[0]:
        raise LocalClusterError("no default route: cannot choose the node's address (ip route get 1.1.1.1)")
    return str(routes[0]["prefsrc"])


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LocalClusterError("not root: the local super cluster runs containerd, the kubelet and iptables")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if missing or not Path(n.CNI_BIN_DIR, "bridge").exists() or not BUSYBOX.exists():
        raise LocalClusterError(
            f"missing host packages ({', '.join(missing) or 'CNI plugins or busybox-static'}): run `e2e/install-deps`"
        )
    for name in ("kubelet", "kube-proxy", "kube-router", "runsc", "containerd-shim-runsc-v1", "coredns", "registry",
                 "metrics-server"):  # fmt: skip
        find_binary(name)
    find_binary("kube-apiserver", previous_testbin_dir())
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", n.APISERVER_PORT))
        except OSError as error:
            raise LocalClusterError(
                f"port {n.APISERVER_PORT} is taken ({error.strerror}): the local super cluster's API server "
                "serves there"
            ) from error


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def image_specs(pause: Path, netgate: Path, kubelet: Path) -> list[images.ImageSpec]:
    versions = pinned_versions()
    current, previous = versions["KUBERNETES_VERSION"], versions["PREVIOUS_KUBERNETES_VERSION"]
    bin_dir = testbin_dir()
    return [
        *images.control_plane_images(REGISTRY, current, ETCD_IMAGE_TAGS[_minor(current)], bin_dir),
        *images.control_plane_images(REGISTRY, previous, ETCD_IMAGE_TAGS[_minor(previous)], previous_testbin_dir()),
        images.ImageSpec(n.SANDBOX_IMAGE, {"/pause": pause}, entrypoint=("/pause",)),
        images.ImageSpec(
            f"{REGISTRY}/coredns/coredns:{versions['COREDNS_VERSION']}",
            {"/coredns": bin_dir / "coredns"},
            entrypoint=("/coredns",),
        ),
        images.busybox_image(WORKLOAD_IMAGE, BUSYBOX),
        images.ImageSpec(NETGATE_IMAGE, {"/netgate": netgate}, entrypoint=("/netgate",)),
        images.ImageSpec(KUBELET_IMAGE, {"/kubelet": kubelet}, entrypoint=("/kubelet",)),
        images.ImageSpec(
            f"{REGISTRY}/metrics-server/metrics-server:{versions['METRICS_SERVER_VERSION']}",
            {"/metrics-server": bin_dir / "metrics-server"},
            entrypoint=("/metrics-server",),
        ),
    ]


def ctr(layout: n.Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ctr` against the local cluster's containerd, in the namespace the kubelet uses."""
    result = subprocess.run(
        ["ctr", "--address", str(layout.containerd_socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise LocalClusterError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def import_operator_image(layout: n.Layout, out: Callable[[str], None] = print) -> str:
    """Build the operator's image (cached, see `operator_image`) and import it into the local
    cluster under the name manifests/operator.yaml runs; return that name."""
    archive = operator_image.build(cache_root() / "images", out)
    ctr(layout, "images", "import", "--no-unpack=false", str(archive))
    return operator_image.reference()


def static_binary(source: Path, target: Path) -> Path:
    """`source` (C) compiled static into `target`, again only when the source is newer."""
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-Os", "-static", "-s", "-o", str(target), str(source)], check=True)
    return target


def go_binary(module: Path, target: Path) -> Path:
    """The Go module at `module` (standard library only) built static into `target`, again only when
    a source is newer."""
    sources = [p for p in module.iterdir() if p.suffix == ".go" or p.name == "go.mod"]
    if not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(target), "."],
            cwd=module, check=True, env={**os.environ, "CGO_ENABLED": "0"},
        )  # fmt: skip
    return target


def volume_pool(layout: n.Layout, count: int) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"local-pv-{i:02d}"},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "local",
                "hostPath": {"path": str(layout.volumes / f"pv-{i:02d}"), "type": "DirectoryOrCreate"},
            },
        }
        for i in range(count)
    ]


class SuperCluster:
    def __init__(self, layout: n.Layout, owner: str, out: Callable[[str], None] = print):
        self.layout = layout
        self.owner = owner
        self.out = out
        self.plane: LocalControlPlane | None = None

    @property
    def owner_marker(self) -> bytes:
        return f"{OWNER_ENV}={self.owner}".encode()

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> SuperCluster:
        check_prerequisites()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        layout = self.layout
        host.take_snapshot(layout)
        for path in (layout.state, layout.run, layout.logs, layout.volumes):
            path.mkdir(parents=True, exist_ok=True)
        host.seal_mount(layout.volumes)
        try:
            raised = host.apply_sysctls()
        except host.HostLimitError as error:
            raise LocalClusterError(str(error)) from None
        for key, (before, after) in raised.items():
            self.out(f"raised {key.replace('/', '.')} from {before} to {after} (restored on teardown)")
        ip = host_ip()

        step = Step("egress fence: pods reach pods, Services and this host, never off the machine", self.out)
        subprocess.run(["nft", "-f", "-"], input=n.egress_fence(), text=True, check=True, capture_output=True)
        step.done(f"nftables table {' '.join(n.FENCE_TABLE)}")

        step = Step("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler", self.out)
        self.plane = LocalControlPlane(
            "super",
            owner=self.owner,
            controller_manager=True,
            scheduler=True,
            allow_privileged=True,
            root=layout.state,
            host_ip=ip,
            apiserver_port=n.APISERVER_PORT,
            service_cidr=n.SERVICE_CIDR,
            # Only for its deleter: volumes of the pool are removed when their claim is deleted.
            extra_controller_manager_args=["--enable-hostpath-provisioner=true"],
            # The node's name does not resolve on this machine; its address does (logs, exec).
            extra_apiserver_args=["--kubelet-preferred-address-types=InternalIP,Hostname"],
        )
        self.plane.start()
        shutil.copy(self.plane.kubeconfig_path, layout.kubeconfig)
        step.done(self.plane.server)

        step = Step("containerd with runc and gVisor (runsc)", self.out)
        self._start_containerd()
        step.done(f"socket {layout.containerd_socket}")

        step = Step("images: building OCI archives and importing them into containerd", self.out)
        self._import_images()
        step.done()

        step = Step("registries: the test images served to tenant pods (they always pull)", self.out)
        self._start_registries()
        step.done(", ".join(f"{r.host} at {r.address}" for r in registry.REGISTRIES))

        step = Step(f"node {n.NODE_NAME}: kubelet, kube-proxy, kube-router (NetworkPolicy)", self.out)
        self._start_node(ip)
        kubectl = Kubectl(layout.kubeconfig)
        self._wait(lambda: _node_ready(kubectl), NODE_READY_TIMEOUT, f"node {n.NODE_NAME} Ready", "kubelet")
        step.done()

        step = Step("add-ons: CoreDNS, metrics-server, RuntimeClass gvisor, local volumes, kube-router RBAC", self.out)
        kubectl("apply", "--server-side", "-f", str(ADDONS))
        kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(volume_pool(layout, VOLUME_POOL)))
        for pv in range(VOLUME_POOL):
            # Any non-root UID may write: tenant etcd runs as 65532 and hostPath ignores fsGroup.
            folder = layout.volumes / f"pv-{pv:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
        kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s", timeout=200)
        step.done()

    def _wait(self, check: Callable[[], bool], timeout: float, what: str, component: str) -> None:
        deadline = time.monotonic() + timeout
        assert self.plane is not None
        while time.monotonic() < deadline:
            if check():
                return
            for process in self.plane.processes:
                if not process.running():
                    raise LocalClusterError(f"{process.name} exited ({process.exit_code()}):\n{process.log_tail()}")
            time.sleep(1)
        logs = {p.name: p for p in self.plane.processes}
        tail = logs[component].log_tail() if component in logs else ""
        raise LocalClusterError(f"{what} not reached within {timeout:.0f}s; {component} log:\n{tail}")

    def _start_containerd(self) -> None:
        layout = self.layout
        assert self.plane is not None
        runsc = find_binary("runsc")
        platform, why = n.gvisor_platform(runsc)
        self.out(f"    gVisor platform {platform}: {why}")
        runsc_options = layout.state / "runsc.toml"
        runsc_options.write_text(n.runsc_config(runsc, layout, platform))
        config = layout.state / "containerd.toml"
        config.write_text(n.containerd_config(layout, runsc_options))
        n.write_json(layout.cni_conf_dir / "10-stockade-local.conflist", n.cni_conflist(layout))
        # containerd finds containerd-shim-runsc-v1 on its PATH; its pulls stay on this machine.
        env = {"PATH": f"{testbin_dir()}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               **registry.containerd_env()}  # fmt: skip
        self.plane.spawn("containerd", ["containerd", "--config", str(config)], env=env)
        self._wait(lambda: self._ctr("version", check=False).returncode == 0, 30, "containerd answering", "containerd")

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ctr(self.layout, *args, check=check)

    def _import_images(self) -> None:
        cache = cache_root() / "images"
        pause = static_binary(PAUSE_SOURCE, cache / "pause")
        netgate = static_binary(NETGATE_SOURCE, cache / "netgate")
        for spec in image_specs(pause, netgate, go_binary(KUBELET_SOURCE, cache / "kubelet")):
            archive = images.cached_archive(spec, cache)
            self._ctr("images", "import", "--no-unpack=false", str(archive))
            self.out(f"    {spec.reference}")

    def _start_registries(self) -> None:
        assert self.plane is not None
        configs = registry.write_files(self.layout.registry_dir, self.layout.registry_hosts_dir)
        host.add_hosts_entries(registry.HOSTS_ENTRIES)
        for reg in registry.REGISTRIES:
            self.plane.spawn(reg.name, [str(find_binary("registry")), "serve", str(configs[reg.name])])
            url = f"http://{reg.address}/v2/"
            self._wait(functools.partial(_answers, url), 30, f"{reg.name} answering", reg.name)
        cache = cache_root() / "images"
        for reference, reg in ((WORKLOAD_IMAGE, registry.OPEN), (LICENSED_IMAGE, registry.PRIVATE)):
            archive = images.cached_archive(images.busybox_image(reference, BUSYBOX), cache)
            name, tag = reference.removeprefix(f"{reg.host}/").rsplit(":", 1)
            registry.push(archive, reg, name, tag)
            self.out(f"    {reference}")

    def _start_node(self, ip: str) -> None:
        layout, plane = self.layout, self.plane
        assert plane is not None
        ca = plane.pki.cas[certs.CLUSTER_CA]
        node_client = pki.issue_certificate(
            ca,
            pki.CertificateRequest(f"system:node:{n.NODE_NAME}", organizations=("system:nodes",), client=True),
        )
        serving = pki.issue_certificate(
            ca,
            pki.CertificateRequest(
                n.NODE_NAME, server=True, dns_names=(n.NODE_NAME, "localhost"), ip_addresses=(ip, "127.0.0.1")
            ),
        )
        proxy_client = pki.issue_certificate(ca, pki.CertificateRequest("system:kube-proxy", client=True))
        router_client = pki.issue_certificate(ca, pki.CertificateRequest("system:kube-router", client=True))
        layout.pki.mkdir(parents=True, exist_ok=True)
        for name, data in {
            "ca.crt": ca.cert_pem,
            "kubelet.crt": serving.cert_pem,
            "kubelet.key": serving.key_pem,
        }.items():
            (layout.pki / name).write_bytes(data)
            (layout.pki / name).chmod(0o600)
        kubelet_kubeconfig = plane.write_kubeconfig(
            "kubelet.kubeconfig", plane.kubeconfig_for(node_client, f"system:node:{n.NODE_NAME}")
        )
        proxy_kubeconfig = plane.write_kubeconfig(
            "kube-proxy.kubeconfig", plane.kubeconfig_for(proxy_client, "system:kube-proxy")
        )
        router_kubeconfig = plane.write_kubeconfig(
            "kube-router.kubeconfig", plane.kubeconfig_for(router_client, "system:kube-router")
        )
        config = n.write_json(
            layout.state / "kubelet.json",
            n.kubelet_config(
                layout,
                client_ca=layout.pki / "ca.crt",
                serving_cert=layout.pki / "kubelet.crt",
                serving_key=layout.pki / "kubelet.key",
            ),
        )
        args = n.kubelet_args(layout, config=config, kubeconfig=kubelet_kubeconfig, node_ip=ip)
        plane.spawn("kubelet", [str(find_binary("kubelet")), *args])
        plane.spawn("kube-proxy", [str(find_binary("kube-proxy")), *n.kube_proxy_args(kubeconfig=proxy_kubeconfig)])
        plane.spawn("kube-router", [str(find_binary("kube-router")), *n.kube_router_args(kubeconfig=router_kubeconfig)])

    # -- stop ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process and give the host back as it was."""
        if self.plane is not None:
            self.plane.stop()
        host.restore(self.layout, self.owner_marker, log=lambda line: self.out(f"    {line}"))
        if self.plane is not None:
            shutil.rmtree(self.plane.dir, ignore_errors=True)


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` at all (any status, 401 included)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _node_ready(kubectl: Kubectl) -> bool:
    nodes = kubectl.json("get", "nodes").get("items", [])
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for item in nodes
        for c in item.get("status", {}).get("conditions", [])
    )
