"""A hostile tenant on a real super cluster: every joint where a tenant's packet, metadata, volume,
placement or object could reach past its walls, tried from inside the tenant, each check beside a
positive control that shows the same probe would have landed if the wall were not there.

`mallory` is a tenant at Pod Security `baseline` (root in its pods) with a small config budget;
`victim` is a second, ordinary tenant. Network probes toward 169.254.169.254 land on a decoy bound
on this host (conftest), so nothing leaves the machine. The tests run in file order.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import naming
from stockade.syncer import translate as tr
from stockade.syncer.kinds import base, pod_spec
from stockade_dev.localcluster import registry
from stockade_dev.localcluster.cluster import LICENSED_IMAGE, WORKLOAD_IMAGE
from stockade_dev.localcluster.node import DNS_SERVICE_IP, FENCE_TABLE, NODE_NAME
from stockade_dev.testbed.binaries import pinned_versions
from stockade_dev.testbed.kubectl import Kubectl, KubectlError
from tests.e2e.conftest import METADATA_IP, RUNTIME_CLASS, Decoy, Operator, Tenant, create_tenant
from tests.e2e.workloads import APP_NAMESPACE, apply, finished, pod, termination_message
from tests.helpers import eventually

ROOT = {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False}
CONTROL_NAMESPACE = "stockade-e2e-control"
EUID_SOURCE = r"""
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    long e = sys(107, 0, 0, 0); /* geteuid */
    char buf[24];
    int i = 23;
    buf[i] = '\n';
    do { buf[--i] = (char)('0' + e % 10); e /= 10; } while (e);
    sys(1, 1, (long)(buf + i), 24 - i);
    sys(60, 0, 0, 0);
    for (;;) {}
}
"""


def probe_lines(targets: dict[str, str]) -> str:
    """From the container's very first instruction: `name=open|closed` per TCP target."""
    checks = [
        f"if timeout 3 nc {address.rsplit(':', 1)[0]} {address.rsplit(':', 1)[1]} </dev/null 2>/dev/null; "
        f"then echo {name}=open; else echo {name}=closed; fi"
        for name, address in targets.items()
    ]
    return "; ".join(checks)


def results_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def super_object(super_kubectl: Kubectl, tenant: Tenant, kind: str, name: str) -> dict[str, Any] | None:
    """The super-cluster object that mirrors tenant object `name` of `kind` in APP_NAMESPACE."""
    wanted = tr.super_name(APP_NAMESPACE, name)
    items = super_kubectl.json("get", kind, "-n", tenant.workloads_namespace)["items"]
    return next((i for i in items if i["metadata"]["name"] == wanted), None)


def rejection(kubectl: Kubectl, name: str) -> str | None:
    conditions = kubectl.json("get", "pod", name, "-n", APP_NAMESPACE)["status"].get("conditions") or []
    return next((c["message"] for c in conditions if c.get("reason") == base.REJECTED_REASON), None)


