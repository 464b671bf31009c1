"""manifests/admission-policy.yaml, enforced by the real API server: the super cluster itself
refuses unsandboxed or host-reaching pods in Stockade workloads namespaces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from stockade_dev.testbed import LocalControlPlane
from tests.helpers import eventually

pytestmark = pytest.mark.integration
NS = "policy-workloads"

COMPLIANT: dict[str, Any] = {
    "metadata": {"name": "ok"},
    "spec": {
        "runtimeClassName": "kata",
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        "initContainers": [{"name": "init", "image": "registry.k8s.io/pause:3.10"}],
    },
}


def pod(name: str, mutate: Any = None) -> dict[str, Any]:
    body = copy.deepcopy(COMPLIANT)
    body["metadata"]["name"] = name
    if mutate:
        mutate(body["spec"])
    return body


@pytest.fixture(scope="module")
def core(super_cluster: LocalControlPlane, super_client: client.ApiClient) -> client.CoreV1Api:
    api = client.CoreV1Api(super_client)
    # No Pod Security labels here, so every refusal below comes from the Stockade policy alone.
    api.create_namespace(
        {
            "metadata": {
                "name": NS,
                "labels": {"stockade.dev/workloads": "true", "stockade.dev/runtime-class": "kata"},
            }
        }
    )
    client.NodeV1Api(super_client).create_runtime_class({"metadata": {"name": "runc"}, "handler": "runc"})
    eventually(lambda: api.create_namespaced_pod(NS, pod("probe")), 30, what="policy active")
    return api


def test_compliant_pod_is_admitted(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod(NS, pod("compliant"))
    # RuntimeClass admission added the sandbox's declared overhead.
    assert created.spec.overhead == {"cpu": "250m", "memory": "320Mi"}


def _privileged(target: str) -> Any:
    return lambda s: s[target][0].update(securityContext={"privileged": True})


@pytest.mark.parametrize(
    ("name", "mutate", "fragment"),
    [
        ("no-runtime-class", lambda s: s.pop("runtimeClassName"), "spec.runtimeClassName"),
        ("other-runtime-class", lambda s: s.update(runtimeClassName="runc"), "spec.runtimeClassName"),
        ("host-network", lambda s: s.update(hostNetwork=True), "host namespaces"),
        ("host-pid", lambda s: s.update(hostPID=True), "host namespaces"),
        ("host-ipc", lambda s: s.update(hostIPC=True), "host namespaces"),
        ("host-path", lambda s: s.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "hostPath"),
        ("privileged", _privileged("containers"), "privileged"),
        ("privileged-init", _privileged("initContainers"), "privileged"),
        (
            "add-caps",
            lambda s: s["containers"][0].update(securityContext={"capabilities": {"add": ["NET_ADMIN"]}}),
            "capabilities.add",
        ),
        (
            "host-port",
            lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
            "hostPort",
        ),
    ],
)
def test_refused_pods(core: client.CoreV1Api, name: str, mutate: Any, fragment: str) -> None:
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(NS, pod(name, mutate))
    assert refused.value.status in (403, 422)
    assert fragment in refused.value.body
    assert "stockade-sandboxed-pods" in refused.value.body


def test_privileged_ephemeral_container_is_refused(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("debug-target"))
    ephemeral = {
        "spec": {
            "ephemeralContainers": [
                {
                    "name": "debugger",
                    "image": "registry.k8s.io/pause:3.10",
                    "securityContext": {"privileged": True},
                }
            ]
        }
    }
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod_ephemeralcontainers("debug-target", NS, ephemeral)
    assert "privileged" in refused.value.body
    ephemeral["spec"]["ephemeralContainers"][0].pop("securityContext")
    core.patch_namespaced_pod_ephemeralcontainers("debug-target", NS, ephemeral)


def test_external_ips_are_refused(core: client.CoreV1Api) -> None:
    service = {"metadata": {"name": "mitm"}, "spec": {"ports": [{"port": 80}], "externalIPs": ["1.2.3.4"]}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_service(NS, service)
    assert "CVE-2020-8554" in refused.value.body
    service["spec"].pop("externalIPs")
    core.create_namespaced_service(NS, service)


def test_other_namespaces_are_not_affected(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "not-a-tenant"}})
    core.create_namespaced_pod("not-a-tenant", pod("plain", lambda s: s.pop("runtimeClassName")))
