"""The syncer against real API servers: one super cluster, two tenant control planes."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY

from stockade import naming
from stockade.kube import Credentials
from stockade.model import TenantSpec
from stockade.syncer import translate as tr
from stockade.syncer.kinds import volumes
from stockade.syncer.runner import tenant_context
from stockade.syncer.translate import super_name
from stockade_dev.testbed import LocalControlPlane, find_binary
from tests.helpers import eventually
from tests.integration.conftest import service_account_kubeconfig
from tests.integration.syncer_fixtures import SyncerThread, TenantUnderTest, provision_tenant

pytestmark = pytest.mark.integration
PAUSE = "registry.k8s.io/pause:3.10"
POD_NAME_ENV = {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
WEB_CONTAINER = {"name": "app", "image": PAUSE, "env": [POD_NAME_ENV]}
RESTRICTED_CONTAINER = {
    "name": "app", "image": PAUSE,
    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}},
}  # fmt: skip


@pytest.fixture(scope="module")
def syncers(super_cluster: LocalControlPlane, super_client: client.ApiClient) -> Iterator[SyncerThread]:
    path = service_account_kubeconfig(super_cluster, super_client, "stockade-system", "stockade-operator")
    thread = SyncerThread(Credentials.from_kubeconfig(yaml.safe_load(path.read_text())))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def tenant_a(
    control_plane_factory: Callable[..., LocalControlPlane], super_client: client.ApiClient, syncers: SyncerThread
) -> TenantUnderTest:
    tenant = provision_tenant("sync-a", {"workloads": {"podSecurity": "baseline"}}, control_plane_factory, super_client)
    syncers.add(tenant, patrol_seconds=5)
    return tenant


@pytest.fixture(scope="module")
def tenant_b(
    control_plane_factory: Callable[..., LocalControlPlane], super_client: client.ApiClient, syncers: SyncerThread
) -> TenantUnderTest:
    tenant = provision_tenant("sync-b", {}, control_plane_factory, super_client)  # restricted
    syncers.add(tenant, patrol_seconds=5)
    return tenant


def super_pods(super_client: client.ApiClient, tenant: TenantUnderTest) -> list[Any]:
    return client.CoreV1Api(super_client).list_namespaced_pod(tenant.workloads_namespace).items


def super_pod_for(super_client: client.ApiClient, tenant: TenantUnderTest, namespace: str, name: str) -> Any:
    return client.CoreV1Api(super_client).read_namespaced_pod(
        tr.super_name(namespace, name), tenant.workloads_namespace
    )


def wait_super_pod(
    super_client: client.ApiClient, tenant: TenantUnderTest, namespace: str, name: str, timeout: float = 60
) -> Any:
    """The super pod of a tenant pod, once synced; on failure the report says where it stuck."""
    try:
        return eventually(
            lambda: super_pod_for(super_client, tenant, namespace, name),
            timeout,
            what=f"super pod of {namespace}/{name}",
        )
    except AssertionError as error:
        core = client.CoreV1Api(tenant.superuser)
        pod = core.read_namespaced_pod(name, namespace)
        node = core.read_node(tenant.context().virtual_node)
        raise AssertionError(
            f"{error}\ntenant pod: node={pod.spec.node_name} status={pod.status}\n"
            f"virtual node taints={node.spec.taints} conditions={node.status.conditions}"
        ) from None


def ensure_namespace(tenant: TenantUnderTest, name: str) -> None:
    core = client.CoreV1Api(tenant.superuser)
    try:
        core.create_namespace({"metadata": {"name": name}})
    except ApiException as error:
        assert error.status == 409
    eventually(lambda: core.read_namespaced_service_account("default", name), 30)


def make_pod(tenant: TenantUnderTest, namespace: str, name: str, spec: dict[str, Any] | None = None) -> Any:
    ensure_namespace(tenant, namespace)
    body = {"metadata": {"name": name}, "spec": spec or {"containers": [{"name": "app", "image": PAUSE}]}}
    return client.CoreV1Api(tenant.superuser).create_namespaced_pod(namespace, body)


@pytest.fixture
def freed(tenant_a: TenantUnderTest, super_client: client.ApiClient) -> Iterator[Callable[[str], str]]:
    """Namespaces of tenant A whose pods go when the test ends, their super pods waited for: each
    super pod holds part of the tenant's quota, which the later tests of this module need."""
    namespaces: list[str] = []

    def register(namespace: str) -> str:
        namespaces.append(namespace)
        return namespace

    yield register
    core = client.CoreV1Api(tenant_a.superuser)
    for namespace in namespaces:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    eventually(
        lambda: not [p for p in super_pods(super_client, tenant_a)
                     if p.metadata.annotations.get(naming.ANNOTATION_NAMESPACE) in namespaces],
        60, what="the test's super pods gone",
    )  # fmt: skip


def gone(check: Callable[[], Any]) -> bool:
    try:
        check()
    except ApiException as error:
        return error.status == 404
    return False