def tenant_events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "events", "-n", APP_NAMESPACE)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def tenants(stockade: Operator, super_kubectl: Kubectl, folder: Path) -> Iterator[tuple[Tenant, Tenant]]:
    exposed = {"controlPlane": {"service": {"type": "NodePort"}}}
    hostile = {**exposed, "workloads": {"podSecurity": "baseline", "quota": {"configBytes": "2Mi"}}}
    mallory = create_tenant(super_kubectl, folder, "mallory", hostile)
    victim = create_tenant(super_kubectl, folder, "victim", exposed)
    for tenant in (mallory, victim):
        tenant.wait_ready()
        tenant.fetch_kubeconfig()
        eventually(lambda t=tenant: t.kubectl("create", "namespace", APP_NAMESPACE), timeout=60, what="namespace")
        # Pods are admitted only once the tenant's controller-manager has made the namespace's
        # default ServiceAccount.
        eventually(
            lambda t=tenant: t.kubectl("get", "serviceaccount", "default", "-n", APP_NAMESPACE),
            timeout=60, what="default ServiceAccount",
        )  # fmt: skip
    yield mallory, victim
    for tenant in (mallory, victim):
        super_kubectl("delete", "tenant", tenant.name, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def mallory(tenants: tuple[Tenant, Tenant]) -> Tenant:
    return tenants[0]


@pytest.fixture(scope="module")
def control(super_kubectl: Kubectl) -> Iterator[Kubectl]:
    """A plain super-cluster namespace with no policy: its pods show what an unwalled pod reaches."""
    super_kubectl("create", "namespace", CONTROL_NAMESPACE)
    yield super_kubectl
    super_kubectl("delete", "namespace", CONTROL_NAMESPACE, "--wait=false")


def control_pod(kubectl: Kubectl, name: str, command: str) -> str:
    """Runs `command` in a sandboxed pod of the control namespace; its termination message."""
    body = pod(name, command, runtimeClassName=RUNTIME_CLASS)
    body["metadata"]["namespace"] = CONTROL_NAMESPACE
    apply(kubectl, body)

    def done() -> dict[str, Any] | None:
        obj = kubectl.json("get", "pod", name, "-n", CONTROL_NAMESPACE)
        return obj if obj.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return termination_message(eventually(done, timeout=180, interval=2, what=f"control pod {name}"))


# -- 1. the first second of a pod ------------------------------------------------------------------


def test_first_instruction_of_a_pod_reaches_nothing_forbidden(
    tenants: tuple[Tenant, Tenant], super_kubectl: Kubectl, control: Kubectl, metadata_decoy: Decoy
) -> None:
    mallory, victim = tenants
    endpoints = super_kubectl.json("get", "endpoints", "kubernetes", "-n", "default")["subsets"][0]
    host = endpoints["addresses"][0]["ip"]
    super_api = super_kubectl.json("get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    victim_api = super_kubectl.json("get", "service", naming.APISERVER, "-n", victim.control_plane_namespace)
    targets = {
        "super-api": f"{host}:{endpoints['ports'][0]['port']}",
        "super-api-service": f"{super_api}:443",
        "kubelet": f"{host}:10250",
        "victim-api": f"{victim_api['spec']['clusterIP']}:{naming.APISERVER_PORT}",
        "metadata": f"{METADATA_IP}:80",
    }
    # (busybox's `wget -T` crashes under gVisor here: the request is written with nc.)
    request = "printf 'GET /first-instruction/latest/meta-data/iam/ HTTP/1.0\\r\\n\\r\\n'"
    steal = f"{request} | timeout 3 nc {METADATA_IP} 80 >/dev/null 2>&1"
    command = f"{{ {probe_lines(targets)}; {steal}; {probe_lines({'own-api': '$KUBERNETES_SERVICE_HOST:6443'})}; }}"
    apply(mallory.kubectl, pod("first", command + " > /dev/termination-log"))
    results = results_of(termination_message(finished(mallory.kubectl, "first")))
    # Positive controls: the probe works (own API server), and the same probes from an unwalled
    # sandboxed pod reach the super API server, the kubelet and the decoy.
    unwalled = control_pod(control, "unwalled", f"{{ {probe_lines(targets)}; {steal}; }} > /dev/termination-log")
    assert results_of(unwalled)["super-api"] == "open" and results_of(unwalled)["metadata"] == "open", unwalled
    assert results == {"own-api": "open", **{name: "closed" for name in targets}}, results
    from_pods = [client for client, path in metadata_decoy.requests if path.startswith("/first-instruction")]
    assert len(from_pods) == 1, metadata_decoy.requests  # the control pod's, and only that one


# -- 2. tenant metadata ----------------------------------------------------------------------------

HOSTILE_ANNOTATIONS = {
    "io.katacontainers.config.hypervisor.kernel_params": "init=/bin/sh",
    "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000",
    "iam.gke.io/gcp-service-account": "admin@example.iam.gserviceaccount.com",
    "eks.amazonaws.com/role-arn": "arn:aws:iam::000000000000:role/admin",
}


def test_tenant_metadata_stays_inert_in_the_super_cluster(mallory: Tenant, super_kubectl: Kubectl) -> None:
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "robot", "namespace": APP_NAMESPACE, "annotations": HOSTILE_ANNOTATIONS,
                            "labels": {"azure.workload.identity/use": "true"}}}  # fmt: skip
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "data", "namespace": APP_NAMESPACE,
                          "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                          "volume.kubernetes.io/selected-node": NODE_NAME}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}  # fmt: skip
    env = [
        {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['example.com/note']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    dns = f"timeout 5 nslookup kube-dns.kube-system.svc.cluster.local {DNS_SERVICE_IP} >/dev/null 2>&1"
    report = (
        'echo "note=$NOTE"; echo "node=$NODE"; echo "host-ip=$HOST_IP"; echo "pod-ip=$POD_IP"; '
        f'echo "super-resolver=$(grep -c {DNS_SERVICE_IP} /etc/resolv.conf)"; '
        f"if {dns}; then echo super-dns=answers; else echo super-dns=silent; fi"
    )
    meta_pod = pod("meta", f"{{ {report}; }} > /dev/termination-log", serviceAccountName="robot",
                   volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])  # fmt: skip
    meta_pod["metadata"]["annotations"] = {**HOSTILE_ANNOTATIONS, "example.com/note": "carried"}
    meta_pod["metadata"]["labels"]["azure.workload.identity/use"] = "true"
    meta_pod["spec"]["containers"][0]["env"] = env
    meta_pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    # Bound to the virtual node directly: the tenant scheduler would wait for the claim, which the
    # super cluster's WaitForFirstConsumer class binds only once a pod uses it (see README, limits).
    meta_pod["spec"]["nodeName"] = naming.virtual_node(mallory.name)
    apply(mallory.kubectl, account, claim, meta_pod)
    done = finished(mallory.kubectl, "meta", timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    seen = results_of(termination_message(done))
    super_claim = eventually(lambda: super_object(super_kubectl, mallory, "pvc", "data"), what="super claim")
    super_account = super_object(super_kubectl, mallory, "serviceaccount", "robot")
    super_pod = super_object(super_kubectl, mallory, "pod", "meta")
    assert super_account and super_pod
    for obj in (super_account, super_pod):
        keys = {*(obj["metadata"].get("annotations") or {}), *(obj["metadata"].get("labels") or {})}
        assert not keys & {*HOSTILE_ANNOTATIONS, "azure.workload.identity/use"}, obj["metadata"]
    # The claim's binding annotations are the super cluster's own (its binder and scheduler set them);
    # the tenant's are carried under Stockade's keys and did not make the super claim Lost.
    claim_annotations = super_claim["metadata"]["annotations"]
    assert claim_annotations[tr.carried_annotation("pv.kubernetes.io/bind-completed")] == "yes"
    assert claim_annotations.get("volume.kubernetes.io/selected-node") in (None, NODE_NAME)
    # Positive controls: each is carried (inert) and reaches the tenant's own downward API; the claim
    # is bound by the super cluster's binder, not Lost.
    assert super_pod["metadata"]["annotations"][tr.carried_annotation("eks.amazonaws.com/role-arn")]
    assert seen["note"] == "carried"
    assert super_claim["status"]["phase"] == "Bound", super_claim["status"]
    # 9. The downward API shows the tenant's node and address, never the super node's; the pod's own IP is real.
    assert seen["node"] == naming.virtual_node(mallory.name) and seen["host-ip"] != super_pod["status"]["hostIP"]
    assert seen["pod-ip"] == super_pod["status"]["podIP"]
    # 9. The super cluster's DNS is neither configured nor reachable for tenant pods ...
    assert seen["super-resolver"] == "0" and seen["super-dns"] == "silent", seen


def test_super_dns_answers_unwalled_pods(control: Kubectl) -> None:
    """The positive control of the DNS check above: the same lookup from an unwalled pod answers."""
    dns = f"timeout 5 nslookup kube-dns.kube-system.svc.cluster.local {DNS_SERVICE_IP} >/dev/null 2>&1"
    output = control_pod(control, "dns", f"if {dns}; then echo answers; else echo silent; fi > /dev/termination-log")
    assert output.strip() == "answers"


# -- 3. volumes ------------------------------------------------------------------------------------


def test_host_mounting_volume_types_are_refused_at_every_level(mallory: Tenant, super_kubectl: Kubectl) -> None:
    nfs = pod("nfs", "sleep 5", volumes=[{"name": "v", "nfs": {"server": "127.0.0.1", "path": "/exports"}}])
    apply(mallory.kubectl, nfs)
    message = eventually(lambda: rejection(mallory.kubectl, "nfs"), timeout=60, what="nfs pod refused")
    assert "spec.volumes[0].nfs: volume type not allowed" in message
    assert super_object(super_kubectl, mallory, "pod", "nfs") is None
    # Positive control: the same baseline tenant ran a pod with a claim (test above).
    assert super_object(super_kubectl, mallory, "pod", "meta") is not None


def test_setuid_binary_planted_in_a_local_volume_is_inert_on_the_host(
    mallory: Tenant, super_kubectl: Kubectl, tmp_path: Path
) -> None:
    source = tmp_path / "euid.c"
    source.write_text(EUID_SOURCE)
    tool = tmp_path / "euid"
    subprocess.run(["gcc", "-static", "-nostdlib", "-Os", "-fno-stack-protector", "-o", str(tool), str(source)],
                   check=True)  # fmt: skip
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tool", "namespace": APP_NAMESPACE},
              "binaryData": {"euid": base64.b64encode(tool.read_bytes()).decode()}}  # fmt: skip
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "loot", "namespace": APP_NAMESPACE},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}  # fmt: skip
    plant = "cp /tool/euid /loot/euid && chmod 4755 /loot/euid && ls -ln /loot/euid > /dev/termination-log"
    planter = pod("planter", plant,
                  volumes=[{"name": "tool", "configMap": {"name": "tool", "defaultMode": 0o755}},
                           {"name": "loot", "persistentVolumeClaim": {"claimName": "loot"}}])  # fmt: skip
    planter["spec"]["containers"][0]["securityContext"] = ROOT
    planter["spec"]["nodeName"] = naming.virtual_node(mallory.name)
    planter["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "tool", "mountPath": "/tool"}, {"name": "loot", "mountPath": "/loot"}
    ]  # fmt: skip
    apply(mallory.kubectl, config, claim, planter)
    done = finished(mallory.kubectl, "planter", timeout=240)
    assert done["status"]["phase"] == "Succeeded", (done["status"], termination_message(done))
    volume = super_object(super_kubectl, mallory, "pvc", "loot")["spec"]["volumeName"]  # type: ignore[index]
    planted = Path(super_kubectl.json("get", "pv", volume)["spec"]["hostPath"]["path"]) / "euid"
    stat = planted.stat()
    assert stat.st_uid == 0 and stat.st_mode & 0o4000, oct(stat.st_mode)  # the tenant did plant it
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert subprocess.run([*as_nobody, str(planted)], capture_output=True, text=True).stdout.strip() == "65534"
    # Positive control: the same file on a mount without nosuid would have given a host user root.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as elsewhere:
        copy = Path(elsewhere) / "euid"
        shutil.copy2(planted, copy)
        os.chown(copy, 0, 0)
        copy.chmod(0o4755)
        Path(elsewhere).chmod(0o755)
        assert subprocess.run([*as_nobody, str(copy)], capture_output=True, text=True).stdout.strip() == "0"


