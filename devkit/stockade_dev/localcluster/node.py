"""The node half of the local super cluster: configuration (pure builders) for containerd, gVisor's
runsc, CNI and the kubelet, and the commands that start containerd, the kubelet and kube-proxy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.config import LEGACY_SERVICE_CIDR, OperatorConfig

NODE_NAME = "stockade-local"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.0.0.0/24"
DNS_SERVICE_IP = "10.0.0.10"
# The super API server's port, as kubeadm and kind serve it: what the operator's NetworkPolicy
# (manifests/operator.yaml) lets it reach, here as on a real cluster.
APISERVER_PORT = 6443
BRIDGE = "stk0"
# The nftables table that keeps every pod's traffic on this machine (`egress_fence`).
FENCE_TABLE = ("inet", "stockade_fence")
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
# Debian's containerd-shim-runc-v2, runc, and CNI plugins.
CNI_BIN_DIR = "/usr/lib/cni"
GVISOR_RUNTIME_HANDLER = "runsc"


@dataclass(frozen=True)
class Layout:
    """Every place on the host the local cluster writes to; `down` removes all of them."""

    state: Path = Path("/var/lib/stockade-local")
    run: Path = Path("/run/stockade-local")
    # Under /tmp: the controller-manager's hostPath deleter only removes volumes below /tmp.
    volumes: Path = Path("/tmp/stockade-local-volumes")

    @classmethod
    def from_env(cls) -> Layout:
        root = os.environ.get("STOCKADE_LOCAL_ROOT")
        if not root:
            return cls()
        base = Path(root)
        return cls(state=base / "state", run=base / "run", volumes=Path("/tmp") / f"stockade-volumes-{base.name}")

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def registry_dir(self) -> Path:
        return self.state / "registry"

    @property
    def registry_hosts_dir(self) -> Path:
        """containerd's `config_path`: one hosts.toml per registry host."""
        return self.state / "certs.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.state / "kubelet"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig."""
        return self.state / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    def owned_paths(self) -> tuple[Path, ...]:
        return (self.state, self.run, self.volumes)


