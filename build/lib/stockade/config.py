"""The operator's configuration, read once from the environment."""

from __future__ import annotations

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


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name)
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default


@dataclass(frozen=True)
class OperatorConfig:
    runtime_class: str = "kata"
    operator_namespace: str = "stockade-system"
    service_cidr: str = "10.96.0.0/12"  # the tenant control plane's own Service range
    never_egress: tuple[str, ...] = NEVER_EGRESS
    dns_namespace: str = "kube-system"
    dns_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    priority_class: str = "stockade-control-plane"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    # The network gate's image (`images/netgate`): first in every tenant pod, it holds the pod's own
    # containers back until the pod's NetworkPolicy is enforced.
    netgate_image: str = "ghcr.io/stockade-dev/netgate:0.1.0"

    @classmethod
    def from_env(cls) -> OperatorConfig:
        defaults = cls()
        return cls(
            runtime_class=os.environ.get("STOCKADE_RUNTIME_CLASS", defaults.runtime_class),
            operator_namespace=os.environ.get("STOCKADE_NAMESPACE", defaults.operator_namespace),
            service_cidr=os.environ.get("STOCKADE_TENANT_SERVICE_CIDR", defaults.service_cidr),
            never_egress=_env_list("STOCKADE_NEVER_EGRESS", defaults.never_egress),
            dns_namespace=os.environ.get("STOCKADE_DNS_NAMESPACE", defaults.dns_namespace),
            image_pull_policy=os.environ.get("STOCKADE_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            netgate_image=os.environ.get("STOCKADE_NETGATE_IMAGE", defaults.netgate_image),
        )