def test_virtual_node_is_ready_with_the_quota_as_capacity(tenant_a: TenantUnderTest) -> None:
    def published() -> Any:
        # Created first, its status written right after: wait for both.
        node = client.CoreV1Api(tenant_a.superuser).read_node("stockade-sync-a")
        return node if node.status.capacity else None

    node = eventually(published, 30, what="virtual node with its status")
    assert node.status.capacity["pods"] == "110"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_deployment_pods_run_sandboxed_without_super_credentials(
    tenant_a: TenantUnderTest, super_client: client.ApiClient
) -> None:
    ensure_namespace(tenant_a, "web")
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [WEB_CONTAINER]}},
        },
    }  # fmt: skip
    client.AppsV1Api(tenant_a.superuser).create_namespaced_deployment("web", deployment)
    pods = eventually(lambda: len(super_pods(super_client, tenant_a)) == 2 and super_pods(super_client, tenant_a),
                      60, what="2 super pods")  # fmt: skip
    tenant_pods = client.CoreV1Api(tenant_a.superuser).list_namespaced_pod("web").items
    assert {p.spec.node_name for p in tenant_pods} == {"stockade-sync-a"}  # bound by the tenant's scheduler
    for pod in pods:
        spec = pod.spec
        assert spec.runtime_class_name == "kata"
        assert spec.automount_service_account_token is False
        assert spec.overhead == {"cpu": "250m", "memory": "320Mi"}  # set by the super cluster, not the tenant
        assert (
            pod.metadata.labels[tr.carried_label("app")] == "web"
            and pod.metadata.labels["stockade.dev/tenant"] == "sync-a"
        )
        assert pod.metadata.annotations[naming.ANNOTATION_NAMESPACE] == "web"
        container = spec.containers[0]
        assert container.resources.limits == {"cpu": "1", "memory": "512Mi"}
        env = {e.name: e for e in container.env}
        assert env["KUBERNETES_SERVICE_HOST"].value == "127.0.0.1"
        # The downward API's metadata.name is the tenant pod's name, fixed for the pod's life.
        assert env["POD"].value == pod.metadata.annotations[naming.ANNOTATION_NAME]
        # No projected super-cluster token anywhere; the token volume reads a Secret holding the tenant's token.
        sources = [source for v in spec.volumes if v.projected for source in v.projected.sources]
        assert sources and not [source for source in sources if source.service_account_token]
        secret_name = next(source.secret.name for source in sources if source.secret)
        # Issued right after its super pod exists (owned by it); the kubelet waits for it, so does this test.
        secret = eventually(partial(client.CoreV1Api(super_client).read_namespaced_secret, secret_name,
                                    tenant_a.workloads_namespace), 30, what="the pod's token Secret")  # fmt: skip
        token = base64.b64decode(secret.data["token"]).decode()
        assert base64.b64decode(secret.data["ca.crt"]) == tenant_a.plane.ca_pem
        configuration = client.Configuration()
        configuration.host = tenant_a.plane.server
        configuration.ssl_ca_cert = str(tenant_a.plane.dir / "pki" / "ca.crt")
        configuration.api_key = {"authorization": f"Bearer {token}"}
        with client.ApiClient(configuration) as as_pod:
            review = client.AuthenticationV1Api(as_pod).create_self_subject_review({})
        assert review.status.user_info.username == "system:serviceaccount:web:default"


def test_a_projected_token_of_its_own_audience_is_minted_by_the_tenant(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, freed: Callable[[str], str]
) -> None:
    freed("tokens")
    vault = {"name": "vault", "projected": {"sources": [
        {"serviceAccountToken": {"path": "sa-token", "audience": "vault", "expirationSeconds": 600}}]}}  # fmt: skip
    spec = {"containers": [{"name": "app", "image": PAUSE}], "volumes": [vault], "automountServiceAccountToken": False}
    make_pod(tenant_a, "tokens", "reader", spec)
    shadow = wait_super_pod(super_client, tenant_a, "tokens", "reader", 60)
    (source,) = next(v for v in shadow.spec.volumes if v.name == "vault").projected.sources
    (item,) = source.secret.items
    assert item.path == "sa-token"
    secret = eventually(partial(client.CoreV1Api(super_client).read_namespaced_secret, source.secret.name,
                                tenant_a.workloads_namespace), 30, what="the pod's token Secret")  # fmt: skip
    assert "token" not in secret.data  # the pod mounts no token of the API server's own audience
    claims = json.loads(base64.urlsafe_b64decode(base64.b64decode(secret.data[item.key]).split(b".")[1] + b"=="))
    assert claims["aud"] == ["vault"] and claims["sub"] == "system:serviceaccount:tokens:default"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["pod"]["name"] == "reader"  # bound to the tenant pod
    # Renewal is paced by the lifetime asked for (the shortest of the pod's tokens).
    expires = secret.metadata.annotations[naming.TOKEN_EXPIRES_ANNOTATION]
    left = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=8) < left <= datetime.timedelta(minutes=10)


def test_the_standard_token_is_renewed_on_the_lifetime_it_asks_for(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, freed: Callable[[str], str]
) -> None:
    freed("tokens")
    # What the tenant's admission puts in every pod: 3607 s, which an API server extending token
    # lifetimes (the default) grants for a year.
    api_access = {"name": "kube-api-access", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}  # fmt: skip
    make_pod(tenant_a, "tokens", "standard", {"containers": [{"name": "app", "image": PAUSE}], "volumes": [api_access]})
    shadow = wait_super_pod(super_client, tenant_a, "tokens", "standard", 60)
    (source,) = next(v for v in shadow.spec.volumes if v.name == "kube-api-access").projected.sources
    secret = eventually(partial(client.CoreV1Api(super_client).read_namespaced_secret, source.secret.name,
                                tenant_a.workloads_namespace), 30, what="the pod's token Secret")  # fmt: skip
    expires = secret.metadata.annotations[naming.TOKEN_EXPIRES_ANNOTATION]
    left = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=58) < left <= datetime.timedelta(seconds=3607)
    claims = json.loads(base64.urlsafe_b64decode(base64.b64decode(secret.data["token"]).split(b".")[1] + b"=="))
    assert claims["exp"] - claims["iat"] > 3607  # granted for longer than asked: the case this guards


