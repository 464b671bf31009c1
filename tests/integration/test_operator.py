"""The operator against a real super-cluster API server (no kubelets in this tier: the control
plane's pods are created but never run, so Ready stays False with reason Starting)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stockade import naming
from stockade import status as st
from stockade.config import OperatorConfig
from stockade.kube import Credentials, KubeClient
from stockade.model import API_VERSION, KIND, TenantStatus
from stockade.reconciler import TenantReconciler, _keep_others
from stockade.status import Check
from stockade.syncer.runner import WORKLOAD_SYNC_READY
from stockade_dev.testbed import LocalControlPlane
from tests.helpers import LEGACY_DEPLOYMENTS, argocd_health, eventually, kstatus
from tests.integration.conftest import REPO, RunningOperator, kubectl

pytestmark = pytest.mark.integration
GROUP, VERSION, PLURAL = "stockade.dev", "v1alpha1", "tenants"
CONTAINERS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def get_tenant(api: client.ApiClient, name: str) -> dict[str, Any]:
    return custom(api).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def create_tenant(api: client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    return custom(api).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)


def patch_tenant(api: client.ApiClient, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return custom(api).patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def wait_observed(api: client.ApiClient, name: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until the operator has handled the Tenant's current generation."""

    def check() -> dict[str, Any] | None:
        obj = get_tenant(api, name)
        cert = condition(obj, "CertificatesReady")
        status = obj.get("status", {})
        if cert and cert["status"] == "True" and status.get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        return None

    return eventually(check, timeout, what=f"tenant {name} observed")


def tenant_body(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec or {},
    }


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / name).read_text())


def gone(check: Any) -> bool:
    try:
        check()
    except ApiException as error:
        return error.status == 404
    return False


