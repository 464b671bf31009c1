"""Services, Endpoints and EndpointSlices."""

from __future__ import annotations

from typing import Any

from stockade import naming
from stockade.syncer import translate as tr
from stockade.syncer.kinds import pod_spec, services
from tests.unit.syncer.helpers import CTX, pod, tenant_context

RANGE = CTX.service_range


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.112.4.20", "ports": [{"port": 80}], **spec}}  # fmt: skip


def test_service_and_endpoint_refusals() -> None:
    assert "CVE-2020-8554" in (services.service_refusal({"spec": {"externalIPs": ["1.1.1.1"]}}, RANGE) or "")
    assert "NodePort" in (services.service_refusal({"spec": {"type": "NodePort"}}, RANGE) or "")
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.5"}]}]}
    assert services.endpoints_refusal(endpoints, {"10.0.0.5"}) is None
    assert "10.0.0.5" in (services.endpoints_refusal(endpoints, set()) or "")


def test_a_service_keeps_its_cluster_ip_and_only_one_of_the_tenants_range() -> None:
    assert services.translate_service(service(), CTX)["spec"]["clusterIP"] == "10.112.4.20"
    assert services.service_refusal(service(), RANGE) is None
    # An address of another tenant's range, or of the super cluster's, is never asked for.
    for ip in ("10.112.8.20", "10.0.0.1"):
        refusal = services.service_refusal(service(clusterIP=ip, clusterIPs=[ip]), RANGE) or ""
        assert f"spec.clusterIP: {ip} is outside this cluster's Service range {RANGE}" in refusal
    headless = service(clusterIP="None", clusterIPs=["None"])
    assert services.service_refusal(headless, RANGE) is None
    assert services.translate_service(headless, CTX)["spec"]["clusterIP"] == "None"


def test_session_affinity_and_traffic_policy_are_carried() -> None:
    config = {"clientIP": {"timeoutSeconds": 60}}
    spec = services.translate_service(
        service(sessionAffinity="ClientIP", sessionAffinityConfig=config, internalTrafficPolicy="Local"), CTX
    )["spec"]
    assert (spec["sessionAffinity"], spec["sessionAffinityConfig"], spec["internalTrafficPolicy"]) == (
        "ClientIP", config, "Local",
    )  # fmt: skip


def test_service_selectors_follow_the_carried_labels() -> None:
    selector = services.translate_service(service(selector={"app": "web"}), CTX)["spec"]["selector"]
    pod_labels = pod_spec.translate_pod(pod(labels={"app": "web"}), CTX, None)["metadata"]["labels"]
    assert selector.items() <= pod_labels.items() and "app" not in selector


def test_service_types_that_open_node_ports_are_refused() -> None:
    for kind in ("NodePort", "LoadBalancer"):
        assert f"spec.type: {kind}" in (services.service_refusal({"spec": {"type": kind}}, RANGE) or "")
    assert services.service_refusal({"spec": {"type": "ClusterIP"}}, RANGE) is None


def test_a_tenant_from_before_the_pool_lets_the_super_cluster_pick_addresses() -> None:
    legacy = tenant_context(service_range="", dns_servers=())
    assert services.service_refusal(service(clusterIP="10.96.0.20"), "") is None
    assert "clusterIP" not in services.translate_service(service(clusterIP="10.96.0.20"), legacy)["spec"]
    headless = services.translate_service(service(clusterIP="None"), legacy)["spec"]
    assert headless["clusterIP"] == "None"


def endpoint_slice(*addresses: str, address_type: str = "IPv4") -> dict[str, Any]:
    return {
        "metadata": {"name": "manual-1", "namespace": "ns", "uid": "u",
                     "labels": {naming.SLICE_SERVICE_LABEL: "manual", naming.SLICE_MANAGED_BY_LABEL: "me", "x": "y"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}, "nodeName": "n1", "hostname": "h",
                       "targetRef": {"kind": "Pod", "name": "p"}, "zone": "z"} for a in addresses],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }  # fmt: skip


def test_a_tenant_written_endpoint_slice_points_only_at_the_tenants_pods() -> None:
    pods = {"10.244.0.9", "10.244.0.10"}
    assert services.endpoint_slice_refusal(endpoint_slice("10.244.0.9", "10.244.0.10"), pods) is None
    refusal = services.endpoint_slice_refusal(endpoint_slice("10.244.0.9", "10.96.0.1"), pods)
    assert refusal == "endpoints[1].addresses: 10.96.0.1 is not an IP of one of this tenant's pods"
    assert "addressType: 'FQDN'" in (services.endpoint_slice_refusal(endpoint_slice(address_type="FQDN"), pods) or "")


def test_a_tenant_written_endpoint_slice_serves_its_super_service_and_names_no_node_or_pod() -> None:
    out = services.translate_endpoint_slice(endpoint_slice("10.244.0.9"), CTX)
    labels = out["metadata"]["labels"]
    assert labels[naming.SLICE_SERVICE_LABEL] == tr.super_name("ns", "manual")
    assert labels[naming.SLICE_MANAGED_BY_LABEL] == naming.SLICE_MANAGER  # no super controller takes it over
    assert labels[tr.carried_label("x")] == "y" and "x" not in labels
    assert out["metadata"]["name"] == tr.super_name("ns", "manual-1") and out["metadata"]["namespace"] == CTX.namespace
    assert out["endpoints"] == [{"addresses": ["10.244.0.9"], "conditions": {"ready": True}}]
    assert out["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}] and out["addressType"] == "IPv4"