# -- 4. probe and lifecycle hosts ------------------------------------------------------------------


def test_probe_and_lifecycle_hosts_are_refused(mallory: Tenant, super_kubectl: Kubectl, metadata_decoy: Decoy) -> None:
    probing = pod("probehost", "sleep 30")
    probing["spec"]["containers"][0]["livenessProbe"] = {
        "httpGet": {"host": METADATA_IP, "port": 80, "path": "/from-kubelet/latest/meta-data/"}, "periodSeconds": 1
    }  # fmt: skip
    hooked = pod("hookhost", "sleep 30")
    hooked["spec"]["containers"][0]["lifecycle"] = {
        "postStart": {"httpGet": {"host": METADATA_IP, "port": 80, "path": "/from-kubelet/hook"}}
    }
    apply(mallory.kubectl, probing, hooked)
    assert "containers[0].livenessProbe.httpGet.host" in eventually(
        lambda: rejection(mallory.kubectl, "probehost"), timeout=60, what="probe host refused"
    )
    assert "containers[0].lifecycle.postStart.httpGet.host" in eventually(
        lambda: rejection(mallory.kubectl, "hookhost"), timeout=60, what="hook host refused"
    )
    assert metadata_decoy.paths_from("/from-kubelet") == []
    # Positive control: the decoy answers a request from this host.
    with urllib.request.urlopen(f"http://{METADATA_IP}/from-kubelet/control", timeout=5) as answer:
        assert answer.status == 200
    assert metadata_decoy.paths_from("/from-kubelet") == ["/from-kubelet/control"]


