"""Objects applied *inside* a tenant's cluster once its API server is up (pure): RBAC, and the
admission policy that keeps pods on the tenant's virtual node.

The tenant admin's certificate is in group `stockade:tenant-admins`, bound to cluster-admin by
a ClusterRoleBinding: revocable, unlike system:masters. The syncer gets exactly the verbs it uses.
"""

from __future__ import annotations

import base64
from typing import Any

from stockade import certificates as certs
from stockade import naming
from stockade.model import TenantSpec

ADMINS_BINDING = "stockade:tenant-admins"
SYNCER_ROLE = "stockade:syncer"
DNS_ROLE = "stockade:dns"
KUBELET_ROLE = "stockade:kubelet"
METRICS_READER_ROLE = "stockade:aggregated-metrics-reader"
NODE_NAME_POLICY = "stockade-virtual-node"
LABELS = {"app.kubernetes.io/managed-by": "stockade"}

# What the syncer does in a tenant cluster: read workloads, write their status back, publish
# virtual nodes, post events, and mint service-account tokens for synced pods. No wildcards.
SYNCER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["namespaces", "pods", "configmaps", "secrets", "services", "endpoints",
                      "persistentvolumeclaims", "serviceaccounts"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods/status", "services/status", "persistentvolumeclaims/status"],
     "verbs": ["get", "update", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
    {"apiGroups": [""], "resources": ["nodes", "nodes/status"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
    # Records of the super cluster's volumes, so tenant claims bind (see translate.tenant_volume).
    {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["create", "delete"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]  # fmt: skip


# What the tenant's cluster DNS reads (CoreDNS's kubernetes plugin): nothing else, nothing written.
DNS_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]


# What the virtual node's kubelet API asks its tenant when serving metrics.k8s.io: whether the user
# may read them, and which pods a request selects (so selectors mean what they mean in the tenant).
KUBELET_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]


def dns_service(dns_ip: str) -> dict[str, Any]:
    """`kube-system/kube-dns`, as every cluster has it: the address tenant pods resolve with. It has
    no selector; the super cluster's Service of the same address carries the traffic."""
    namespace, name = naming.TENANT_DNS_SERVICE
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**LABELS, "k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "clusterIP": dns_ip,
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        },
    }  # fmt: skip


def kubelet_service(kubelet_ip: str) -> dict[str, Any]:
    """`kube-system/stockade-kubelet`: holds the virtual node's address in the tenant's own range, so
    the tenant never gives it to a Service of its own. No selector; the super cluster's Service of
    the same address is the node's kubelet API."""
    namespace, name = naming.TENANT_KUBELET_SERVICE
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": LABELS},
        "spec": {"clusterIP": kubelet_ip, "ports": [{"name": naming.KUBELET, "port": naming.KUBELET_PORT}]},
    }


def metrics_api(ca_pem: bytes) -> list[dict[str, Any]]:
    """`kubectl top` in the tenant: the resource-metrics API, served by the virtual node's kubelet
    API behind `kube-system/stockade-kubelet` (its certificate, of the tenant's CA, names that
    Service); and, as metrics-server does, read access for whoever has `view`, `edit` or `admin`."""
    namespace, name = naming.TENANT_KUBELET_SERVICE
    group, version = "metrics.k8s.io", "v1beta1"
    return [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": naming.METRICS_API_SERVICE, "labels": LABELS},
            "spec": {
                "group": group, "version": version,
                "service": {"namespace": namespace, "name": name, "port": naming.KUBELET_PORT},
                "caBundle": base64.b64encode(ca_pem).decode(),
                "groupPriorityMinimum": 100, "versionPriority": 100,
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": METRICS_READER_ROLE, "labels": {
                **LABELS, **{f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")}
            }},
            "rules": [{"apiGroups": [group], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}],
        },
    ]  # fmt: skip


def kubelet_endpoints(kubelet_ip: str) -> dict[str, Any]:
    """The one endpoint of `kube-system/stockade-kubelet`: the node's address itself, ready. The
    aggregation layer calls the Service's ClusterIP, but counts an APIService available only while
    its Service has a ready endpoint on the port it names."""
    namespace, name = naming.TENANT_KUBELET_SERVICE
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {
            **LABELS, naming.SLICE_SERVICE_LABEL: name, naming.SLICE_MANAGED_BY_LABEL: naming.SLICE_MANAGER,
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [kubelet_ip], "conditions": {"ready": True}}],
        "ports": [{"name": naming.KUBELET, "port": naming.KUBELET_PORT, "protocol": "TCP"}],
    }  # fmt: skip


def pooled_objects(service_range: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """What a pooled tenant's fixed addresses serve: the tenant Services of its cluster DNS and its
    node's kubelet, and the metrics API and RBAC of that kubelet."""
    return [
        dns_service(naming.dns_service_ip(service_range)),
        kubelet_service(naming.kubelet_ip(service_range)),
        kubelet_endpoints(naming.kubelet_ip(service_range)),
        *_role_and_binding(KUBELET_ROLE, KUBELET_RULES, certs.KUBELET_USER),
        *metrics_api(ca_pem),
    ]


def node_name_policy(tenant: str) -> list[dict[str, Any]]:
    """A pod created with `spec.nodeName` skips the scheduler; on any node but the virtual one it
    would never run (and the pod garbage collector would delete it without a word): refused at the
    door instead, with the reason."""
    node = naming.virtual_node(tenant)
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": NODE_NAME_POLICY, "labels": LABELS},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                ]},
                "validations": [{
                    "expression": f"!has(object.spec.nodeName) || object.spec.nodeName == '{node}'",
                    "messageExpression": f"'spec.nodeName: Invalid value: \"' + object.spec.nodeName + "
                                         f"'\": pods run on node {node} only; leave nodeName unset'",
                    "reason": "Invalid",
                }],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": NODE_NAME_POLICY, "labels": LABELS},
            "spec": {"policyName": NODE_NAME_POLICY, "validationActions": ["Deny"]},
        },
    ]  # fmt: skip


def _role_and_binding(role: str, rules: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": role, "labels": LABELS}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": role, "labels": LABELS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]},
    ]  # fmt: skip


def objects(spec: TenantSpec) -> list[dict[str, Any]]:
    admins: list[dict[str, str]] = [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": certs.ADMIN_GROUP}
    ]
    admins += [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u} for u in spec.admins.users]
    admins += [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g} for g in spec.admins.groups]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ADMINS_BINDING, "labels": LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": admins,
        },
        *_role_and_binding(SYNCER_ROLE, SYNCER_RULES, certs.SYNCER_USER),
        *_role_and_binding(DNS_ROLE, DNS_RULES, certs.DNS_USER),
    ]
