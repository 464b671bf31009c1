"""The operator's configuration, read once from the environment."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

# Addresses a tenant never reaches even with internet egress on: private ranges (other tenants,
# the super cluster's nodes and API server), link-local (cloud metadata 169.254.169.254), CGNAT.
NEVER_EGRESS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
)

# etcd image tag that kubeadm pairs with each Kubernetes minor.
ETCD_IMAGE_TAGS = {33: "3.5.21-0", 34: "3.6.4-0"}
# The Service range every tenant's API server had before Service ranges came from a pool; a Tenant
# provisioned then keeps it (its API server's ServiceCIDR lives in its etcd and cannot move).
LEGACY_SERVICE_CIDR = "10.96.0.0/12"
# The tenant DNS's CoreDNS (the release kubeadm 1.34 pairs with; `hack/testbin` builds the same).
COREDNS_VERSION = "v1.15.0"


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name)
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default


@dataclass(frozen=True)
class OperatorConfig:
    runtime_class: str = "kata"
    operator_namespace: str = "stockade-system"
    # Tenant Service ranges: each tenant gets its own block of `service_prefix` bits from this pool,
    # which the operator adds to the super cluster as a ServiceCIDR. A tenant Service then has the
    # same ClusterIP in both clusters, and the super cluster's own Service proxy routes it.
    service_pool: str = "10.112.0.0/12"
    service_prefix: int = 22
    never_egress: tuple[str, ...] = NEVER_EGRESS
    dns_namespace: str = "kube-system"
    dns_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    priority_class: str = "stockade-control-plane"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    # The network gate's image (`images/netgate`): first in every tenant pod, it holds the pod's own
    # containers back until the pod's NetworkPolicy is enforced, and writes a pod's hosts file with
    # its tenant name (0.2.0: `--hosts-file`, `--hosts-rename`; the syncer passes them).
    netgate_image: str = "ghcr.io/stockade-dev/netgate:0.2.0"
    # The virtual node's kubelet API (`images/kubelet`): one per tenant, in its control-plane namespace.
    kubelet_image: str = "ghcr.io/stockade-dev/kubelet:0.1.0"

    def __post_init__(self) -> None:
        try:
            pool = ipaddress.ip_network(self.service_pool)
        except ValueError as error:
            raise ValueError(f"STOCKADE_TENANT_SERVICE_POOL: {self.service_pool!r} is not a network: {error}") from None
        if not pool.prefixlen < self.service_prefix <= pool.max_prefixlen - 4:
            raise ValueError(
                f"STOCKADE_TENANT_SERVICE_PREFIX: {self.service_prefix} must be longer than the pool's "
                f"/{pool.prefixlen} and at most /{pool.max_prefixlen - 4} (a range holds at least 16 addresses)"
            )

    @classmethod
    def from_env(cls) -> OperatorConfig:
        defaults = cls()
        prefix = os.environ.get("STOCKADE_TENANT_SERVICE_PREFIX", str(defaults.service_prefix))
        if not prefix.isdigit():
            raise ValueError(f"STOCKADE_TENANT_SERVICE_PREFIX: {prefix!r} is not a prefix length (e.g. 22)")
        return cls(
            runtime_class=os.environ.get("STOCKADE_RUNTIME_CLASS", defaults.runtime_class),
            operator_namespace=os.environ.get("STOCKADE_NAMESPACE", defaults.operator_namespace),
            service_pool=os.environ.get("STOCKADE_TENANT_SERVICE_POOL", defaults.service_pool),
            service_prefix=int(prefix),
            never_egress=_env_list("STOCKADE_NEVER_EGRESS", defaults.never_egress),
            dns_namespace=os.environ.get("STOCKADE_DNS_NAMESPACE", defaults.dns_namespace),
            image_pull_policy=os.environ.get("STOCKADE_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            netgate_image=os.environ.get("STOCKADE_NETGATE_IMAGE", defaults.netgate_image),
            kubelet_image=os.environ.get("STOCKADE_KUBELET_IMAGE", defaults.kubelet_image),
        )