# -- 5. placement ----------------------------------------------------------------------------------


def test_placement_is_never_the_tenants(mallory: Tenant, super_kubectl: Kubectl) -> None:
    everywhere = pod("everywhere", "sleep 1", tolerations=[{"operator": "Exists"}])
    apply(mallory.kubectl, everywhere)
    shadow = eventually(lambda: super_object(super_kubectl, mallory, "pod", "everywhere"), what="super pod")
    tolerations = shadow["spec"].get("tolerations") or []
    # Only the super API server's defaults (not-ready/unreachable for 300 s), never the tenant's wildcard.
    assert all(t.get("key", "").startswith("node.kubernetes.io/") for t in tolerations), tolerations
    assert not shadow["spec"].get("nodeSelector") and not shadow["spec"].get("affinity")
    # nodeName: refused at the tenant's door, with the reason (not silently garbage-collected).
    pinned = pod("pinned", "sleep 1", nodeName=NODE_NAME)
    with pytest.raises(KubectlError, match=r"spec.nodeName: Invalid value: \"stockade-local\""):
        apply(mallory.kubectl, pinned)
    # Positive control: pinned to the tenant's own node, it is accepted and runs.
    apply(mallory.kubectl, pod("pinned-home", "true", nodeName=naming.virtual_node(mallory.name)))
    assert finished(mallory.kubectl, "pinned-home")["status"]["phase"] == "Succeeded"


