"""The test bed itself: real etcd + kube-apiserver (+ controller-manager) processes."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stockade_dev.testbed import find_binary
from stockade_dev.testbed.binaries import kubernetes_version
from stockade_dev.testbed.controlplane import LocalControlPlane
from tests.helpers import eventually

pytestmark = pytest.mark.integration

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.stockade.dev"},
    "spec": {
        "group": "example.stockade.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def make_namespace(api: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


def test_crd_custom_object_create_read_patch(kube_client: client.ApiClient) -> None:
    client.ApiextensionsV1Api(kube_client).create_custom_resource_definition(WIDGET_CRD)

    def established() -> bool:
        crd = client.ApiextensionsV1Api(kube_client).read_custom_resource_definition(WIDGET_CRD["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established)
    make_namespace(kube_client, "crd-test")
    custom = client.CustomObjectsApi(kube_client)
    args = ("example.stockade.dev", "v1", "crd-test", "widgets")
    eventually(
        lambda: custom.create_namespaced_custom_object(
            *args,
            {
                "apiVersion": "example.stockade.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "w"},
                "spec": {"size": 1},
            },
        )
    )
    assert custom.get_namespaced_custom_object(*args, "w")["spec"]["size"] == 1
    custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 3}})
    assert custom.get_namespaced_custom_object(*args, "w")["spec"]["size"] == 3
    # The schema is enforced by the real API server: size must be >= 1.
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 0}})
    assert refused.value.status == 422


def test_namespace_and_pod_round_trip(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    make_namespace(kube_client, "pods-test")
    eventually(lambda: core.read_namespaced_service_account("default", "pods-test"))
    pod = {
        "metadata": {"name": "p", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }
    core.create_namespaced_pod("pods-test", pod)
    read = core.read_namespaced_pod("p", "pods-test")
    assert read.metadata.labels == {"app": "x"}
    assert read.spec.containers[0].image == "registry.k8s.io/pause:3.10"
    assert read.status.phase == "Pending"  # no kubelet in this tier


def test_service_account_token_authenticates(apiserver: LocalControlPlane, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    make_namespace(kube_client, "sa-test")
    core.create_namespaced_service_account("sa-test", {"metadata": {"name": "robot"}})
    token = core.create_namespaced_service_account_token(
        "robot", "sa-test", {"spec": {"audiences": [], "expirationSeconds": 600}}
    ).status.token
    configuration = client.Configuration()
    configuration.host = apiserver.server
    ca_file = apiserver.dir / "pki" / "ca.crt"
    configuration.ssl_ca_cert = str(ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as token_client:
        review = client.AuthenticationV1Api(token_client).create_self_subject_review({})
        assert review.status.user_info.username == "system:serviceaccount:sa-test:robot"
        # RBAC is on: the fresh service account may not list pods.
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(token_client).list_namespaced_pod("sa-test")
        assert denied.value.status == 403
    configuration.api_key = {"authorization": "Bearer not-a-token"}
    with client.ApiClient(configuration) as bad_client, pytest.raises(ApiException) as unauthorized:
        client.AuthenticationV1Api(bad_client).create_self_subject_review({})
    assert unauthorized.value.status == 401


def test_namespace_deletion_completes_and_garbage_collection(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    make_namespace(kube_client, "gc-test")
    owner = core.create_namespaced_config_map("gc-test", {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        "gc-test",
        {
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", "gc-test")

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", "gc-test")
        except ApiException as error:
            return error.status == 404
        return False

    eventually(dependent_gone)
    core.create_namespaced_config_map("gc-test", {"metadata": {"name": "leftover"}})
    core.delete_namespace("gc-test")

    def namespace_gone() -> bool:
        try:
            core.read_namespace("gc-test")
        except ApiException as error:
            return error.status == 404
        return False

    eventually(namespace_gone, timeout=90)


def test_two_api_servers_are_independent(control_plane_factory: Any) -> None:
    first = control_plane_factory("independent-a")
    second = control_plane_factory("independent-b")
    assert first.apiserver_port != second.apiserver_port
    assert first.ca_pem != second.ca_pem
    a = config.new_client_from_config_dict(first.kubeconfig)
    b = config.new_client_from_config_dict(second.kubeconfig)
    client.CoreV1Api(a).create_namespace({"metadata": {"name": "only-in-a"}})
    names_b = {ns.metadata.name for ns in client.CoreV1Api(b).list_namespace().items}
    assert "only-in-a" not in names_b
    assert "only-in-a" in {ns.metadata.name for ns in client.CoreV1Api(a).list_namespace().items}
    # Each trusts only its own CA: a's credentials are refused by b.
    crossed = first.kubeconfig
    crossed["clusters"][0]["cluster"]["server"] = second.server
    crossed["clusters"][0]["cluster"]["certificate-authority-data"] = second.kubeconfig["clusters"][0]["cluster"][
        "certificate-authority-data"
    ]
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(config.new_client_from_config_dict(crossed)).list_namespace()
    assert refused.value.status == 401


def test_kubectl_version_reports_pinned_release(apiserver: LocalControlPlane) -> None:
    result = subprocess.run(
        [
            str(find_binary("kubectl")),
            "--kubeconfig",
            str(apiserver.kubeconfig_path),
            "version",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    versions = json.loads(result.stdout)
    expected = kubernetes_version()
    assert expected.startswith("v1.34.")
    assert versions["serverVersion"]["gitVersion"] == expected
    assert versions["clientVersion"]["gitVersion"] == expected
    assert versions["serverVersion"]["minor"] == "34"
