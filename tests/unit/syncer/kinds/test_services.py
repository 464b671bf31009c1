"""Services and Endpoints."""

from __future__ import annotations

from typing import Any

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