def assert_hardened_pod(template: dict[str, Any], runtime_class: str) -> None:
    spec = template["spec"]
    assert spec["runtime_class_name"] == runtime_class
    assert spec["automount_service_account_token"] is False
    assert spec["priority_class_name"] == "stockade-control-plane"
    security = spec["security_context"]
    assert security["run_as_non_root"] is True and security["run_as_user"] != 0
    assert security["seccomp_profile"]["type"] == "RuntimeDefault"
    assert template["metadata"]["annotations"]["stockade.dev/pki-checksum"]
    # One pod per replica: etcd and the API server as sidecars (in start order), then the controllers.
    assert [c["name"] for c in spec["init_containers"] + spec["containers"]] == CONTAINERS
    for container in spec["init_containers"] + spec["containers"]:
        sc = container["security_context"]
        assert sc["allow_privilege_escalation"] is False
        assert sc["read_only_root_filesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["liveness_probe"] and container["startup_probe"]
    assert all(c["readiness_probe"] and c["restart_policy"] == "Always" for c in spec["init_containers"])
    for volume in spec["volumes"]:
        for source in (volume.get("projected") or {}).get("sources") or []:
            for item in source["secret"]["items"]:
                # A CA's private key is never mounted into a pod.
                assert not (source["secret"]["name"].endswith("ca") and item["key"] == "tls.key")


def test_examples_create_every_object_with_the_security_settings(
    super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    for example in ("minimal.yaml", "production.yaml"):
        create_tenant(super_client, load_example(example))
    minimal, production = wait_observed(super_client, "team-a"), wait_observed(super_client, "payments")
    apps, core = client.AppsV1Api(super_client), client.CoreV1Api(super_client)
    networking, policy = client.NetworkingV1Api(super_client), client.PolicyV1Api(super_client)
    rbac = client.RbacAuthorizationV1Api(super_client)

    ranges: list[Any] = []
    for obj, replicas in ((minimal, 1), (production, 3)):
        name = obj["metadata"]["name"]
        cp, wl = naming.control_plane_namespace(name), naming.workloads_namespace(name)
        assert obj["status"]["phase"] == "Provisioning"
        assert obj["status"]["namespaces"] == {"controlPlane": cp, "workloads": wl}
        assert condition(obj, "IsolationReady")["status"] == "True"
        assert condition(obj, "ControlPlaneReady")["reason"] == "Starting"
        ready = condition(obj, "Ready")
        assert ready["status"] == "False" and ready["observedGeneration"] == obj["metadata"]["generation"]

        cp_ns, wl_ns = core.read_namespace(cp), core.read_namespace(wl)
        assert cp_ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert wl_ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert wl_ns.metadata.labels["stockade.dev/workloads"] == "true"
        assert wl_ns.metadata.owner_references[0].uid == obj["metadata"]["uid"]

        control_plane = apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).to_dict()
        assert control_plane["spec"]["replicas"] == replicas
        assert control_plane["metadata"]["labels"]["stockade.dev/tenant"] == name
        assert_hardened_pod(control_plane["spec"]["template"], "kata")
        deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(cp).items}
        assert set(deployments) == {naming.DNS, naming.KUBELET}
        dns, kubelet = deployments[naming.DNS], deployments[naming.KUBELET]
        assert dns.spec.replicas == replicas and dns.spec.template.spec.runtime_class_name == "kata"
        assert kubelet.spec.template.spec.runtime_class_name == "kata"
        # The kubelet API's Role, written and bound by an operator that holds none of its verbs.
        role = rbac.read_namespaced_role(naming.KUBELET_ROLE, wl)
        assert {r for rule in role.rules for r in rule.resources} >= {"pods/exec", "pods/log"}
        assert rbac.read_namespaced_role_binding(naming.KUBELET_ROLE, wl).subjects[0].name == naming.KUBELET

        # The tenant's Service range: a block of the pool, claimed by its API server's Service.
        api_ip = core.read_namespaced_service(naming.APISERVER, cp).spec.cluster_ip
        block = ipaddress.ip_network(naming.service_range_of(api_ip, OperatorConfig().service_prefix))
        assert block.subnet_of(ipaddress.ip_network(OperatorConfig().service_pool))  # type: ignore[arg-type]
        assert api_ip == str(block.network_address + 1)
        assert core.read_namespaced_service(naming.DNS, cp).spec.cluster_ip == str(block.network_address + 10)
        assert core.read_namespaced_service(naming.KUBELET, cp).spec.cluster_ip == str(block.network_address + 2)
        ranges.append(block)

        policies = {p.metadata.name: p for p in networking.list_namespaced_network_policy(cp).items}
        assert set(policies) == {"default-deny", "control-plane", naming.DNS, naming.KUBELET, naming.POLICY_CALLOUTS}
        assert policies["default-deny"].spec.pod_selector.match_labels is None
        assert set(policies["default-deny"].spec.policy_types) == {"Ingress", "Egress"}
        peers = policies["control-plane"].spec.ingress[1]
        assert peers._from[0].pod_selector.match_labels == {"stockade.dev/component": "etcd"}
        assert [p.port for p in peers.ports] == [2380]
        wl_policies = {p.metadata.name for p in networking.list_namespaced_network_policy(wl).items}
        assert {"default-deny", "same-tenant"} <= wl_policies

        pdbs = {p.metadata.name for p in policy.list_namespaced_pod_disruption_budget(cp).items}
        assert pdbs == (set() if replicas == 1 else {naming.CONTROL_PLANE, naming.DNS})
        secrets = {s.metadata.name for s in core.list_namespaced_secret(cp).items}
        assert {
            "pki-ca",
            "pki-etcd-ca",
            "pki-front-proxy-ca",
            "pki-apiserver",
            "pki-sa",
            "admin-kubeconfig",
            "controller-manager-kubeconfig",
            "scheduler-kubeconfig",
            "syncer-kubeconfig",
        } <= secrets

    assert ranges[0] != ranges[1]  # every tenant its own range
    quota = core.read_namespaced_resource_quota("tenant-quota", "stockade-payments-workloads").spec.hard
    assert quota["requests.cpu"] == "32" and quota["requests.nvidia.com/gpu"] == "4"
    assert quota["services.nodeports"] == "0"
    internet = networking.read_namespaced_network_policy("internet-egress", "stockade-payments-workloads")
    assert "169.254.0.0/16" in internet.spec.egress[0].to[0].ip_block._except
    assert core.read_namespaced_service("kube-apiserver", "stockade-payments-control-plane").spec.type == "LoadBalancer"
    limits = core.read_namespaced_limit_range("container-defaults", "stockade-team-a-workloads").spec.limits[0]
    assert limits.default == {"cpu": "1", "memory": "512Mi"}
    assert limits.default_request == {"cpu": "100m", "memory": "128Mi"}
    # The operator never writes the spec: what the API server stored (with schema defaults) stays.
    assert production["spec"] == get_tenant(super_client, "payments")["spec"]