# -- 6. images ------------------------------------------------------------------------------------


def waiting_reason(kubectl: Kubectl, name: str) -> str | None:
    statuses = kubectl.json("get", "pod", name, "-n", APP_NAMESPACE)["status"].get("containerStatuses") or []
    return (statuses[0].get("state", {}).get("waiting") or {}).get("reason") if statuses else None


def test_a_tenant_runs_only_images_its_own_credentials_can_pull(
    tenants: tuple[Tenant, Tenant], super_kubectl: Kubectl
) -> None:
    mallory, victim = tenants
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": "regcred", "namespace": APP_NAMESPACE},
              "stringData": {".dockerconfigjson": registry.dockerconfigjson(
                  registry.PRIVATE, registry.PRIVATE_USER, registry.PRIVATE_PASSWORD)}}  # fmt: skip
    licensed = pod("licensed", "echo licensed > /dev/termination-log", imagePullSecrets=[{"name": "regcred"}])
    licensed["spec"]["containers"][0]["image"] = LICENSED_IMAGE
    apply(mallory.kubectl, secret, licensed)
    # Positive control: with its pull secret the licensed tenant runs the image — now in the node's cache.
    done = finished(mallory.kubectl, "licensed", timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # Another tenant names the cached image (and a cached control-plane image) with `Never`: the super
    # pod pulls anyway, with that tenant's credentials — none — and never starts.
    freeloader = pod("freeloader", "echo stolen > /dev/termination-log")
    freeloader["spec"]["containers"][0].update(image=LICENSED_IMAGE, imagePullPolicy="Never")
    control_plane = pod("cp-image", "unused")
    control_plane["spec"]["containers"][0].update(
        image=f"registry.k8s.io/kube-apiserver:{pinned_versions()['KUBERNETES_VERSION']}",
        command=["/usr/local/bin/kube-apiserver", "--version"], imagePullPolicy="IfNotPresent",
    )  # fmt: skip
    apply(victim.kubectl, freeloader, control_plane)
    for name in ("freeloader", "cp-image"):
        reason = eventually(
            lambda name=name: waiting_reason(victim.kubectl, name) in ("ErrImagePull", "ImagePullBackOff")
            and waiting_reason(victim.kubectl, name),
            timeout=180, interval=2, what=f"{name} refused by the registry",
        )  # fmt: skip
        assert reason in ("ErrImagePull", "ImagePullBackOff")
        shadow = super_object(super_kubectl, victim, "pod", name)
        assert shadow is not None and shadow["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    time.sleep(5)
    for name in ("freeloader", "cp-image"):
        phase = victim.kubectl.json("get", "pod", name, "-n", APP_NAMESPACE)["status"].get("phase")
        assert phase == "Pending", (name, phase)


# -- 7. budgets ------------------------------------------------------------------------------------


def test_synced_objects_have_count_byte_and_size_budgets(mallory: Tenant, super_kubectl: Kubectl) -> None:
    hard = super_kubectl.json("get", "resourcequota", "tenant-quota", "-n", mallory.workloads_namespace)["spec"]["hard"]
    assert {"count/configmaps", "count/secrets", "count/serviceaccounts", "persistentvolumeclaims",
            "limits.cpu", "limits.memory", "services.loadbalancers"} <= set(hard)  # fmt: skip
    ranges = super_kubectl.json("get", "limitrange", "-n", mallory.workloads_namespace)["items"]
    assert ranges[0]["spec"]["limits"][0]["max"] == {"cpu": "4", "memory": "8Gi"}
    big = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}", "namespace": APP_NAMESPACE},
         "data": {"blob": "x" * 800_000}}
        for i in range(3)
    ]  # fmt: skip
    for obj in big:  # one by one: the budget is first come, first served
        apply(mallory.kubectl, obj)
        time.sleep(2)
    # 2Mi (the Tenant's configBytes, besides the tool of the test above): two fit, the third is refused.
    eventually(lambda: super_object(super_kubectl, mallory, "configmap", "big-1"), what="big-1 synced")
    events = eventually(lambda: tenant_events(mallory.kubectl, "big-2"), timeout=60, what="big-2 refused")
    assert "spec.workloads.quota.configBytes" in events[0]["message"], events
    assert super_object(super_kubectl, mallory, "configmap", "big-2") is None
    for obj in big:
        mallory.kubectl("delete", "configmap", obj["metadata"]["name"], "-n", APP_NAMESPACE, "--wait=false")