def test_status_flows_up_and_deletion_converges_both_ways(
    tenant_a: TenantUnderTest, super_client: client.ApiClient
) -> None:
    make_pod(tenant_a, "status", "one")
    shadow = wait_super_pod(super_client, tenant_a, "status", "one", 60)
    status = {"status": {"phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}],
                         "hostIP": "172.18.0.2", "conditions": [{"type": "Ready", "status": "True"}],
                         "containerStatuses": [{"name": "app", "ready": True, "restartCount": 3, "image": PAUSE,
                                                "imageID": "", "state": {"running": {}}}]}}  # fmt: skip
    client.CoreV1Api(super_client).patch_namespaced_pod_status(
        shadow.metadata.name, tenant_a.workloads_namespace, status
    )
    tenant_core = client.CoreV1Api(tenant_a.superuser)

    def mirrored() -> Any:
        pod = tenant_core.read_namespaced_pod("one", "status")
        return pod if pod.status.phase == "Running" else None

    pod = eventually(mirrored, 30, what="status mirrored")
    assert pod.status.pod_ip == "10.244.0.9" and pod.status.container_statuses[0].restart_count == 3
    # The super node's address stays hidden: the host is the virtual node, at its kubelet API's address.
    assert pod.status.host_ip == tenant_a.context().virtual_node_ip != "192.0.2.1"

    # The super pod disappears: the tenant pod is deleted, so its controllers replace it.
    client.CoreV1Api(super_client).delete_namespaced_pod(shadow.metadata.name, tenant_a.workloads_namespace)
    eventually(lambda: gone(lambda: tenant_core.read_namespaced_pod("one", "status")), 30, what="tenant pod deleted")

    # The tenant deletes a pod: its super pod goes, then the tenant pod finishes terminating.
    make_pod(tenant_a, "status", "two")
    wait_super_pod(super_client, tenant_a, "status", "two", 60)
    tenant_core.delete_namespaced_pod("two", "status")
    eventually(lambda: gone(lambda: super_pod_for(super_client, tenant_a, "status", "two")), 30)
    eventually(lambda: gone(lambda: tenant_core.read_namespaced_pod("two", "status")), 30)


def test_what_a_tenant_may_change_in_a_running_pod_follows(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, freed: Callable[[str], str]
) -> None:
    freed("updates")
    info = {
        "name": "info",
        "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
    }
    make_pod(tenant_a, "updates", "one", {"containers": [{"name": "app", "image": PAUSE}], "volumes": [info]})
    wait_super_pod(super_client, tenant_a, "updates", "one", 60)
    tenant_core = client.CoreV1Api(tenant_a.superuser)
    tenant_core.patch_namespaced_pod(
        "one", "updates", {"metadata": {"labels": {"tier": "gold"}}, "spec": {"activeDeadlineSeconds": 3600}}
    )

    def followed() -> Any:
        shadow = super_pod_for(super_client, tenant_a, "updates", "one")
        return shadow if shadow.spec.active_deadline_seconds == 3600 else None

    shadow = eventually(followed, 30, what="activeDeadlineSeconds carried")
    # The downward-API file of all labels reads the tenant pod's labels, as its kubelet writes them.
    assert shadow.metadata.annotations[naming.ANNOTATION_TENANT_LABELS] == 'tier="gold"'
    assert shadow.spec.volumes[0].downward_api.items[0].field_ref.field_path == (
        f"metadata.annotations['{naming.ANNOTATION_TENANT_LABELS}']"
    )


@pytest.mark.parametrize(
    ("name", "spec_update", "field"),
    [
        ("privileged", lambda s: s["containers"][0].update(securityContext={"privileged": True}),
         "securityContext.privileged"),
        ("host-network", lambda s: s.update(hostNetwork=True), "spec.hostNetwork"),
        ("host-pid", lambda s: s.update(hostPID=True), "spec.hostPID"),
        ("host-ipc", lambda s: s.update(hostIPC=True), "spec.hostIPC"),
        ("host-path", lambda s: s.update(volumes=[{"name": "h", "hostPath": {"path": "/etc"}}]), "hostPath"),
        ("host-port", lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 8080}]),
         "hostPort"),
        ("add-caps", lambda s: s["containers"][0].update(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
         "capabilities.add"),
        ("sysctl", lambda s: s.update(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
         "sysctls"),
        ("runtime-class", lambda s: s.update(runtimeClassName="runc"), "spec.runtimeClassName"),
        ("proc-mount", lambda s: s["containers"][0].update(securityContext={"procMount": "Unmasked"}), "procMount"),
    ],
)  # fmt: skip
def test_refused_pods_never_reach_the_super_cluster(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, name: str, spec_update: Any, field: str
) -> None:
    if name == "runtime-class":
        try:
            client.NodeV1Api(tenant_a.superuser).create_runtime_class({"metadata": {"name": "runc"}, "handler": "runc"})
        except ApiException as error:
            assert error.status == 409
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": PAUSE}]}
    spec_update(spec)
    try:
        make_pod(tenant_a, "refusals", name, spec)
    except ApiException as error:  # the tenant API server may refuse some itself (e.g. procMount)
        assert error.status in (400, 403, 422), error
        return
    tenant_core = client.CoreV1Api(tenant_a.superuser)

    def told() -> Any:
        pod = tenant_core.read_namespaced_pod(name, "refusals")
        return next((c for c in pod.status.conditions or [] if c.reason == "StockadeRejected"), None)

    condition = eventually(told, 30, what="refusal reported")
    assert condition.type == "PodScheduled" and condition.status == "False"
    assert field in condition.message

    def told_by_event() -> bool:  # posted right after the condition is written
        events = tenant_core.list_namespaced_event("refusals", field_selector=f"involvedObject.name={name}").items
        return any(e.reason == "StockadeRejected" and field in e.message for e in events)

    eventually(told_by_event, 30, what="refusal Event")
    assert gone(lambda: super_pod_for(super_client, tenant_a, "refusals", name))


