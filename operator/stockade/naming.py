"""Every name Stockade derives from a tenant's name, in one place.

Pure functions. Tenant names are DNS labels of at most 40 characters (enforced by the CRD),
so every name below fits the 63-character limit of labels and namespaces.
"""

from __future__ import annotations

import hashlib
import ipaddress

LABEL_TENANT = "stockade.dev/tenant"
LABEL_ROLE = "stockade.dev/role"
LABEL_COMPONENT = "stockade.dev/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "stockade"
# Marks a workloads namespace; the admission policy in manifests/ selects on it.
LABEL_WORKLOADS = "stockade.dev/workloads"
ANNOTATION_RUNTIME_CLASS = "stockade.dev/runtime-class"
# On control-plane pod templates: a digest of the certificates, so a rotation rolls the pods.
ANNOTATION_PKI_CHECKSUM = "stockade.dev/pki-checksum"
# Set to a new value (e.g. a date) to re-issue leaf certificates, or the CAs and everything.
ANNOTATION_ROTATE = "stockade.dev/rotate-certificates"
ANNOTATION_ROTATE_CA = "stockade.dev/rotate-ca"
FINALIZER = "stockade.dev/cleanup"
FIELD_MANAGER = "stockade-operator"
OPERATOR_NAMESPACE = "stockade-system"

ROLE_CONTROL_PLANE = "control-plane"
ROLE_WORKLOADS = "workloads"

# -- what the syncer writes on objects --
# Annotations on super objects naming the tenant object they mirror.
ANNOTATION_NAMESPACE = "stockade.dev/tenant-namespace"
ANNOTATION_NAME = "stockade.dev/tenant-name"
ANNOTATION_UID = "stockade.dev/tenant-uid"
# Labels on super objects: ownership, and the tenant namespace (Service selectors use it).
LABEL_SYNCED = "stockade.dev/synced"
LABEL_NAMESPACE = "stockade.dev/tenant-namespace"
# Tenant labels and annotations are never copied verbatim (a super-cluster component may act on
# any key: runtime annotations, workload-identity markers, volume-binding annotations, cloud load
# balancer annotations). Each is carried under a key of Stockade's own, which nothing else reads:
# selectors and downward-API references are translated to the same keys. Verbatim allowlist: none.
CARRIED_LABEL_PREFIX = "label.stockade.dev/"
CARRIED_ANNOTATION_PREFIX = "annotation.stockade.dev/"
TOKEN_EXPIRES_ANNOTATION = "stockade.dev/token-expires"
# A tenant pod's labels and annotations as a whole, written the way its own kubelet writes them
# into a downward-API file (`metadata.labels`, `metadata.annotations` are read from these: the super
# pod's own maps hold the carried keys and Stockade's).
# Kubernetes' labels of an EndpointSlice, and the manager Stockade's slices name (the super and
# tenant clusters' own controllers leave such slices alone).
SLICE_SERVICE_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "stockade.dev"
ANNOTATION_TENANT_LABELS = "stockade.dev/tenant-labels"
ANNOTATION_TENANT_ANNOTATIONS = "stockade.dev/tenant-annotations"

MAX_NAME = 63
HASH_LENGTH = 10


def control_plane_namespace(tenant: str) -> str:
    return f"stockade-{tenant}-control-plane"


def workloads_namespace(tenant: str) -> str:
    return f"stockade-{tenant}-workloads"


def virtual_node(tenant: str) -> str:
    """The tenant's one node, as its own cluster sees it."""
    return f"stockade-{tenant}"