# -- 8. refusals by the super cluster --------------------------------------------------------------


def test_super_refusals_are_told_once_backed_off_and_leave_nothing(
    mallory: Tenant, super_kubectl: Kubectl, stockade: Operator
) -> None:
    huge = pod("huge", "sleep 30")
    huge["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}, "limits": {"cpu": "64"}}
    apply(mallory.kubectl, huge)
    message = eventually(lambda: rejection(mallory.kubectl, "huge"), timeout=60, what="huge pod refused")
    assert "maximum cpu usage per Container is 4" in message, message
    assert mallory.workloads_namespace not in message  # the super namespace stays hidden
    started = time.monotonic()
    time.sleep(20)
    attempts = stockade.log_text().count(f"key={APP_NAMESPACE}/huge")
    # Backoff 0.5 s, 1 s, 2 s … : a handful in these 20 s, where a fixed 0.5 s retry makes ~40.
    assert 1 <= attempts <= 10, (attempts, time.monotonic() - started)
    told = [e for e in tenant_events(mallory.kubectl, "huge") if e["reason"] == base.REJECTED_REASON]
    assert len(told) == 1 and told[0].get("count", 1) == 1, told
    # No token Secret was made for a pod that never existed (tokens are owned from birth) ...
    token = pod_spec.token_secret_name({"metadata": {"namespace": APP_NAMESPACE, "name": "huge"}})
    secrets = {
        s["metadata"]["name"]: s
        for s in super_kubectl.json("get", "secrets", "-n", mallory.workloads_namespace)["items"]
    }
    assert token not in secrets
    # ... while a pod that ran has one, owned by its super pod (positive control).
    meta_token = secrets[pod_spec.token_secret_name({"metadata": {"namespace": APP_NAMESPACE, "name": "meta"}})]
    assert [o["kind"] for o in meta_token["metadata"]["ownerReferences"]] == ["Pod"]
    # Services the super cluster would refuse: told once, never looped; ExternalName is not synced.
    services = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": APP_NAMESPACE},
         "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": APP_NAMESPACE},
         "spec": {"type": "ExternalName", "externalName": "example.com"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain", "namespace": APP_NAMESPACE},
         "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}},
    ]  # fmt: skip
    apply(mallory.kubectl, *services)
    lb = eventually(lambda: tenant_events(mallory.kubectl, "lb"), timeout=60, what="LoadBalancer refused")
    assert "spec.type: LoadBalancer" in lb[0]["message"]
    eventually(lambda: super_object(super_kubectl, mallory, "service", "plain"), what="plain Service synced")
    assert super_object(super_kubectl, mallory, "service", "ext") is None
    assert super_object(super_kubectl, mallory, "service", "lb") is None
    assert not tenant_events(mallory.kubectl, "ext")
    mallory.kubectl("delete", "pod", "huge", "-n", APP_NAMESPACE, "--wait=false")


