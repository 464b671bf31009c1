"""The PKI the operator generates is real: an actual etcd + kube-apiserver run on the Secrets'
certificates and keys, and the kubeconfigs authenticate with exactly their intended rights.
After a CA rotation the re-issued kubeconfigs work and the old ones fail."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stockade import certificates as certs
from stockade import naming, pki, render, tenant_rbac
from stockade.kubeconfig import ca_of
from stockade.model import TenantSpec
from stockade_dev.testbed import LocalControlPlane
from tests.helpers import eventually
from tests.integration.conftest import RunningOperator
from tests.integration.test_operator import (
    create_tenant,
    get_tenant,
    patch_tenant,
    tenant_body,
    wait_observed,
)

pytestmark = pytest.mark.integration
TENANT = "pki-real"


def stored_secrets(api: client.ApiClient) -> dict[str, Any]:
    cp = naming.control_plane_namespace(TENANT)
    items = client.CoreV1Api(api).list_namespaced_secret(cp).items
    return {s.metadata.name: {"data": s.data} for s in items}


def bundle_from(secrets: dict[str, Any]) -> certs.ControlPlanePKI:
    stored = render.pki_from_secrets(secrets)
    return certs.ControlPlanePKI(cas=stored.cas, leaves=stored.leaves, service_account_key=stored.service_account_key)


def kubeconfig_from(secrets: dict[str, Any], user: str, server: str) -> dict[str, Any]:
    import base64

    kubeconfig = yaml.safe_load(base64.b64decode(secrets[naming.kubeconfig_secret(user)]["data"]["kubeconfig"]))
    kubeconfig["clusters"][0]["cluster"]["server"] = server  # the Service URL, here a local port
    return dict(kubeconfig)


def allowed(api: client.ApiClient, verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "subresource": subresource,
                }
            }
        }
    )
    return bool(review.status.allowed)


def whoami(api: client.ApiClient) -> tuple[str, list[str]]:
    info = client.AuthenticationV1Api(api).create_self_subject_review({}).status.user_info
    return info.username, info.groups or []


def bootstrap_tenant_rbac(plane: LocalControlPlane) -> None:
    """What the operator does once a tenant API server is ready, with its short-lived bootstrap client."""
    boot = certs.issue_bootstrap_client(plane.pki.cas[certs.CLUSTER_CA])
    api = config.new_client_from_config_dict(plane.kubeconfig_for(boot, "bootstrap"))
    for obj in tenant_rbac.objects(TenantSpec.model_validate({"admins": {"users": ["alice@example.com"]}})):
        kind = obj["kind"]
        rbac = client.RbacAuthorizationV1Api(api)
        (rbac.create_cluster_role_binding if kind == "ClusterRoleBinding" else rbac.create_cluster_role)(obj)


@pytest.fixture(scope="module")
def operator_pki(super_client: client.ApiClient, stockade_operator: RunningOperator) -> dict[str, Any]:
    create_tenant(super_client, tenant_body(TENANT, {"admins": {"users": ["alice@example.com"]}}))
    wait_observed(super_client, TENANT)
    return stored_secrets(super_client)


def test_generated_kubeconfigs_authenticate_with_intended_rights(
    operator_pki: dict[str, Any], control_plane_factory: Callable[..., LocalControlPlane]
) -> None:
    plane = control_plane_factory("tenant-pki", control_plane_pki=bundle_from(operator_pki))
    bootstrap_tenant_rbac(plane)
    clients = {
        u: config.new_client_from_config_dict(kubeconfig_from(operator_pki, u, plane.server))
        for u in certs.KUBECONFIG_USERS
    }

    user, groups = whoami(clients[certs.ADMIN])
    assert user == certs.ADMIN_USER and certs.ADMIN_GROUP in groups
    assert certs.MASTERS_GROUP not in groups  # revocable admin, never system:masters
    assert allowed(clients[certs.ADMIN], "create", "namespaces")
    assert allowed(clients[certs.ADMIN], "create", "clusterrolebindings", "rbac.authorization.k8s.io")
    client.CoreV1Api(clients[certs.ADMIN]).create_namespace({"metadata": {"name": "made-by-admin"}})

    assert whoami(clients[certs.CONTROLLER_MANAGER])[0] == "system:kube-controller-manager"
    assert allowed(clients[certs.CONTROLLER_MANAGER], "create", "serviceaccounts", subresource="token")
    assert not allowed(clients[certs.CONTROLLER_MANAGER], "create", "clusterrolebindings", "rbac.authorization.k8s.io")

    assert whoami(clients[certs.SCHEDULER])[0] == "system:kube-scheduler"
    assert allowed(clients[certs.SCHEDULER], "create", "pods", subresource="binding")
    assert not allowed(clients[certs.SCHEDULER], "get", "secrets")
    assert not allowed(clients[certs.SCHEDULER], "create", "namespaces")

    assert whoami(clients[certs.SYNCER])[0] == certs.SYNCER_USER
    assert allowed(clients[certs.SYNCER], "list", "pods")
    assert allowed(clients[certs.SYNCER], "patch", "pods", subresource="status")
    assert allowed(clients[certs.SYNCER], "create", "nodes")
    assert not allowed(clients[certs.SYNCER], "create", "pods")
    assert not allowed(clients[certs.SYNCER], "create", "deployments", "apps")
    assert not allowed(clients[certs.SYNCER], "delete", "namespaces")
    assert not allowed(clients[certs.SYNCER], "create", "clusterrolebindings", "rbac.authorization.k8s.io")

    # The spec's admins are bound too, by name, and only through the revocable binding.
    binding = client.RbacAuthorizationV1Api(clients[certs.ADMIN]).read_cluster_role_binding(tenant_rbac.ADMINS_BINDING)
    assert {s.name for s in binding.subjects} == {certs.ADMIN_GROUP, "alice@example.com"}


def test_ca_rotation_reissues_every_kubeconfig_and_old_ones_fail(
    operator_pki: dict[str, Any],
    super_client: client.ApiClient,
    control_plane_factory: Callable[..., LocalControlPlane],
) -> None:
    old = operator_pki
    patch_tenant(super_client, TENANT, {"metadata": {"annotations": {naming.ANNOTATION_ROTATE_CA: "2026-11-22"}}})
    eventually(
        lambda: (get_tenant(super_client, TENANT)["status"].get("rotation") or {}).get("ca") == "2026-11-22",
        60,
        what="CA rotation handled",
    )

    def kubeconfigs_reissued() -> dict[str, Any] | None:
        # The rotation is recorded once the PKI Secrets are stored; the same pass then re-issues
        # the kubeconfigs, so they follow a moment later.
        secrets = stored_secrets(super_client)
        ca = bundle_from(secrets).cas[certs.CLUSTER_CA].cert_pem
        fresh = all(ca_of(kubeconfig_from(secrets, user, "https://unused")) == ca for user in certs.KUBECONFIG_USERS)
        return secrets if fresh else None

    new = eventually(kubeconfigs_reissued, 60, what="every kubeconfig re-issued with the new CA")
    new_bundle = bundle_from(new)
    new_ca = new_bundle.cas[certs.CLUSTER_CA]
    assert new_ca.cert_pem != bundle_from(old).cas[certs.CLUSTER_CA].cert_pem
    # Kamaji's classic bug: kubeconfigs keeping the old CA. Every one carries the new CA and a new cert.
    for user in certs.KUBECONFIG_USERS:
        kubeconfig = kubeconfig_from(new, user, "https://unused")
        assert ca_of(kubeconfig) == new_ca.cert_pem, user
    for name, leaf in new_bundle.leaves.items():
        ca_name = certs.leaf_requests(certs.ServingNames())[name][0]
        assert pki.is_signed_by(leaf.certificate, new_bundle.cas[ca_name].certificate), name
    # Service-account tokens stay valid: the signing key survives a CA rotation.
    assert new["pki-sa"]["data"] == old["pki-sa"]["data"]

    plane = control_plane_factory("tenant-rotated", control_plane_pki=new_bundle)
    bootstrap_tenant_rbac(plane)
    fresh = config.new_client_from_config_dict(kubeconfig_from(new, certs.ADMIN, plane.server))
    assert whoami(fresh)[0] == certs.ADMIN_USER

    stale = config.new_client_from_config_dict(kubeconfig_from(old, certs.ADMIN, plane.server))
    with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
        client.CoreV1Api(stale).list_namespace(_request_timeout=5)
    assert isinstance(refused.value.reason, urllib3.exceptions.SSLError | ssl.SSLError)
    # Even trusting the new CA, the old client certificate is refused.
    old_cert_new_ca = kubeconfig_from(old, certs.ADMIN, plane.server)
    old_cert_new_ca["clusters"][0]["cluster"]["certificate-authority-data"] = kubeconfig_from(
        new, certs.ADMIN, plane.server
    )["clusters"][0]["cluster"]["certificate-authority-data"]
    with pytest.raises(ApiException) as unauthorized:
        client.CoreV1Api(config.new_client_from_config_dict(old_cert_new_ca)).list_namespace()
    assert unauthorized.value.status == 401


def test_leaf_rotation_rolls_the_pods(super_client: client.ApiClient, operator_pki: dict[str, Any]) -> None:
    apps = client.AppsV1Api(super_client)
    cp = naming.control_plane_namespace(TENANT)

    def checksum() -> str:
        return apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.template.metadata.annotations[
            "stockade.dev/pki-checksum"
        ]

    before, secrets_before = checksum(), stored_secrets(super_client)
    patch_tenant(super_client, TENANT, {"metadata": {"annotations": {naming.ANNOTATION_ROTATE: "r1"}}})
    eventually(
        lambda: (get_tenant(super_client, TENANT)["status"].get("rotation") or {}).get("certificates") == "r1",
        60,
        what="leaf rotation handled",
    )
    after = stored_secrets(super_client)
    assert after["pki-ca"]["data"] == secrets_before["pki-ca"]["data"]
    assert after["pki-apiserver"]["data"]["tls.crt"] != secrets_before["pki-apiserver"]["data"]["tls.crt"]
    # The rotation is recorded as soon as the new certificates are stored, before the same pass
    # applies the StatefulSet with their checksum: the roll follows, it is not simultaneous.
    eventually(lambda: checksum() != before, 60, what="the control plane's pod template re-stamped")
