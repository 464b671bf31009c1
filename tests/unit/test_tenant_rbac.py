"""What Stockade applies inside a tenant cluster (pure)."""

from __future__ import annotations

import base64

from stockade import certificates as certs
from stockade import kube, naming, tenant_rbac
from stockade.model import TenantSpec


def test_every_object_is_of_a_kind_the_client_can_write() -> None:
    pooled = tenant_rbac.pooled_objects("10.112.8.0/22", b"CA")
    for obj in [*tenant_rbac.objects(TenantSpec()), *tenant_rbac.node_name_policy("team-a"), *pooled]:
        kube.kind_of(obj)  # raises for a kind it does not know


def test_the_metrics_api_is_the_kubelet_apis_checked_against_the_tenants_ca() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in tenant_rbac.pooled_objects("10.112.8.0/22", b"CA")}
    spec = objects["APIService", naming.METRICS_API_SERVICE]["spec"]
    namespace, name = naming.TENANT_KUBELET_SERVICE
    assert spec["service"] == {"namespace": namespace, "name": name, "port": naming.KUBELET_PORT}
    assert base64.b64decode(spec["caBundle"]) == b"CA" and "insecureSkipTLSVerify" not in spec
    kubelet_service = objects["Service", name]["spec"]
    assert kubelet_service["clusterIP"] == naming.kubelet_ip("10.112.8.0/22")
    assert kubelet_service["ports"][0]["port"] == naming.KUBELET_PORT
    # A ready endpoint on that port's name (the aggregation layer's condition for Available).
    endpoints = objects["EndpointSlice", name]
    assert endpoints["endpoints"] == [{"addresses": [kubelet_service["clusterIP"]], "conditions": {"ready": True}}]
    assert endpoints["ports"][0]["name"] == kubelet_service["ports"][0]["name"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == name
    # The kubelet API's identity asks about users and lists pods; nothing else, nothing written.
    role = objects["ClusterRole", tenant_rbac.KUBELET_ROLE]
    assert role["rules"] == [
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    binding = objects["ClusterRoleBinding", tenant_rbac.KUBELET_ROLE]
    assert binding["subjects"][0]["name"] == certs.KUBELET_USER
    # Whoever may view, edit or administer may read metrics (as metrics-server's own manifest grants).
    reader = objects["ClusterRole", tenant_rbac.METRICS_READER_ROLE]
    assert reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert reader["rules"] == [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
                                "verbs": ["get", "list", "watch"]}]  # fmt: skip