# -- 9. the super cluster's names ------------------------------------------------------------------


def test_forwarded_events_carry_nothing_of_the_super_cluster(mallory: Tenant, super_kubectl: Kubectl) -> None:
    super_pod = super_object(super_kubectl, mallory, "pod", "meta")
    assert super_pod is not None
    events = eventually(
        lambda: [e for e in tenant_events(mallory.kubectl, "meta") if e["reason"] in ("Pulled", "Created", "Started")],
        timeout=60, what="events of the meta pod forwarded",
    )  # fmt: skip
    text = json.dumps(tenant_events(mallory.kubectl, "meta"))
    for leak in (mallory.workloads_namespace, super_pod["metadata"]["name"], NODE_NAME,
                 super_pod["status"]["hostIP"], "/var/lib/", "Successfully assigned"):  # fmt: skip
        assert leak not in text, leak
    # Positive control: the kubelet's own words did come through, about the tenant's image.
    assert any(WORKLOAD_IMAGE in e["message"] for e in events if e["reason"] == "Pulled") or any(
        e["reason"] == "Started" for e in events
    ), events


# -- 10. nothing leaves the machine ----------------------------------------------------------------

OUTSIDE_IP = "198.51.100.1"  # TEST-NET-2, here only inside the namespace below
# An address of the tenants' Service range that no Service has; the namespace below holds it too.
UNTRANSLATED_CLUSTER_IP = "10.127.255.201"


def fence_drops(chain: str = "forward") -> int:
    """Packets the local cluster's egress fence has stopped so far: pods' (`forward`) or the host's
    own (`output`)."""
    family, table = FENCE_TABLE
    rules = json.loads(subprocess.run(["nft", "-j", "list", "table", family, table], capture_output=True,
                                      text=True, check=True).stdout)["nftables"]  # fmt: skip
    return sum(
        e["counter"]["packets"]
        for r in rules if "rule" in r and r["rule"]["chain"] == chain
        for e in r["rule"]["expr"] if "counter" in e
    )  # fmt: skip