def gvisor_platform(runsc: Path, timeout: float = 20.0) -> tuple[str, str]:
    """`kvm` if gVisor really runs a process on it here, else `systrap`; and why.

    An openable /dev/kvm is not enough: in some nested VMs the KVM platform boots and then never
    runs the workload, so this runs `/bin/true` in a throwaway sandbox and waits for it."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return "systrap", f"/dev/kvm unusable ({error.strerror})"
    os.close(fd)
    with tempfile.TemporaryDirectory(prefix="stockade-runsc-probe-") as root:
        argv = [str(runsc), f"--root={root}", "--platform=kvm", "--network=none", "do", "/bin/true"]
        probe = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            code = probe.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
            return "systrap", f"the KVM platform did not run /bin/true within {timeout:.0f}s"
    return ("kvm", "the KVM platform runs") if code == 0 else ("systrap", f"the KVM platform failed (exit {code})")


# Every range a ClusterIP of this cluster comes from: its own, and the tenants' (the operator's
# Service pool, and the range of Tenants from before it).
SERVICE_RANGES = (SERVICE_CIDR, OperatorConfig.service_pool, LEGACY_SERVICE_CIDR)


def egress_fence(pod_cidr: str = POD_CIDR, service_ranges: tuple[str, ...] = SERVICE_RANGES) -> str:
    """An nftables script: a packet from a pod that the host would forward anywhere but to a pod is
    dropped (and counted). Service traffic is already translated to a pod's address when it is
    forwarded, and traffic to this host's own addresses (its API server, decoys bound on `lo`) is
    delivered, not forwarded; whatever else a pod sends — an unrouted ClusterIP, the gateway, the
    internet — would leave the machine. Installed before containerd starts, so no pod ever runs
    without it.

    The host's own processes (the API server calling an aggregated API or a webhook, the kubelet)
    reach Services the same way: kube-proxy translates the ClusterIP on the way out. A ClusterIP it
    has not translated — its rules not written yet, or no such Service — would follow the default
    route off the machine (seen: the API server's first call to metrics-server, made before
    kube-proxy's rules, answered by whatever is at the gateway, and kept alive): refused instead."""
    family, table = FENCE_TABLE
    ranges = ", ".join(service_ranges)
    return (
        f"table {family} {table} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        f'    ip saddr {pod_cidr} ip daddr != {pod_cidr} counter drop comment "pods never reach off this machine"\n'
        f'    meta nfproto ipv6 iifname "{BRIDGE}" counter drop\n'
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority filter - 10; policy accept;\n"
        f'    ip daddr {{ {ranges} }} counter reject comment "an untranslated ClusterIP never leaves this machine"\n'
        "  }\n"
        "}\n"
    )


def runsc_config(runsc: Path, layout: Layout, platform: str) -> str:
    """containerd-shim-runsc-v1's options file (TOML): which runsc, where its state lives, its flags."""
    return "\n".join(
        [
            f'binary_name = "{runsc}"',
            f'root = "{layout.run / "runsc"}"',
            "[runsc_config]",
            f'  platform = "{platform}"',
            "",
        ]
    )


def containerd_config(layout: Layout, runsc_options: Path) -> str:
    """containerd 1.6 (config version 2): CRI with runc (the node's own pods) and gVisor's shim as
    runtime handler `runsc` (the sandboxes)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runtimes = f"{cri}.containerd.runtimes"
    gvisor = f"{runtimes}.{GVISOR_RUNTIME_HANDLER}"
    return "\n".join(
        [
            "version = 2",
            f'root = "{layout.state / "containerd"}"',
            f'state = "{layout.run / "containerd"}"',
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            f"[{cri}]",
            f'  sandbox_image = "{SANDBOX_IMAGE}"',
            "  enable_selinux = false",
            # Pods ask for negative OOM scores (the pause container: -998); lowering a score needs
            # CAP_SYS_RESOURCE, which some hosts (this VM) withhold even from root.
            "  restrict_oom_score_adj = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{runtimes}.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{runtimes}.runc.options]",
            "  SystemdCgroup = false",
            f"[{gvisor}]",
            '  runtime_type = "io.containerd.runsc.v1"',
            f"[{gvisor}.options]",
            '  TypeUrl = "io.containerd.runsc.v1.options"',
            f'  ConfigPath = "{runsc_options}"',
            f"[{cri}.registry]",
            f'  config_path = "{layout.registry_hosts_dir}"',
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.cni_conf_dir}"',
            "",
        ]
    )


def cni_conflist(layout: Layout) -> dict[str, Any]:
    """One bridge with host-local addresses, masquerade to the outside, hairpin for Services."""
    return {
        "cniVersion": "1.0.0",
        "name": "stockade-local",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.state / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: Layout, *, client_ca: Path, serving_cert: Path, serving_key: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "readOnlyPort": 0,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(layout.logs / "pods"),
        "failSwapOn": False,
        "serializeImagePulls": False,
        # Locally imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "maxPods": 110,
        "healthzBindAddress": "127.0.0.1",
    }


def kubelet_args(layout: Layout, *, config: Path, kubeconfig: Path, node_ip: str) -> list[str]:
    return [
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_dir}",
        f"--cert-dir={layout.kubelet_dir / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={node_ip}",
        "--v=1",
    ]


def kube_proxy_args(*, kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={CLUSTER_CIDR}",
        # Leave the host's conntrack sysctls alone (they are restored by nobody otherwise).
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0s",
        "--conntrack-tcp-timeout-close-wait=0s",
        "--metrics-bind-address=127.0.0.1:10249",
        "--healthz-bind-address=127.0.0.1:10256",
        "--v=1",
    ]


def kube_router_args(*, kubeconfig: Path) -> list[str]:
    """kube-router as a NetworkPolicy enforcer only: no routing, no service proxy, no CNI."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--health-port=20244",
        "--v=1",
    ]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
