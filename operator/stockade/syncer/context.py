"""What the syncer knows of one tenant (`TenantContext`), and the network gate every super pod
starts behind (`NetGate`). Pure data, set once when the tenant's syncer starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade import naming
from stockade.model import DEFAULT_VOLUME_TYPES

# The names Stockade adds to super pods start with this; a tenant pod may not use it.
RESERVED_PREFIX = "stockade-"
# The init container Stockade puts first in every super pod (see `NetGate`); hidden from the tenant.
NETGATE_CONTAINER = f"{RESERVED_PREFIX}netgate"
# The volume the gate writes the pod's hosts file into, mounted as /etc/hosts in the pod's containers.
HOSTS_VOLUME = f"{RESERVED_PREFIX}hosts"
HOSTS_DIR = "/stockade-hosts"
HOSTS_FILE = "hosts"


@dataclass(frozen=True)
class NetGate:
    """An init container that holds a pod's own containers back until its NetworkPolicy is enforced.

    NetworkPolicy engines program a new pod's rules a moment after its network exists (kube-router:
    about a second); whatever runs in that window is unpoliced, and a connection it opens may
    outlive the policy. The gate needs no help from the CNI: it starts first, in the pod's own
    sandbox and network, and exits only once a destination the policy forbids (`deny`: the super
    cluster's API server) no longer answers while one it allows (`allow`: the tenant's API server)
    does. A pod whose policy never arrives never runs the tenant's code.

    Given `hosts_rename` (the pod's name in the super namespace, its name in the tenant's), it also
    writes the pod's hosts file as the tenant's own kubelet would, into `HOSTS_VOLUME`: the super
    kubelet names a pod with a subdomain `<host>.<subdomain>.<super namespace>.svc.<domain>`.
    """

    image: str
    deny: tuple[str, ...]  # host:port
    allow: tuple[str, ...]
    seconds: int = 120

    def container(self, hosts_rename: tuple[str, str] | None = None) -> dict[str, Any]:
        hosts_args: list[str] = []
        mounts: dict[str, Any] = {}
        if hosts_rename:
            hosts_args = [f"--hosts-file={HOSTS_DIR}/{HOSTS_FILE}", "--hosts-rename={}={}".format(*hosts_rename)]
            mounts = {"volumeMounts": [{"name": HOSTS_VOLUME, "mountPath": HOSTS_DIR}]}
        return {
            "name": NETGATE_CONTAINER,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "args": [*(f"--deny={d}" for d in self.deny), *(f"--allow={a}" for a in self.allow),
                     f"--seconds={self.seconds}", *hosts_args],
            **mounts,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "16Mi"}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }  # fmt: skip


@dataclass(frozen=True)
class TenantContext:
    """What translation needs to know about the tenant."""

    tenant: str
    runtime_class: str
    pod_security: str  # "restricted" or "baseline"
    apiserver_host: str  # the tenant API server, as reachable from tenant pods (its Service ClusterIP)
    apiserver_port: int
    default_requests: Mapping[str, str]
    default_limits: Mapping[str, str]
    virtual_node: str
    virtual_node_ip: str = naming.NO_KUBELET_ADDRESS  # see `naming.virtual_node_ip`
    volume_types: frozenset[str] = frozenset(DEFAULT_VOLUME_TYPES)
    # The Tenant's own placement (superuser-set): the only nodeSelector and tolerations super pods get.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    # The tenant's Service range (its block of the pool): a tenant Service keeps its ClusterIP in
    # the super cluster, and only an address of this range is ever asked for there.
    service_range: str = ""
    # The tenant's cluster DNS servers (never the super cluster's).
    dns_servers: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    netgate: NetGate | None = None
    config_bytes: int = 16 * 2**20  # budget of synced ConfigMap and Secret data

    @property
    def namespace(self) -> str:
        return naming.workloads_namespace(self.tenant)


def parse_bytes(quantity: str) -> int:
    """A Kubernetes quantity of bytes (`16Mi`, `20M`, `1048576`) as an integer."""
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in suffixes.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))