@pytest.fixture
def outside() -> Iterator[str]:
    """An address that is not the cluster's nor this host's, routed like the internet: through a
    veth into a network namespace of this test, where a server answers. If a pod's packet got past
    the fence, it would arrive there — and still not leave the machine. The namespace belongs to a
    process of the test (not `ip netns add`, which would turn /run/netns into a mount point the
    local cluster's teardown then cannot clean)."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    inside = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
    server = None
    try:
        time.sleep(0.3)  # unshare has made the namespace and exec'd sleep
        subprocess.run(["ip", "link", "add", "stk-out0", "type", "veth", "peer", "name", "stk-out1", "netns",
                        str(holder.pid)], check=True)  # fmt: skip
        subprocess.run(["ip", "addr", "add", "198.51.100.254/24", "dev", "stk-out0"], check=True)
        subprocess.run(["ip", "link", "set", "stk-out0", "up"], check=True)
        for command in (
            ["addr", "add", f"{OUTSIDE_IP}/24", "dev", "stk-out1"],
            ["addr", "add", f"{UNTRANSLATED_CLUSTER_IP}/32", "dev", "stk-out1"],
            ["link", "set", "stk-out1", "up"],
            ["link", "set", "lo", "up"],
            ["route", "add", "default", "via", "198.51.100.254"],
        ):
            subprocess.run([*inside, "ip", *command], check=True)  # fmt: skip
        server = subprocess.Popen([*inside, "busybox", "nc", "-ll", "-p", "8080", "-e", "echo", "outside"])
        time.sleep(0.5)
        yield OUTSIDE_IP
    finally:
        for process in (server, holder):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
        # The namespace goes with its last process, and the veth with it.
        subprocess.run(["ip", "link", "delete", "stk-out0"], capture_output=True, check=False)


def test_no_pod_sends_a_packet_off_the_machine(control: Kubectl, outside: str) -> None:
    # Positive control: the host itself reaches the outside address.
    answer = subprocess.run(["busybox", "nc", "-w", "3", outside, "8080"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=10)  # fmt: skip
    assert answer.stdout.strip() == "outside", answer
    before = fence_drops()
    # An unwalled pod (no NetworkPolicy at all) tries it, and a tenant ClusterIP no Service has.
    probes = {"outside": f"{outside}:8080", "unrouted-cluster-ip": "10.127.255.200:80"}
    output = control_pod(control, "leak", f"{{ {probe_lines(probes)}; }} > /dev/termination-log")
    assert results_of(output) == {"outside": "closed", "unrouted-cluster-ip": "closed"}, output
    assert fence_drops() > before  # closed by the fence itself, not by chance


def test_the_host_never_sends_an_untranslated_cluster_ip_off_the_machine(outside: str) -> None:
    """A ClusterIP kube-proxy has not translated (no such Service, or its rules not written yet)
    would follow the host's default route off the machine. Here a tenant-range address is routed
    into the test's namespace instead, whose server would answer if the packet got past the fence."""
    cluster_ip = UNTRANSLATED_CLUSTER_IP
    subprocess.run(["ip", "route", "add", f"{cluster_ip}/32", "via", outside, "dev", "stk-out0"], check=True)
    route = subprocess.run(["ip", "route", "get", cluster_ip], capture_output=True, text=True, check=True).stdout
    assert "dev stk-out0" in route, route  # the packet would go to the namespace, not to the gateway

    def ask(address: str) -> str:
        return subprocess.run(["busybox", "nc", "-w", "3", address, "8080"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=10).stdout.strip()  # fmt: skip

    assert ask(outside) == "outside"  # positive control: the route and the server answer
    before = fence_drops("output")
    assert ask(cluster_ip) == ""
    assert fence_drops("output") > before  # refused by the fence's host rule