def fit(name: str, limit: int = MAX_NAME) -> str:
    """`name` if it fits in `limit` characters, else a prefix plus a hash of the whole name."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]
    return f"{name[: limit - HASH_LENGTH - 1].rstrip('-.')}-{digest}"


def tenant_labels(tenant: str, role: str | None = None, component: str | None = None) -> dict[str, str]:
    labels = {LABEL_TENANT: tenant, LABEL_MANAGED_BY: MANAGED_BY}
    if role:
        labels[LABEL_ROLE] = role
    if component:
        labels[LABEL_COMPONENT] = component
    return labels


# Stable names of objects inside a tenant's control-plane namespace.
ETCD = "etcd"
ETCD_PEERS = "etcd-peers"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
# The tenant's cluster DNS (CoreDNS): its Deployment, Service, ConfigMap and component label.
DNS = "dns"
DNS_PORT = 1053  # what CoreDNS listens on, unprivileged; its Service answers on 53
# In the tenant cluster, the Service it is published as (what `kubectl get svc -A` shows).
TENANT_DNS_SERVICE = ("kube-system", "kube-dns")
# The virtual node's kubelet API (stockade/images/kubelet): its Deployment, Service, ServiceAccount
# and component label. The tenant's API server sends it logs, exec, attach and port-forward.
KUBELET = "kubelet"
KUBELET_PORT = 10250
# Its Role in the tenant's workloads namespace: the only pods its identity can reach.
KUBELET_ROLE = "stockade-kubelet"
# In the tenant cluster, the Service that holds the virtual node's address, so no tenant Service
# is ever given it.
TENANT_KUBELET_SERVICE = ("kube-system", "stockade-kubelet")
# The tenant's resource-metrics API (`kubectl top`), which the kubelet API serves behind that Service.
METRICS_API_SERVICE = "v1beta1.metrics.k8s.io"
# The NetworkPolicy that lets a tenant's API server call into its own workloads (webhooks,
# aggregated APIs, pods/proxy and services/proxy).
POLICY_CALLOUTS = "apiserver-callouts"
# The ServiceCIDR the operator adds to the super cluster: the pool every tenant's range comes from.
SERVICE_POOL = "stockade-tenant-services"
# One StatefulSet runs the control plane: one pod per replica, its components as containers that
# talk over localhost. It keeps the name, pod selector, member names and volumes of the etcd
# StatefulSet of the earlier layout (a workload per component), so older Tenants migrate in place.
CONTROL_PLANE = ETCD
# Only on pods that run a whole control-plane replica: what the API server's Service, the PDB and
# the NetworkPolicies select (pods of the earlier layout lack it, so a migration never sends API
# traffic to a pod that runs etcd alone).
LABEL_REPLICA = "stockade.dev/control-plane-replica"
SERVICE_ACCOUNT = "control-plane"
ADMIN_KUBECONFIG_SECRET = "admin-kubeconfig"
APISERVER_PORT = 6443
KUBERNETES_SERVICE_PORT = 443  # the tenant's `kubernetes` Service: its API server Service has it too
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381  # plain-HTTP health and metrics: what the kubelet probes


def pki_secret(name: str) -> str:
    """The Secret holding one certificate (or CA, or the service-account key)."""
    return f"pki-{name}"


def kubeconfig_secret(user: str) -> str:
    return f"{user}-kubeconfig"


def apiserver_dns_names(tenant: str) -> tuple[str, ...]:
    namespace = control_plane_namespace(tenant)
    return (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        APISERVER,
        f"{APISERVER}.{namespace}",
        f"{APISERVER}.{namespace}.svc",
        f"{APISERVER}.{namespace}.svc.cluster.local",
    )


def etcd_member(tenant: str, index: int) -> str:
    """The DNS name of member `index` (the control-plane pod of that ordinal) for its peers."""
    return f"{CONTROL_PLANE}-{index}.{ETCD_PEERS}.{control_plane_namespace(tenant)}.svc"


def etcd_dns_names(tenant: str, replicas: int) -> tuple[str, ...]:
    namespace = control_plane_namespace(tenant)
    names = ["localhost", ETCD, f"{ETCD}.{namespace}", f"{ETCD}.{namespace}.svc"]
    for i in range(replicas):
        member = etcd_member(tenant, i)
        names += [member, f"{member}.cluster.local"]
    return tuple(names)


def local_url(port: int) -> str:
    """A component of the same control-plane pod (containers of one pod share its loopback)."""
    return f"https://127.0.0.1:{port}"


def tenant_kubelet_service_dns() -> str:
    """The name the tenant's aggregation layer expects on the kubelet API's serving certificate."""
    namespace, name = TENANT_KUBELET_SERVICE
    return f"{name}.{namespace}.svc"


def apiserver_url(tenant: str) -> str:
    return f"https://{APISERVER}.{control_plane_namespace(tenant)}.svc:{APISERVER_PORT}"


def service_cidr_first_ip(cidr: str) -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the Service range."""
    network = ipaddress.ip_network(cidr, strict=False)
    return str(network.network_address + 1)


def dns_service_ip(cidr: str) -> str:
    """The cluster DNS's ClusterIP: the tenth address of the Service range (kubeadm's choice)."""
    network = ipaddress.ip_network(cidr, strict=False)
    return str(network.network_address + 10)


def kubelet_ip(cidr: str) -> str:
    """The virtual node's address: the second address of the tenant's Service range, served by its
    kubelet API's Service (the tenant's API server sends kubelet requests there)."""
    network = ipaddress.ip_network(cidr, strict=False)
    return str(network.network_address + 2)


# The virtual node's address when it has no kubelet API (a Tenant from before the pool): loopback,
# so a request meant for it never leaves its sender.
NO_KUBELET_ADDRESS = "127.0.0.1"


def virtual_node_ip(service_range: str) -> str:
    return kubelet_ip(service_range) if service_range else NO_KUBELET_ADDRESS


def service_range_of(ip: str, prefix: int) -> str:
    """The tenant Service range (a block of `prefix` bits) that holds `ip`."""
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def service_ranges(pool: str, prefix: int) -> list[str]:
    """Every tenant Service range the pool holds, lowest first."""
    return [str(b) for b in ipaddress.ip_network(pool).subnets(new_prefix=prefix)]
