from __future__ import annotations

from typing import Any

import pytest

from stockade import naming, render
from stockade.config import OperatorConfig
from stockade.model import TenantSpec


def rendered(spec: dict[str, Any] | None = None, name: str = "team-a") -> list[dict[str, Any]]:
    inp = render.TenantInput(
        name, "uid-1", TenantSpec.model_validate(spec or {}), OperatorConfig(), "sum", ("10.1.2.3",)
    )
    return render.render_tenant(inp)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_templates(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def test_every_object_is_labelled_and_owned() -> None:
    for obj in rendered():
        labels = obj["metadata"]["labels"]
        assert labels[naming.LABEL_TENANT] == "team-a"
        assert labels[naming.LABEL_MANAGED_BY] == "stockade"
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "stockade.dev/v1alpha1",
                "kind": "Tenant",
                "name": "team-a",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_pods_are_sandboxed_and_hardened() -> None:
    templates = pod_templates(rendered())
    assert len(templates) == 4
    for template in templates:
        spec = template["spec"]
        assert spec["runtimeClassName"] == "kata"
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert template["metadata"]["annotations"]["stockade.dev/pki-checksum"] == "sum"
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
            }
            assert set(container["resources"]) == {"requests", "limits"}


def test_runtime_class_and_registry_come_from_the_spec() -> None:
    objects = rendered({"controlPlane": {"runtimeClassName": "gvisor", "imageRegistry": "mirror.local:5000/k8s"}})
    for template in pod_templates(objects):
        assert template["spec"]["runtimeClassName"] == "gvisor"
        assert template["spec"]["containers"][0]["image"].startswith("mirror.local:5000/k8s/")
    assert (
        by_kind(objects, "Deployment")["kube-apiserver"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "mirror.local:5000/k8s/kube-apiserver:v1.34.4"
    )


def test_suspended_scales_to_zero() -> None:
    objects = rendered({"suspended": True})
    assert {o["spec"]["replicas"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")} == {0}


def test_high_availability() -> None:
    objects = rendered({"controlPlane": {"replicas": 3}})
    etcd = by_kind(objects, "StatefulSet")["etcd"]
    args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
    initial = next(a for a in args if a.startswith("--initial-cluster="))
    assert initial.count(",") == 2  # three members
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert pdbs["etcd"]["spec"]["minAvailable"] == 2
    assert pdbs["kube-apiserver"]["spec"]["minAvailable"] == 2
    kcm = by_kind(objects, "Deployment")["kube-controller-manager"]
    assert "--leader-elect=true" in kcm["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not by_kind(rendered(), "PodDisruptionBudget")


def test_network_policies() -> None:
    closed = by_kind(rendered(), "NetworkPolicy")
    assert "internet-egress" not in closed
    open_ = by_kind(rendered({"workloads": {"egress": {"internet": True}}}), "NetworkPolicy")
    blocked = open_["internet-egress"]["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in blocked and "10.1.2.3/32" in blocked and "10.0.0.0/8" in blocked
    apiserver = closed["kube-apiserver"]["spec"]["ingress"][0]
    assert len(apiserver["from"]) == 3  # own components, own workloads, the operator
    exposed = by_kind(rendered({"controlPlane": {"service": {"type": "LoadBalancer"}}}), "NetworkPolicy")
    assert "from" not in exposed["kube-apiserver"]["spec"]["ingress"][0]


def test_ephemeral_etcd_has_no_claim() -> None:
    etcd = by_kind(rendered({"controlPlane": {"etcd": {"storage": {"type": "Ephemeral"}}}}), "StatefulSet")["etcd"]
    assert "volumeClaimTemplates" not in etcd["spec"]
    assert {"name": "data", "emptyDir": {}} in etcd["spec"]["template"]["spec"]["volumes"]


def test_quota_and_limits() -> None:
    objects = rendered({"workloads": {"quota": {"pods": 7, "extended": {"nvidia.com/gpu": 1}}}})
    hard = by_kind(objects, "ResourceQuota")["tenant-quota"]["spec"]["hard"]
    assert hard["pods"] == "7" and hard["requests.nvidia.com/gpu"] == "1" and hard["services.nodeports"] == "0"
    namespace = by_kind(objects, "Namespace")[naming.workloads_namespace("team-a")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["labels"]["stockade.dev/runtime-class"] == "kata"


def test_no_pod_mounts_a_ca_key() -> None:
    for sources in render.PKI_SOURCES.values():
        for secret, items in sources:
            if secret.endswith("-ca"):
                assert [key for key, _ in items] == ["tls.crt"], secret


def test_fit_names() -> None:
    assert naming.fit("short") == "short"
    long = "x" * 80
    fitted = naming.fit(long)
    assert len(fitted) == 63 and fitted != naming.fit("x" * 79 + "y")
    assert naming.fit(long) == fitted  # deterministic
    assert len(naming.workloads_namespace("a" * 40)) <= 63
    assert len(naming.control_plane_namespace("a" * 40)) <= 63


@pytest.mark.parametrize("name", ["yes", "no", "on", "off", "true", "false", "null", "y", "n", "nan", "inf"])
def test_names_yaml_would_misread_stay_strings(name: str) -> None:
    """A Tenant named like a YAML 1.1 boolean or null renders labels that are still its name."""
    inp = render.TenantInput(name, "uid", TenantSpec(), OperatorConfig(), pki_checksum="sum")
    objects = render.render_tenant(inp)
    labelled = 0
    for obj in objects:
        for labels in _label_maps(obj):
            if naming.LABEL_TENANT in labels:
                assert labels[naming.LABEL_TENANT] == name, (obj["kind"], obj["metadata"]["name"], labels)
                labelled += 1
    assert labelled >= len(objects)  # every object carries it, pod templates and selectors too


def _label_maps(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                found.append(value)
            found += _label_maps(value)
    elif isinstance(node, list):
        for item in node:
            found += _label_maps(item)
    return found