def test_transitions_post_events_that_describe_shows(
    super_cluster: LocalControlPlane, super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    create_tenant(super_client, tenant_body("evented"))
    wait_observed(super_client, "evented")

    def described() -> str | None:
        events = kubectl(super_cluster, "describe", "tenant", "evented").split("\nEvents:")[1]
        return events if all(reason in events for reason in ("Issued", "Enforced", "Starting")) else None

    eventually(described, 30, what="the Tenant's Events in kubectl describe")


def test_the_operator_exports_its_metrics(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    create_tenant(super_client, tenant_body("metered"))
    wait_observed(super_client, "metered")

    def exported() -> str | None:
        text = stockade_operator.metrics()
        return text if 'stockade_tenant_phase{phase="Provisioning",tenant="metered"} 1.0' in text else None

    text = eventually(exported, 30, what="the Tenant's phase in the operator's metrics")
    assert 'stockade_tenant_phase{phase="Ready",tenant="metered"} 0.0' in text
    assert 'stockade_tenant_condition{status="True",tenant="metered",type="CertificatesReady"} 1.0' in text
    assert 'stockade_reconcile_seconds_count{result="ok"}' in text and "stockade_leader 1.0" in text
    expiry = next(
        line for line in text.splitlines() if line.startswith('stockade_certificate_expiry_seconds{tenant="metered"}')
    )
    assert float(expiry.split()[-1]) > 300 * 86400  # a year's certificates, issued a moment ago
    custom(super_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, "metered")
    eventually(
        lambda: 'tenant="metered"' not in stockade_operator.metrics(), 120, what="a deleted Tenant's series gone"
    )


def test_kstatus_reads_a_provisioning_and_a_stalled_tenant(
    super_cluster: LocalControlPlane, super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    """The real kstatus library (what Flux, `kubectl wait` and cli-utils use) judges the status;
    a Ready Tenant (Current) is judged in the e2e tier, where control planes run."""
    create_tenant(super_client, tenant_body("kst-starting"))
    create_tenant(super_client, tenant_body("kst-stalled", {"controlPlane": {"runtimeClassName": "no-such-sandbox"}}))
    starting = wait_observed(super_client, "kst-starting")

    def stalled() -> dict[str, Any] | None:
        obj = get_tenant(super_client, "kst-stalled")
        return obj if (condition(obj, "Stalled") or {}).get("status") == "True" else None

    failed = eventually(stalled, 60, what="a Tenant asking for a missing RuntimeClass stalled")
    # The same Tenant with a spec change the operator has not seen yet.
    unobserved = {
        **starting,
        "metadata": {**starting["metadata"], "generation": starting["metadata"]["generation"] + 1},
    }
    judged = kstatus(starting, failed, {**unobserved, "metadata": {**unobserved["metadata"], "name": "kst-edited"}})
    assert judged["kst-starting"] == ("InProgress", condition(starting, "Reconciling")["message"])  # type: ignore[index]
    assert judged["kst-stalled"][0] == "Failed"
    assert "RuntimeClass 'no-such-sandbox' does not exist" in judged["kst-stalled"][1]
    assert judged["kst-edited"][0] == "InProgress" and "observed generation" in judged["kst-edited"][1]
    # Argo CD's health check (examples/argocd) reads the same states alike.
    assert argocd_health(starting) == ("Progressing", condition(starting, "Reconciling")["message"])  # type: ignore[index]
    assert argocd_health(failed)[0] == "Degraded" and "no-such-sandbox" in argocd_health(failed)[1]
    assert argocd_health(unobserved)[0] == "Progressing"
    assert failed["status"]["phase"] == "Failed"
    assert condition(failed, "Ready")["reason"] == "RuntimeClassMissing"  # type: ignore[index]
    # The Warning is on the Tenant, where `kubectl describe` shows it.
    eventually(lambda: "RuntimeClassMissing" in kubectl(super_cluster, "describe", "tenant", "kst-stalled"), 30,
               what="the stall in kubectl describe")  # fmt: skip


def test_spec_changes_update_the_objects(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    create_tenant(super_client, tenant_body("changing", {"workloads": {"egress": {"internet": True}}}))
    wait_observed(super_client, "changing")
    wl, cp = naming.workloads_namespace("changing"), naming.control_plane_namespace("changing")
    networking, core, apps = (
        client.NetworkingV1Api(super_client),
        client.CoreV1Api(super_client),
        client.AppsV1Api(super_client),
    )
    assert networking.read_namespaced_network_policy("internet-egress", wl)

    patch_tenant(
        super_client,
        "changing",
        {
            "spec": {
                "workloads": {
                    "quota": {"cpu": "3"},
                    "podSecurity": "baseline",
                    "egress": {"internet": False},
                },
                "controlPlane": {"resources": {"apiServer": {"limits": {"memory": "3Gi"}}}},
            }
        },
    )
    wait_observed(super_client, "changing")
    assert core.read_namespaced_resource_quota("tenant-quota", wl).spec.hard["requests.cpu"] == "3"
    assert core.read_namespace(wl).metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert gone(lambda: networking.read_namespaced_network_policy("internet-egress", wl))
    pod_spec = apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.template.spec
    container = next(c for c in pod_spec.init_containers if c.name == "kube-apiserver")
    assert container.resources.limits["memory"] == "3Gi"

    patch_tenant(super_client, "changing", {"spec": {"suspended": True}})
    obj = wait_observed(super_client, "changing")
    assert obj["status"]["phase"] == "Suspended"
    assert condition(obj, "Ready")["reason"] == "Suspended"
    assert apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.replicas == 0
    assert core.read_namespaced_secret("pki-ca", cp)  # data is kept

    patch_tenant(super_client, "changing", {"spec": {"suspended": False}})
    obj = wait_observed(super_client, "changing")
    assert obj["status"]["phase"] == "Provisioning"
    assert apps.read_namespaced_stateful_set("etcd", cp).spec.replicas == 1


def resource_versions(api: client.ApiClient, name: str) -> dict[str, str]:
    core, apps, networking = client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)
    versions = {"tenant": get_tenant(api, name)["metadata"]["resourceVersion"]}
    for ns in (naming.control_plane_namespace(name), naming.workloads_namespace(name)):
        versions[f"ns/{ns}"] = core.read_namespace(ns).metadata.resource_version
        for listing in (
            core.list_namespaced_secret,
            core.list_namespaced_service,
            core.list_namespaced_config_map,
            apps.list_namespaced_deployment,
            apps.list_namespaced_stateful_set,
            networking.list_namespaced_network_policy,
            core.list_namespaced_resource_quota,
            core.list_namespaced_limit_range,
        ):
            for item in listing(ns).items:
                versions[f"{type(item).__name__}/{ns}/{item.metadata.name}"] = item.metadata.resource_version
    return versions


def test_unchanged_tenant_causes_no_writes(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    create_tenant(super_client, tenant_body("quiet"))
    wait_observed(super_client, "quiet")
    time.sleep(4)  # let the first passes settle (e.g. events)
    before = resource_versions(super_client, "quiet")
    time.sleep(3 * 3 + 2)  # three resync intervals of the test operator
    after = resource_versions(super_client, "quiet")
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"objects written although nothing changed: {sorted(changed)}"
    assert "resync" in stockade_operator.log() or "Timer" in stockade_operator.log() or len(before) > 20


def test_deletion_removes_everything(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    create_tenant(super_client, tenant_body("doomed"))
    wait_observed(super_client, "doomed")
    custom(super_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, "doomed")
    core = client.CoreV1Api(super_client)
    eventually(lambda: gone(lambda: get_tenant(super_client, "doomed")), 120, what="Tenant removed")
    for ns in (naming.control_plane_namespace("doomed"), naming.workloads_namespace("doomed")):
        assert gone(lambda ns=ns: core.read_namespace(ns)), ns


def test_deleting_while_provisioning(super_client: client.ApiClient, stockade_operator: RunningOperator) -> None:
    create_tenant(super_client, tenant_body("hasty"))
    eventually(lambda: client.CoreV1Api(super_client).read_namespace(naming.control_plane_namespace("hasty")), 30)
    custom(super_client).delete_cluster_custom_object(GROUP, VERSION, PLURAL, "hasty")
    core = client.CoreV1Api(super_client)
    eventually(lambda: gone(lambda: get_tenant(super_client, "hasty")), 120, what="Tenant removed")
    for ns in (naming.control_plane_namespace("hasty"), naming.workloads_namespace("hasty")):
        assert gone(lambda ns=ns: core.read_namespace(ns)), ns


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"kubernetes": {"version": 134}}, "spec.kubernetes.version: Invalid value"),
        ({"kubernetes": {"version": "1.34"}}, "spec.kubernetes.version"),
        ({"controlPlane": {"replicas": 2}}, "spec.controlPlane.replicas: Unsupported value: 2"),
        (
            {"controlPlane": {"service": {"type": "Ingress"}}},
            "spec.controlPlane.service.type: Unsupported value",
        ),
        ({"workloads": {"quota": {"pods": -5}}}, "spec.workloads.quota.pods: Invalid value: -5"),
        ({"workloads": {"quota": {"cpu": "lots"}}}, "spec.workloads.quota.cpu"),
        ({"workloads": {"podSecurity": "privileged"}}, "spec.workloads.podSecurity: Unsupported value"),
        ({"admins": {"users": ["system:admin"]}}, "system: identities are reserved"),
        ({"suspended": "yes"}, "spec.suspended: Invalid value"),
        # Each refusal names the field and the offending value.
        ({"kubernetes": {"version": "v1.35.0"}}, "Kubernetes v1.35.0 is not supported by this operator"),
        ({"kubernetes": {"version": "v1.20.0"}}, "Kubernetes v1.20.0 is not supported by this operator"),
        ({"workloads": {"quota": {"cpu": "-1"}}}, 'spec.workloads.quota.cpu: Invalid value: "-1"'),
        ({"workloads": {"quota": {"memory": -5}}}, "spec.workloads.quota.memory: Invalid value: -5"),
        (
            {"controlPlane": {"resources": {"apiServer": {"requests": {"cpu": "4"}, "limits": {"cpu": 1}}}}},
            'spec.controlPlane.resources.apiServer.requests.cpu: Invalid value: "object": requests.cpu 4 exceeds '
            "limits.cpu 1",
        ),
        (
            {"workloads": {"containerDefaults": {"limits": {"memory": "16Gi"}}}},
            'spec.workloads.containerDefaults.limits.memory: Invalid value: "object": limits.memory 16Gi exceeds '
            "max.memory 8Gi",
        ),
        ({"workloads": {"quota": {"extended": {"gpu!": 1}}}}, "spec.workloads.quota.extended: Invalid value"),
        ({"admins": {"users": ["system:admin"]}}, "system:admin: system: identities are reserved"),
    ],
)
def test_invalid_specs_are_refused_at_admission(
    super_client: client.ApiClient, spec: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create_tenant(super_client, tenant_body("invalid", spec))
    assert refused.value.status == 422
    assert fragment in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("x" * 41, "metadata.name: Too long: may not be more than 40 bytes"),
        ("Team-A", 'metadata.name: Invalid value: "Team-A"'),
        ("team_a", 'metadata.name: Invalid value: "team_a"'),
    ],
)
def test_tenant_names_are_checked(super_client: client.ApiClient, name: str, fragment: str) -> None:
    with pytest.raises(ApiException) as refused:
        create_tenant(super_client, tenant_body(name))
    assert refused.value.status == 422
    assert fragment in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"kubernetes": {"version": "v1.33.0"}}, "downgrades are not allowed: v1.34.4 to v1.33.0"),
        ({"kubernetes": {"version": "v1.34.3"}}, "downgrades are not allowed: v1.34.4 to v1.34.3"),
        ({"kubernetes": {"version": "v1.36.0"}}, "one minor version at a time: v1.34.4 to v1.36.0"),
        ({"controlPlane": {"replicas": 3}}, "replicas is immutable: 1 cannot become 3"),
        (
            {"controlPlane": {"etcd": {"storage": {"type": "Ephemeral"}}}},
            "etcd storage type is immutable: PersistentVolume cannot become Ephemeral",
        ),
    ],
)
def test_forbidden_changes_are_refused(super_client: client.ApiClient, update: dict[str, Any], fragment: str) -> None:
    name = "frozen"
    try:
        create_tenant(super_client, tenant_body(name))
    except ApiException as error:
        assert error.status == 409
    with pytest.raises(ApiException) as refused:
        patch_tenant(super_client, name, {"spec": update})
    assert refused.value.status == 422
    assert fragment in json.loads(refused.value.body)["message"]


