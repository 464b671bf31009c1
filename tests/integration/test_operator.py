"""The operator against a real super-cluster API server (no kubelets in this tier: the control
plane's pods are created but never run, so Ready stays False with reason Starting)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stockade import naming
from tests.integration.conftest import REPO, RunningOperator, eventually, kubectl

pytestmark = pytest.mark.integration
GROUP, VERSION, PLURAL = "stockade.dev", "v1alpha1", "tenants"


def tenant(api: client.ApiClient, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def wait_provisioned(api: client.ApiClient, name: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = tenant(api, name)
        cert = condition(obj, "CertificatesReady")
        cp = condition(obj, "ControlPlaneReady")
        if cert and cert["status"] == "True" and cp and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        return None

    return eventually(check, timeout, what=f"tenant {name} provisioned")


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / name).read_text())


def test_minimal_tenant_provisions(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    client.CustomObjectsApi(super_client).create_cluster_custom_object(GROUP, VERSION, PLURAL, load_example("minimal.yaml"))
    obj = wait_provisioned(super_client, "team-a")
    print(yaml.safe_dump(obj["status"]))
    assert obj["status"]["phase"] == "Provisioning"
