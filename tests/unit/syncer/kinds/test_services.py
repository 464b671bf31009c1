"""Services and Endpoints."""

from __future__ import annotations

from stockade.syncer.kinds import pod_spec, services
from tests.unit.syncer.helpers import CTX, pod


def test_service_and_endpoint_refusals() -> None:
    assert "CVE-2020-8554" in (services.service_refusal({"spec": {"externalIPs": ["1.1.1.1"]}}) or "")
    assert "NodePort" in (services.service_refusal({"spec": {"type": "NodePort"}}) or "")
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.5"}]}]}
    assert services.endpoints_refusal(endpoints, {"10.0.0.5"}) is None
    assert "10.0.0.5" in (services.endpoints_refusal(endpoints, set()) or "")


def test_service_selectors_follow_the_carried_labels() -> None:
    service = {"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
               "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"port": 80}]}}  # fmt: skip
    selector = services.translate_service(service, CTX)["spec"]["selector"]
    pod_labels = pod_spec.translate_pod(pod(labels={"app": "web"}), CTX, None)["metadata"]["labels"]
    assert selector.items() <= pod_labels.items() and "app" not in selector


def test_service_types_that_open_node_ports_are_refused() -> None:
    for kind in ("NodePort", "LoadBalancer"):
        assert f"spec.type: {kind}" in (services.service_refusal({"spec": {"type": kind}}) or "")
    assert services.service_refusal({"spec": {"type": "ClusterIP"}}) is None