def test_invalid_spec_reaching_the_operator_is_reported(
    super_cluster: LocalControlPlane, super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    """Admission refuses Kubernetes 1.35 (above); a CRD of an earlier release may not, and the
    operator still refuses it, saying why, and stalls (it cannot be mended by retrying)."""
    crd = f"{PLURAL}.{GROUP}"
    version_rules = ("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/kubernetes/properties/"
                     "version/x-kubernetes-validations/0")  # fmt: skip
    kubectl(
        super_cluster, "patch", "crd", crd, "--type=json", "-p", json.dumps([{"op": "remove", "path": version_rules}])
    )
    try:
        eventually(lambda: create_tenant(super_client, tenant_body("too-new", {"kubernetes": {"version": "v1.35.0"}})),
                   30, what="the older CRD admitting v1.35.0")  # fmt: skip
    finally:
        kubectl(super_cluster, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds"))

    def reported() -> dict[str, Any] | None:
        ready = condition(get_tenant(super_client, "too-new"), "Ready")
        return ready if ready and ready["reason"] == "InvalidSpec" else None

    ready = eventually(reported, 60, what="InvalidSpec reported")
    assert ready["status"] == "False"
    assert ready["message"] == (
        "spec.kubernetes.version: Kubernetes v1.35.0 is not supported by this operator (supported: 1.33, 1.34)"
    )
    tenant = get_tenant(super_client, "too-new")
    assert tenant["status"]["phase"] == "Failed"
    assert condition(tenant, "Stalled")["status"] == "True"  # type: ignore[index]
    assert kstatus(tenant)["too-new"][0] == "Failed"
    assert argocd_health(tenant)[0] == "Degraded"
    assert gone(lambda: client.CoreV1Api(super_client).read_namespace(naming.control_plane_namespace("too-new")))
    # The operator keeps serving the others.
    create_tenant(super_client, tenant_body("after-invalid"))
    wait_observed(super_client, "after-invalid")
    assert stockade_operator.process.running()


def test_operator_killed_mid_provisioning_converges(
    super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    core = client.CoreV1Api(super_client)
    cp = naming.control_plane_namespace("crashy")
    create_tenant(super_client, tenant_body("crashy"))
    eventually(lambda: core.read_namespace(cp), 30, interval=0.05, what="provisioning started")
    stockade_operator.restart()  # SIGKILL in the middle, then a fresh process
    obj = wait_observed(super_client, "crashy")
    assert obj["status"]["phase"] == "Provisioning"
    secrets = core.list_namespaced_secret(cp).items
    names = [s.metadata.name for s in secrets]
    assert len(names) == len(set(names))
    # One consistent PKI: every leaf is signed by the stored CA (no half-rotated set).
    import base64

    from stockade import pki

    data = {s.metadata.name: s.data for s in secrets}
    ca = pki.load_certificate(base64.b64decode(data["pki-ca"]["tls.crt"]))
    for leaf in ("pki-apiserver", "pki-admin", "pki-controller-manager"):
        assert pki.is_signed_by(pki.load_certificate(base64.b64decode(data[leaf]["tls.crt"])), ca)
    apps = client.AppsV1Api(super_client)
    assert [s.metadata.name for s in apps.list_namespaced_stateful_set(cp).items] == [naming.CONTROL_PLANE]


def test_kubeconfig_command(
    super_cluster: Any, super_client: client.ApiClient, stockade_operator: RunningOperator, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    create_tenant(super_client, tenant_body("cli"))
    wait_observed(super_client, "cli")
    env = {**os.environ, "KUBECONFIG": str(super_cluster.kubeconfig_path)}
    target = tmp_path / "cli.kubeconfig"
    run = subprocess.run(
        [sys.executable, "-m", "stockade.cli", "kubeconfig", "cli", "-o", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    kubeconfig = yaml.safe_load(target.read_text())
    assert (
        kubeconfig["clusters"][0]["cluster"]["server"] == "https://kube-apiserver.stockade-cli-control-plane.svc:6443"
    )
    assert kubeconfig["users"][0]["name"] == "cli-admin"
    missing = subprocess.run(
        [sys.executable, "-m", "stockade.cli", "kubeconfig", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "no Tenant named 'nobody'" in missing.stderr


def test_version_upgrade_rolls_the_control_plane(
    super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    create_tenant(super_client, tenant_body("upgrading", {"kubernetes": {"version": "v1.33.9"}}))
    wait_observed(super_client, "upgrading")
    apps = client.AppsV1Api(super_client)
    cp = naming.control_plane_namespace("upgrading")

    def images() -> dict[str, str]:
        spec = apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.template.spec
        return {c.name: c.image for c in spec.init_containers + spec.containers}

    assert images()["kube-apiserver"] == "registry.k8s.io/kube-apiserver:v1.33.9"
    assert images()["etcd"] == "registry.k8s.io/etcd:3.5.21-0"
    patch_tenant(super_client, "upgrading", {"spec": {"kubernetes": {"version": "v1.34.4"}}})
    wait_observed(super_client, "upgrading")
    assert images() == {
        "kube-apiserver": "registry.k8s.io/kube-apiserver:v1.34.4",
        "kube-controller-manager": "registry.k8s.io/kube-controller-manager:v1.34.4",
        "kube-scheduler": "registry.k8s.io/kube-scheduler:v1.34.4",
        "etcd": "registry.k8s.io/etcd:3.6.4-0",
    }
    # Replicas roll one at a time (an HA tenant keeps etcd's quorum and a serving API server).
    strategy = apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.update_strategy
    assert strategy.type == "RollingUpdate" and strategy.rolling_update.partition == 0


def deny_statefulsets_in(api: client.ApiClient, namespace: str, name: str) -> None:
    """A super-cluster admission policy refusing every StatefulSet write in `namespace`."""
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {
                     "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["statefulsets"],
                                        "operations": ["CREATE", "UPDATE"]}],
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                 "validations": [{"expression": "false", "message": "statefulsets are frozen for this test"}]},
    })  # fmt: skip
    admission.create_validating_admission_policy_binding(
        {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    )


def test_a_pass_failing_after_the_secrets_rotates_the_ca_exactly_once(
    super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    import base64

    create_tenant(super_client, tenant_body("rotor"))
    wait_observed(super_client, "rotor")
    core, apps = client.CoreV1Api(super_client), client.AppsV1Api(super_client)
    cp = naming.control_plane_namespace("rotor")

    def ca() -> bytes:
        return base64.b64decode(core.read_namespaced_secret("pki-ca", cp).data["tls.crt"])

    def checksum() -> str:
        template = apps.read_namespaced_stateful_set(naming.CONTROL_PLANE, cp).spec.template
        return str(template.metadata.annotations["stockade.dev/pki-checksum"])

    original, checksum_before = ca(), checksum()
    policy = "freeze-rotor"
    deny_statefulsets_in(super_client, cp, policy)
    try:
        # Positive control: the policy refuses a StatefulSet write in that namespace.
        def refused() -> bool:
            try:
                apps.patch_namespaced_stateful_set(naming.CONTROL_PLANE, cp, {"metadata": {"labels": {"probe": "1"}}})
            except ApiException as error:
                return "frozen" in error.body
            return False

        eventually(refused, 30, what="the freeze in force")
        patch_tenant(super_client, "rotor", {"metadata": {"annotations": {naming.ANNOTATION_ROTATE_CA: "once"}}})
        rotated = eventually(lambda: (c := ca()) != original and c, 60, what="CA rotated")
        eventually(lambda: (get_tenant(super_client, "rotor")["status"].get("rotation") or {}).get("ca") == "once",
                   30, what="rotation recorded")  # fmt: skip
        time.sleep(10)  # kopf retries the failing pass (1, 2, 5 s) and the 3 s timer runs it again
        assert checksum() == checksum_before  # the passes did fail after the Secrets
        assert ca() == rotated  # … and not one of them rotated again
    finally:
        admission = client.AdmissionregistrationV1Api(super_client)
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)
    eventually(lambda: checksum() != checksum_before, 60, what="the control plane rolled to the new PKI")
    assert ca() == rotated


def legacy_deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    selector = {"app": name}
    pod = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector}, "spec": pod}}}  # fmt: skip


def test_a_tenant_of_the_earlier_layout_loses_its_per_component_workloads(
    super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    """The workloads of the layout before one pod per replica (a Deployment per component, etcd's
    client Service) are deleted; a Deployment that is not Stockade's is left alone."""
    create_tenant(super_client, tenant_body("elder"))
    wait_observed(super_client, "elder")
    apps, core = client.AppsV1Api(super_client), client.CoreV1Api(super_client)
    cp = naming.control_plane_namespace("elder")
    ours = naming.tenant_labels("elder", naming.ROLE_CONTROL_PLANE)
    for name in LEGACY_DEPLOYMENTS:
        apps.create_namespaced_deployment(cp, legacy_deployment(name, ours))
    apps.create_namespaced_deployment(cp, legacy_deployment("someone-elses", {"app": "x"}))
    core.create_namespaced_service(cp, {"metadata": {"name": naming.ETCD, "labels": ours},
                                        "spec": {"ports": [{"port": 2379}]}})  # fmt: skip
    patch_tenant(super_client, "elder", {"metadata": {"annotations": {"touch": "1"}}})  # a pass now, not at a tick
    eventually(
        lambda: sorted(d.metadata.name for d in apps.list_namespaced_deployment(cp).items)
        == [naming.DNS, naming.KUBELET, "someone-elses"],
        30, what="the earlier layout's Deployments deleted",
    )  # fmt: skip
    eventually(lambda: gone(lambda: core.read_namespaced_service(naming.ETCD, cp)), 30, what="etcd Service deleted")
    assert core.read_namespaced_service(naming.APISERVER, cp)


def test_a_status_written_over_a_stale_copy_keeps_the_condition_written_meanwhile(
    super_cluster: LocalControlPlane, super_client: client.ApiClient, stockade_operator: RunningOperator
) -> None:
    """A pass reads the Tenant, the syncer's health lands meanwhile, the pass writes its status: the
    write carries the version it read, meets a 409, and is computed again on the fresh Tenant."""
    create_tenant(super_client, tenant_body("racer"))
    wait_observed(super_client, "racer")
    synced = Check(WORKLOAD_SYNC_READY, True, "Syncing", "watched")
    probe = Check("RaceProbe", True, "Probed", "the pass's own condition")

    async def no_events(kind: str, reason: str, message: str) -> None:
        return None

    def with_probe(previous: TenantStatus) -> TenantStatus:
        updated = st.merge_conditions(previous.conditions, [probe], None)
        return previous.model_copy(update={"conditions": _keep_others(previous, updated)})

    async def race() -> None:
        async with KubeClient(Credentials.from_kubeconfig(super_cluster.kubeconfig)) as kube:
            pass_, syncer = TenantReconciler(kube, OperatorConfig()), TenantReconciler(kube, OperatorConfig())
            # The hazard, shown: a write of a stale copy's conditions without the version loses
            # a condition written after the copy was read.
            stale = await kube.get(API_VERSION, KIND, "racer")
            await syncer.set_condition("racer", synced, no_events)
            stale_conditions = [*((stale.get("status") or {}).get("conditions") or [])]
            await kube.patch_merge(API_VERSION, KIND, "racer", {"status": {"conditions": stale_conditions}},
                                   subresource="status")  # fmt: skip
            assert condition(await kube.get(API_VERSION, KIND, "racer"), WORKLOAD_SYNC_READY) is None
            # The real writers: the same interleaving keeps both conditions.
            stale = await kube.get(API_VERSION, KIND, "racer")
            await syncer.set_condition("racer", synced, no_events)
            await pass_._update_status(stale, with_probe, no_events)
            fresh = await kube.get(API_VERSION, KIND, "racer")
            assert (condition(fresh, WORKLOAD_SYNC_READY) or {}).get("status") == "True"
            assert (condition(fresh, "RaceProbe") or {}).get("status") == "True"

    asyncio.run(race())