def test_ephemeral_containers_are_carried_and_a_privileged_one_refused(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, freed: Callable[[str], str]
) -> None:
    freed("debug")
    tenant_core = client.CoreV1Api(tenant_a.superuser)
    make_pod(tenant_a, "debug", "target")
    make_pod(tenant_a, "debug", "plain")
    wait_super_pod(super_client, tenant_a, "debug", "target", 60)
    wait_super_pod(super_client, tenant_a, "debug", "plain", 60)
    privileged = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": PAUSE,
                                                    "securityContext": {"privileged": True}}]}}  # fmt: skip
    tenant_core.patch_namespaced_pod_ephemeralcontainers("target", "debug", privileged)
    plain = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": PAUSE, "targetContainerName": "app",
                                               "env": [{"name": "WHO", "valueFrom": {"fieldRef": {
                                                   "fieldPath": "metadata.name"}}}]}]}}  # fmt: skip
    tenant_core.patch_namespaced_pod_ephemeralcontainers("plain", "debug", plain)

    # The positive control: a plain one is added to the super pod, translated as any container.
    def carried() -> Any:
        return super_pod_for(super_client, tenant_a, "debug", "plain").spec.ephemeral_containers

    (dbg,) = eventually(carried, 60, what="the ephemeral container added to the super pod")
    assert dbg.name == "dbg" and dbg.image == PAUSE and dbg.target_container_name == "app"
    assert [(e.name, e.value) for e in dbg.env if e.name == "WHO"] == [("WHO", "plain")]
    assert dbg.resources is None or not (dbg.resources.limits or dbg.resources.requests)

    def told_by_event() -> bool:
        events = tenant_core.list_namespaced_event("debug", field_selector="involvedObject.name=target").items
        return any(
            e.reason == "StockadeRejected" and "ephemeralContainers[0].securityContext.privileged" in e.message
            for e in events
        )

    eventually(told_by_event, 30, what="refusal Event")
    assert not super_pod_for(super_client, tenant_a, "debug", "target").spec.ephemeral_containers
    # The pod it was added to keeps running, and is not marked refused.
    conditions = tenant_core.read_namespaced_pod("target", "debug").status.conditions or []
    assert not [c for c in conditions if c.reason == "StockadeRejected"]


def test_pod_security_restricted_is_enforced_by_the_syncer(
    tenant_b: TenantUnderTest, super_client: client.ApiClient
) -> None:
    make_pod(tenant_b, "apps", "loose")  # runs as root by default: not "restricted"
    make_pod(tenant_b, "apps", "tight", {"containers": [RESTRICTED_CONTAINER]})
    wait_super_pod(super_client, tenant_b, "apps", "tight", 60)

    def told() -> Any:
        pod = client.CoreV1Api(tenant_b.superuser).read_namespaced_pod("loose", "apps")
        return next((c for c in pod.status.conditions or [] if c.reason == "StockadeRejected"), None)

    assert "Pod Security restricted" in eventually(told, 30).message
    assert gone(lambda: super_pod_for(super_client, tenant_b, "apps", "loose"))


