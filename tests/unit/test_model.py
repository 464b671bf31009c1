from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from stockade import crd, model


def errors_of(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as failure:
        model.TenantSpec.model_validate(spec)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in failure.value.errors()}


def test_committed_crd_matches_the_model() -> None:
    assert crd.CRD_PATH.read_text() == crd.render(), "run `python -m stockade.crd` and commit crds/"


def test_defaults_are_safe() -> None:
    spec = model.TenantSpec()
    assert spec.kubernetes.version == model.DEFAULT_KUBERNETES_VERSION
    assert spec.workloads.pod_security == model.PodSecurityLevel.RESTRICTED
    assert spec.workloads.egress.internet is False
    assert spec.control_plane.service.type == model.ServiceType.CLUSTER_IP
    assert spec.admins.users == [] and spec.admins.groups == []
    assert spec.suspended is False


def test_wire_form_is_camel_case_and_round_trips() -> None:
    wire = model.TenantSpec().wire()
    assert "controlPlane" in wire and "podSecurity" in wire["workloads"]
    assert model.TenantSpec.model_validate(wire) == model.TenantSpec()


def test_quantities_accept_numbers_and_strings() -> None:
    spec = model.TenantSpec.model_validate(
        {"workloads": {"quota": {"cpu": 4, "memory": "8Gi", "extended": {"nvidia.com/gpu": 2}}}}
    )
    assert spec.workloads.quota.cpu == "4"
    assert spec.workloads.quota.extended == {"nvidia.com/gpu": "2"}


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"kubernetes": {"version": "1.34"}}, "kubernetes.version", "should match pattern"),
        ({"kubernetes": {"version": "v1.29.0"}}, "kubernetes.version", "not supported"),
        ({"kubernetes": {"version": 134}}, "kubernetes.version", "valid string"),
        ({"controlPlane": {"replicas": 2}}, "controlPlane.replicas", "1 or 3"),
        ({"controlPlane": {"service": {"type": "Ingress"}}}, "controlPlane.service.type", "ClusterIP"),
        (
            {"controlPlane": {"etcd": {"storage": {"size": "big"}}}},
            "controlPlane.etcd.storage.size",
            "quantity",
        ),
        ({"workloads": {"quota": {"pods": -1}}}, "workloads.quota.pods", "greater than or equal to 0"),
        ({"workloads": {"quota": {"memory": True}}}, "workloads.quota.memory", "boolean"),
        ({"workloads": {"podSecurity": "privileged"}}, "workloads.podSecurity", "restricted"),
        ({"workloads": {"egress": {"internet": "maybe"}}}, "workloads.egress.internet", "boolean"),
        ({"admins": {"groups": ["system:masters"]}}, "admins.groups.0", "reserved"),
        ({"suspended": "yes please"}, "suspended", "boolean"),
        ({"controlPlane": {"imageRegistry": "bad registry!"}}, "controlPlane.imageRegistry", "pattern"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_invalid_specs_name_the_field_and_reason(spec: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of(spec)
    assert path in errors, errors
    assert fragment in errors[path]


def test_tenant_name_rule() -> None:
    assert model.tenant_name_problem("team-a") is None
    assert "at most 40" in (model.tenant_name_problem("a" * 41) or "")
    assert model.tenant_name_problem("Team") is not None
    assert model.tenant_name_problem("1team") is not None
