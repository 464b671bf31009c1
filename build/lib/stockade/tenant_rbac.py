"""Objects applied *inside* a tenant's cluster once its API server is up (pure): RBAC, and the
admission policy that keeps pods on the tenant's virtual node.

The tenant admin's certificate is in group `stockade:tenant-admins`, bound to cluster-admin by
a ClusterRoleBinding: revocable, unlike system:masters. The syncer gets exactly the verbs it uses.
"""

from __future__ import annotations

from typing import Any

from stockade import certificates as certs
from stockade import naming
from stockade.model import TenantSpec

ADMINS_BINDING = "stockade:tenant-admins"
SYNCER_ROLE = "stockade:syncer"
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
    # The super ClusterIP is published on tenant Services as an annotation.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]},
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
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": SYNCER_ROLE, "labels": LABELS},
            "rules": SYNCER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": SYNCER_ROLE, "labels": LABELS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SYNCER_ROLE},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": certs.SYNCER_USER}],
        },
    ]