def test_services_configmaps_and_endpoints(tenant_a: TenantUnderTest, super_client: client.ApiClient) -> None:
    ensure_namespace(tenant_a, "svc")
    core = client.CoreV1Api(tenant_a.superuser)
    core.create_namespaced_config_map("svc", {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    core.create_namespaced_service(
        "svc", {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    )
    core.create_namespaced_service(
        "svc", {"metadata": {"name": "mitm"}, "spec": {"ports": [{"port": 80}], "externalIPs": ["8.8.8.8"]}}
    )
    core.create_namespaced_service("svc", {"metadata": {"name": "outside"}, "spec": {"ports": [{"port": 80}]}})
    core.create_namespaced_endpoints(
        "svc",
        {"metadata": {"name": "outside"}, "subsets": [{"addresses": [{"ip": "10.96.0.1"}], "ports": [{"port": 443}]}]},
    )
    super_core = client.CoreV1Api(super_client)
    ns = tenant_a.workloads_namespace
    cm = eventually(lambda: super_core.read_namespaced_config_map(tr.super_name("svc", "settings"), ns), 30)
    assert cm.data == {"a": "1"}
    web = eventually(lambda: super_core.read_namespaced_service(tr.super_name("svc", "web"), ns), 30)
    assert web.spec.selector == {
        tr.carried_label("app"): "web",
        naming.LABEL_NAMESPACE: "svc",
        "stockade.dev/tenant": "sync-a",
    }

    # One address in both clusters, from the tenant's own Service range.
    tenant_ip = core.read_namespaced_service("web", "svc").spec.cluster_ip
    assert web.spec.cluster_ip == tenant_ip
    assert ipaddress.ip_address(tenant_ip) in ipaddress.ip_network(tenant_a.service_range)
    # ConfigMaps are synced whether or not a pod uses them; an update follows.
    core.patch_namespaced_config_map("settings", "svc", {"data": {"a": "2"}})
    eventually(
        lambda: super_core.read_namespaced_config_map(tr.super_name("svc", "settings"), ns).data == {"a": "2"}, 30
    )

    def refused(kind: str, name: str) -> bool:
        events = core.list_namespaced_event("svc", field_selector=f"involvedObject.name={name}").items
        return any(e.reason == "StockadeRejected" for e in events)

    eventually(lambda: refused("Service", "mitm"), 30, what="externalIPs refused")
    eventually(lambda: refused("Endpoints", "outside"), 30, what="foreign endpoints refused")
    assert gone(lambda: super_core.read_namespaced_service(tr.super_name("svc", "mitm"), ns))
    assert gone(lambda: super_core.read_namespaced_endpoints(tr.super_name("svc", "outside"), ns))
    # Deleting the tenant namespace removes its super objects.
    core.delete_namespace("svc")
    eventually(
        lambda: gone(lambda: super_core.read_namespaced_config_map(tr.super_name("svc", "settings"), ns)),
        90,
        what="super objects of a deleted namespace removed",
    )


def test_endpoint_slices_a_tenant_writes_reach_only_its_own_pods(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, freed: Callable[[str], str]
) -> None:
    freed("slices")
    make_pod(tenant_a, "slices", "server")
    shadow = wait_super_pod(super_client, tenant_a, "slices", "server", 60)
    # No kubelet runs it here: the super pod's address is written as the super kubelet would.
    status = {"status": {"phase": "Running", "podIP": "10.244.0.31", "podIPs": [{"ip": "10.244.0.31"}]}}
    client.CoreV1Api(super_client).patch_namespaced_pod_status(
        shadow.metadata.name, tenant_a.workloads_namespace, status
    )
    core = client.CoreV1Api(tenant_a.superuser)
    core.create_namespaced_service("slices", {"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})
    discovery = client.DiscoveryV1Api(tenant_a.superuser)

    def slice_body(name: str, address: str, manager: str = "me") -> dict[str, Any]:
        labels = {naming.SLICE_SERVICE_LABEL: "manual", naming.SLICE_MANAGED_BY_LABEL: manager}
        return {"metadata": {"name": name, "labels": labels}, "addressType": "IPv4",
                "endpoints": [{"addresses": [address]}], "ports": [{"port": 8080, "protocol": "TCP"}]}  # fmt: skip

    discovery.create_namespaced_endpoint_slice("slices", slice_body("own", "10.244.0.31"))
    discovery.create_namespaced_endpoint_slice("slices", slice_body("foreign", "10.96.0.1"))
    mirrored_by_tenant = slice_body("mirrored", "10.244.0.31", "endpointslicemirroring-controller.k8s.io")
    discovery.create_namespaced_endpoint_slice("slices", mirrored_by_tenant)
    super_discovery = client.DiscoveryV1Api(super_client)
    ns = tenant_a.workloads_namespace

    def mirrored() -> Any:
        return super_discovery.read_namespaced_endpoint_slice(tr.super_name("slices", "own"), ns)

    own = eventually(mirrored, 30, what="the tenant's slice in the super cluster")
    assert own.metadata.labels[naming.SLICE_SERVICE_LABEL] == tr.super_name("slices", "manual")
    assert own.metadata.labels[naming.SLICE_MANAGED_BY_LABEL] == naming.SLICE_MANAGER
    assert [e.addresses for e in own.endpoints] == [["10.244.0.31"]]

    def refused() -> bool:
        events = core.list_namespaced_event("slices", field_selector="involvedObject.name=foreign").items
        return any(e.reason == "StockadeRejected" and "10.96.0.1" in e.message for e in events)

    eventually(refused, 30, what="a slice toward an address not the tenant's pods' refused")
    assert gone(lambda: super_discovery.read_namespaced_endpoint_slice(tr.super_name("slices", "foreign"), ns))
    assert gone(lambda: super_discovery.read_namespaced_endpoint_slice(tr.super_name("slices", "mirrored"), ns))
    discovery.delete_namespaced_endpoint_slice("own", "slices")
    eventually(lambda: gone(mirrored), 30, what="the slice deleted with the tenant's")


def test_two_tenants_never_collide(
    tenant_a: TenantUnderTest, tenant_b: TenantUnderTest, super_client: client.ApiClient
) -> None:
    for tenant in (tenant_a, tenant_b):
        make_pod(tenant, "same", "twin", {"containers": [RESTRICTED_CONTAINER]})
    a = wait_super_pod(super_client, tenant_a, "same", "twin", 60)
    b = wait_super_pod(super_client, tenant_b, "same", "twin", 60)
    assert a.metadata.namespace != b.metadata.namespace
    assert a.metadata.annotations[naming.ANNOTATION_UID] != b.metadata.annotations[naming.ANNOTATION_UID]
    # Each tenant's syncer identity cannot even authenticate to the other's API server.
    crossed = client.Configuration()
    crossed.host = tenant_b.plane.server
    crossed.ssl_ca_cert = str(tenant_b.plane.dir / "pki" / "ca.crt")
    leaf = tenant_a.syncer_credentials()
    cert = tenant_a.plane.dir / "syncer-a.crt"
    key = tenant_a.plane.dir / "syncer-a.key"
    cert.write_bytes(leaf.cert_pem or b"")
    key.write_bytes(leaf.key_pem or b"")
    crossed.cert_file, crossed.key_file = str(cert), str(key)
    with client.ApiClient(crossed) as api, pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_pod_for_all_namespaces()
    assert refused.value.status == 401


def test_names_over_63_characters(tenant_a: TenantUnderTest, super_client: client.ApiClient) -> None:
    namespace, name = "n" * 63, "p" * 63
    make_pod(tenant_a, namespace, name)
    shadow = wait_super_pod(super_client, tenant_a, namespace, name, 60)
    assert len(shadow.metadata.name) <= 63
    assert shadow.metadata.annotations[naming.ANNOTATION_NAME] == name


def test_watch_recovers_from_compaction_and_apiserver_restart(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, syncers: SyncerThread
) -> None:
    from stockade.syncer import metrics

    error_before = metrics.WATCH_RESTARTS.labels("sync-a", "Pod", "error")._value.get()
    core = client.CoreV1Api(tenant_a.superuser)
    ensure_namespace(tenant_a, "churn")
    for i in range(30):
        core.create_namespaced_config_map("churn", {"metadata": {"name": f"c{i}"}})
    compact(tenant_a)
    tenant_a.plane.restart_apiserver()
    eventually(lambda: any(not ok for ok, _ in syncers.health["sync-a"]), 60, what="degradation reported")
    make_pod(tenant_a, "churn", "after-restart")
    wait_super_pod(super_client, tenant_a, "churn", "after-restart", 90)
    eventually(lambda: syncers.health["sync-a"][-1][0] is True, 60, what="recovery reported")
    assert metrics.WATCH_RESTARTS.labels("sync-a", "Pod", "error")._value.get() > error_before


def compact(tenant: TenantUnderTest) -> int:
    """Compact the tenant's etcd up to its current revision; returns the revision."""
    pki_dir = tenant.plane.dir / "pki"
    etcdctl = [
        str(find_binary("etcdctl")),
        f"--endpoints=https://127.0.0.1:{tenant.plane.etcd_port}",
        f"--cacert={pki_dir / 'etcd-ca.crt'}",
        f"--cert={pki_dir / 'apiserver-etcd-client.crt'}",
        f"--key={pki_dir / 'apiserver-etcd-client.key'}",
    ]
    status = subprocess.run([*etcdctl, "endpoint", "status", "-w", "json"], capture_output=True, text=True, check=True)
    revision = int(json.loads(status.stdout)[0]["Status"]["header"]["revision"])
    subprocess.run([*etcdctl, "compact", str(revision)], capture_output=True, text=True, check=True)
    return revision


def test_a_watch_from_a_compacted_version_is_gone_and_relisted(tenant_a: TenantUnderTest) -> None:
    """The informer turns the server's 410 into a re-list (what a syncer whose watch broke across a
    compaction meets)."""
    import asyncio

    from stockade.kube import KubeClient
    from stockade.syncer.informer import GoneError, Informer

    core = client.CoreV1Api(tenant_a.superuser)
    ensure_namespace(tenant_a, "compacted")
    old_version = core.list_namespaced_config_map("compacted").metadata.resource_version
    for i in range(20):
        core.create_namespaced_config_map("compacted", {"metadata": {"name": f"c{i}"}})
    revision = compact(tenant_a)
    assert revision > int(old_version)
    tenant_a.plane.restart_apiserver()  # a fresh watch cache: it starts after the compaction
    eventually(lambda: core.list_namespaced_config_map("compacted"), 30)

    async def scenario() -> tuple[type[BaseException] | None, int]:
        async with KubeClient(tenant_a.syncer_credentials()) as kube:
            informer = Informer(kube, "v1", "ConfigMap", tenant="sync-a", side="tenant",
                                on_change=lambda *_: None, namespace="compacted")  # fmt: skip
            informer.resource_version = old_version
            raised: type[BaseException] | None = None
            try:
                await asyncio.wait_for(informer._watch(), 30)
            except GoneError:
                raised = GoneError
            # What run() does next: list again, and the cache holds everything.
            await informer._relist()
            return raised, len(informer.cache)

    raised, cached = asyncio.run(scenario())
    assert raised is GoneError
    assert cached >= 20


def test_syncer_restart_resumes_without_duplicates_or_losses(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, syncers: SyncerThread
) -> None:
    make_pod(tenant_a, "restart", "kept")
    make_pod(tenant_a, "restart", "removed-while-down")
    wait_super_pod(super_client, tenant_a, "restart", "removed-while-down", 60)
    syncers.remove("sync-a")
    core = client.CoreV1Api(tenant_a.superuser)
    core.delete_namespaced_pod("removed-while-down", "restart", grace_period_seconds=0)
    make_pod(tenant_a, "restart", "created-while-down")
    syncers.add(tenant_a, patrol_seconds=5)
    wait_super_pod(super_client, tenant_a, "restart", "created-while-down", 60)
    eventually(lambda: gone(lambda: super_pod_for(super_client, tenant_a, "restart", "removed-while-down")), 60)
    names = [p.metadata.name for p in super_pods(super_client, tenant_a)]
    assert len(names) == len(set(names))
    assert super_pod_for(super_client, tenant_a, "restart", "kept")


def test_events_about_super_pods_reach_the_tenant(tenant_a: TenantUnderTest, super_client: client.ApiClient) -> None:
    make_pod(tenant_a, "events", "watched")
    shadow = wait_super_pod(super_client, tenant_a, "events", "watched", 60)
    # What a kubelet would post about the super pod.
    client.CoreV1Api(super_client).create_namespaced_event(tenant_a.workloads_namespace, {
        "metadata": {"name": f"{shadow.metadata.name}.pulled"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": shadow.metadata.name,
                           "namespace": tenant_a.workloads_namespace, "uid": shadow.metadata.uid},
        "reason": "Pulled", "message": "Successfully pulled image", "type": "Normal",
        "source": {"component": "kubelet", "host": "super-node-7"},
    })  # fmt: skip
    core = client.CoreV1Api(tenant_a.superuser)

    def forwarded() -> Any:
        events = core.list_namespaced_event("events", field_selector="involvedObject.name=watched").items
        return next((e for e in events if e.reason == "Pulled"), None)

    event = eventually(forwarded, 30, what="event forwarded")
    assert event.message == "Successfully pulled image"
    assert event.involved_object.uid == core.read_namespaced_pod("watched", "events").metadata.uid
    assert event.source.host == "stockade-sync-a"  # the super node's name stays hidden


def test_a_one_megabyte_config_map_syncs_without_breaking_a_watch(
    tenant_a: TenantUnderTest, super_client: client.ApiClient
) -> None:
    def restarts() -> float:
        return sum(
            REGISTRY.get_sample_value(
                "stockade_syncer_watch_restarts_total", {"tenant": "sync-a", "kind": "ConfigMap", "cause": cause}
            )
            or 0.0
            for cause in ("error", "gone")
        )

    ensure_namespace(tenant_a, "large")
    before = restarts()
    blob = "z" * 1_000_000
    client.CoreV1Api(tenant_a.superuser).create_namespaced_config_map(
        "large", {"metadata": {"name": "big"}, "data": {"blob": blob}}
    )
    super_core = client.CoreV1Api(super_client)
    name, ns = tr.super_name("large", "big"), tenant_a.workloads_namespace
    copy = eventually(lambda: super_core.read_namespaced_config_map(name, ns), 30, what="1 MB ConfigMap synced")
    assert copy.data["blob"] == blob
    time.sleep(2)  # the super side's watch has seen the copy too
    assert restarts() == before  # neither side's watch broke on the long line


def test_persistent_volume_claims_down_and_bound_up(tenant_a: TenantUnderTest, super_client: client.ApiClient) -> None:
    ensure_namespace(tenant_a, "storage")
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    client.CoreV1Api(tenant_a.superuser).create_namespaced_persistent_volume_claim("storage", claim)
    super_core = client.CoreV1Api(super_client)
    name, ns = tr.super_name("storage", "data"), tenant_a.workloads_namespace
    shadow = eventually(lambda: super_core.read_namespaced_persistent_volume_claim(name, ns), 30)
    assert shadow.spec.resources.requests == {"storage": "1Gi"}
    assert shadow.spec.access_modes == ["ReadWriteOnce"]
    # What the super cluster's volume binder does once a volume is provisioned.
    super_core.patch_namespaced_persistent_volume_claim(name, ns, {"spec": {"volumeName": "pvc-super-volume"}})
    super_core.patch_namespaced_persistent_volume_claim_status(
        name, ns, {"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}
    )
    tenant_core = client.CoreV1Api(tenant_a.superuser)

    def bound() -> bool:
        status = tenant_core.read_namespaced_persistent_volume_claim("data", "storage").status
        return status.phase == "Bound" and status.capacity == {"storage": "1Gi"}

    eventually(bound, 60, what="tenant claim bound by its own binder")
    volume = tenant_core.read_persistent_volume(f"pv-{name}")
    assert volume.spec.csi.volume_handle == name and volume.spec.claim_ref.name == "data"
    tenant_core.delete_namespaced_persistent_volume_claim("data", "storage")
    eventually(lambda: gone(lambda: tenant_core.read_persistent_volume(f"pv-{name}")), 60, what="tenant volume removed")
    eventually(lambda: gone(lambda: super_core.read_namespaced_persistent_volume_claim(name, ns)), 60)


# -- forced failures -------------------------------------------------------------------------


class DeafServer:
    """Accepts TCP connections on loopback and never answers a byte (bounded: closed at the end)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.held.append(connection)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for connection in [*self.held, self.listener]:
            connection.close()


@pytest.fixture
def deaf_server() -> Iterator[DeafServer]:
    server = DeafServer()
    yield server
    server.close()


SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}}


def seconds_to_sync(super_client: client.ApiClient, tenant: TenantUnderTest, name: str) -> float:
    """From the tenant's create to its super pod; the pod is then deleted (the module's quota is shared)."""
    started = time.monotonic()
    make_pod(tenant, "beside-deaf", name, {"containers": [{"name": "app", "image": PAUSE, "resources": SMALL}]})
    wait_super_pod(super_client, tenant, "beside-deaf", name, 60)
    elapsed = time.monotonic() - started
    client.CoreV1Api(tenant.superuser).delete_namespaced_pod(name, "beside-deaf", grace_period_seconds=0)
    return elapsed


def test_a_tenant_whose_api_server_never_answers_costs_the_others_nothing(
    tenant_a: TenantUnderTest, super_client: client.ApiClient, syncers: SyncerThread, deaf_server: DeafServer
) -> None:
    baseline = seconds_to_sync(super_client, tenant_a, "before")
    # A second tenant whose super side has work queued (its synced objects), and whose API server
    # accepts connections and never answers: its informers never list.
    deaf = "deaf"
    core = client.CoreV1Api(super_client)
    core.create_namespace({"metadata": {"name": naming.workloads_namespace(deaf)}})
    for i in range(3 * syncers.pool.workers):
        core.create_namespaced_config_map(naming.workloads_namespace(deaf), {"metadata": {
            "name": super_name("app", f"c{i}"),
            "labels": {naming.LABEL_TENANT: deaf, naming.LABEL_SYNCED: "true"},
            "annotations": {naming.ANNOTATION_NAMESPACE: "app", naming.ANNOTATION_NAME: f"c{i}",
                            naming.ANNOTATION_UID: f"u{i}"},
        }})  # fmt: skip
    credentials = dataclasses.replace(tenant_a.syncer_credentials(), server=f"https://127.0.0.1:{deaf_server.port}")
    ctx = tenant_context(deaf, TenantSpec(), "kata", "127.0.0.1", apiserver_port=deaf_server.port)
    deaf_syncer = syncers.start(ctx, credentials, tenant_a.plane.ca_pem, wait=False)
    try:
        # Positive control: the deaf tenant's keys are being handled (and re-queued, not dropped).
        def deaf_keys_cycling() -> Any:
            waits = dict(deaf_syncer._waits)
            return waits if len(waits) >= 3 * syncers.pool.workers and max(waits.values()) >= 3 else None

        eventually(deaf_keys_cycling, 30, what="the deaf tenant's keys looked at and re-queued")
        assert not deaf_syncer.synced()
        beside = [seconds_to_sync(super_client, tenant_a, f"beside-{i}") for i in range(3)]
        print(f"sync latency beside a deaf tenant: {beside} s (alone: {baseline:.2f} s)")  # for -s runs
        # Before workers stopped waiting, each of these took a worker-blocking 60 s per deaf key.
        assert max(beside) < max(5.0, 5 * baseline), (baseline, beside)
        assert len(deaf_server.held) >= 1  # it really was connected to, and never answered
    finally:
        syncers.remove(deaf)


def test_a_refused_volume_record_is_retried_until_it_is_written(
    tenant_a: TenantUnderTest, super_client: client.ApiClient
) -> None:
    """The tenant API server refuses the syncer's PersistentVolume for a while (an admission policy
    in the tenant): the claim is retried with backoff, and bound once the refusal is lifted."""
    admission = client.AdmissionregistrationV1Api(tenant_a.superuser)
    policy = "refuse-volume-records"
    volume_creates = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["persistentvolumes"],
    }
    admission.create_validating_admission_policy({
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [volume_creates]},
                 "validations": [{"expression": "!object.metadata.name.startsWith('pv-')",
                                  "message": "volume records are refused for now"}]},
    })  # fmt: skip
    admission.create_validating_admission_policy_binding(
        {"metadata": {"name": policy}, "spec": {"policyName": policy, "validationActions": ["Deny"]}}
    )
    tenant_core = client.CoreV1Api(tenant_a.superuser)
    try:
        ensure_namespace(tenant_a, "refused-storage")
        claim = {"metadata": {"name": "data"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
        # Positive control first: the policy really refuses such a volume (once the API server has it).
        probe = {"metadata": {"name": "pv-probe"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": volumes.VOLUME_DRIVER, "volumeHandle": "probe"}}}  # fmt: skip

        def probe_refused() -> bool:
            try:
                tenant_core.create_persistent_volume(probe)
            except ApiException as error:
                return "volume records are refused" in str(error.body)
            tenant_core.delete_persistent_volume("pv-probe")
            return False

        eventually(probe_refused, 30, what="the refusal in force")
        tenant_core.create_namespaced_persistent_volume_claim("refused-storage", claim)
        super_core = client.CoreV1Api(super_client)
        name, ns = super_name("refused-storage", "data"), tenant_a.workloads_namespace
        eventually(lambda: super_core.read_namespaced_persistent_volume_claim(name, ns), 30)
        # A volume for it in the super cluster, pre-bound: the super cluster's own binder binds the claim.
        super_core.create_persistent_volume({"metadata": {"name": "pvc-refused"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "csi": {"driver": "test.stockade.dev", "volumeHandle": "refused"},
            "claimRef": {"namespace": ns, "name": name}}})  # fmt: skip

        def super_bound() -> bool:
            return bool(super_core.read_namespaced_persistent_volume_claim(name, ns).status.phase == "Bound")

        eventually(super_bound, 60, what="super claim bound by the super cluster's binder")
        time.sleep(4)  # several refused attempts (0.5 s, 1 s, 2 s backoff, and the patrol)
        record = volumes.tenant_volume_name("refused-storage", "data")
        with pytest.raises(client.ApiException) as missing:
            tenant_core.read_persistent_volume(record)
        assert missing.value.status == 404
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)
    # Lifted: the next retry writes the record, and the tenant's own binder binds the claim.
    eventually(lambda: tenant_core.read_persistent_volume(record), 60, what="volume record written after the refusal")

    def bound() -> bool:
        return bool(
            tenant_core.read_namespaced_persistent_volume_claim("data", "refused-storage").status.phase == "Bound"
        )

    eventually(bound, 60, what="tenant claim bound")
