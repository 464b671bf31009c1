"""The whole mission on a real super cluster, one Tenant's life in order: provisioning in sandboxed
pods, the kubeconfig from outside, workloads mirrored down and status up, isolation from a second
tenant, crashes, certificate rotation, suspension, a minor upgrade, and deletion without leftovers.

The tests of this module run in file order and share the Tenants; each names what it proves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import naming
from stockade.syncer import translate as tr
from stockade.syncer.kinds.base import REJECTED_REASON
from stockade.syncer.runner import WORKLOAD_SYNC_READY
from stockade_dev.testbed.binaries import pinned_versions
from stockade_dev.testbed.kubectl import Kubectl, KubectlError
from tests.e2e.conftest import RUNTIME_CLASS, Decoy, Operator, Tenant, create_tenant
from tests.e2e.workloads import (
    APP_NAMESPACE,
    WEB,
    apply,
    assert_sandboxed,
    container,
    finished,
    pod,
    pods,
    probe_command,
    running,
    termination_message,
    web_deployment,
)
from tests.helpers import argocd_health, eventually, kstatus

# Tenant labels reach super pods under Stockade's own keys (see tr.carried_label).
SUPER_WEB = f"{tr.carried_label('app')}=web"
VERSIONS = pinned_versions()
CURRENT, PREVIOUS = VERSIONS["KUBERNETES_VERSION"], VERSIONS["PREVIOUS_KUBERNETES_VERSION"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tenants")


@pytest.fixture(scope="module")
def alpha(stockade: Operator, super_kubectl: Kubectl, folder: Path) -> Iterator[Tenant]:
    # The previous minor, so the upgrade test below can move it one minor up.
    spec = {"kubernetes": {"version": PREVIOUS}, "controlPlane": {"service": {"type": "NodePort"}}}
    tenant = create_tenant(super_kubectl, folder, "alpha", spec)
    yield tenant
    super_kubectl("delete", "tenant", tenant.name, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def beta(stockade: Operator, super_kubectl: Kubectl, folder: Path) -> Iterator[Tenant]:
    tenant = create_tenant(super_kubectl, folder, "beta", {"controlPlane": {"service": {"type": "NodePort"}}})
    yield tenant
    super_kubectl("delete", "tenant", tenant.name, "--ignore-not-found", "--wait=false")


def test_tenant_becomes_ready_with_its_control_plane_in_sandboxed_pods(alpha: Tenant, super_kubectl: Kubectl) -> None:
    # Judged by the kstatus library (Flux, `kubectl wait`, cli-utils) and by Argo CD's health check
    # (examples/argocd): in progress until Ready.
    provisioning = alpha.get()  # created a moment ago; a control plane takes tens of seconds
    assert kstatus(provisioning)["alpha"][0] == "InProgress", provisioning.get("status")
    assert argocd_health(provisioning)[0] == "Progressing", provisioning.get("status")
    obj = alpha.wait_ready()
    assert kstatus(obj)["alpha"] == ("Current", "Resource is Ready")  # cli-utils: the Ready condition holds
    assert argocd_health(obj) == ("Healthy", "the tenant control plane is ready")
    assert obj["status"]["phase"] == "Ready" and obj["status"]["version"] == PREVIOUS
    items = running(pods(super_kubectl, alpha.control_plane_namespace, f"{naming.LABEL_REPLICA}=true"))
    # One sandbox per replica: every component a container of the one pod.
    assert [p["metadata"]["name"] for p in items] == ["etcd-0"]
    assert [c["name"] for c in items[0]["spec"]["initContainers"] + items[0]["spec"]["containers"]] == [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]  # fmt: skip
    assert all(c["ready"] and c["started"] for c in items[0]["status"]["containerStatuses"])
    assert_sandboxed(items)
    assert f"registry.k8s.io/kube-apiserver:{PREVIOUS}" in {c["image"] for c in items[0]["spec"]["initContainers"]}


def test_kubeconfig_works_from_outside_and_shows_only_the_tenant(alpha: Tenant, super_kubectl: Kubectl) -> None:
    alpha.fetch_kubeconfig()
    version = json.loads(alpha.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == PREVIOUS
    alpha.kubectl("create", "namespace", APP_NAMESPACE)
    tenant_namespaces = {n["metadata"]["name"] for n in alpha.kubectl.json("get", "namespaces")["items"]}
    super_namespaces = {n["metadata"]["name"] for n in super_kubectl.json("get", "namespaces")["items"]}
    assert APP_NAMESPACE in tenant_namespaces
    assert tenant_namespaces & super_namespaces <= {"default", "kube-system", "kube-public", "kube-node-lease"}
    assert not any(n.startswith("stockade-") for n in tenant_namespaces)
    tenant_nodes = {n["metadata"]["name"] for n in alpha.kubectl.json("get", "nodes")["items"]}
    super_nodes = {n["metadata"]["name"] for n in super_kubectl.json("get", "nodes")["items"]}
    assert tenant_nodes == {f"stockade-{alpha.name}"} and not tenant_nodes & super_nodes
    super_pods = {p["metadata"]["name"] for p in super_kubectl.json("get", "pods", "-A")["items"]}
    tenant_pods = {p["metadata"]["name"] for p in alpha.kubectl.json("get", "pods", "-A")["items"]}
    assert not tenant_pods & super_pods


def test_deployment_runs_as_sandboxed_pods_in_the_super_cluster(alpha: Tenant, super_kubectl: Kubectl) -> None:
    apply(alpha.kubectl, web_deployment(3))
    eventually(lambda: len(running(pods(alpha.kubectl, APP_NAMESPACE, "app=web"))) == 3, timeout=240, interval=2,
               what="3 tenant pods Running")  # fmt: skip
    backing = eventually(
        lambda: (found := running(pods(super_kubectl, alpha.workloads_namespace))) and len(found) == 3 and found,
        timeout=60, what="3 super pods Running",
    )  # fmt: skip
    assert_sandboxed(backing)


def test_the_operator_exports_tenant_and_syncer_metrics(alpha: Tenant, stockade: Operator) -> None:
    text = stockade.metrics()  # the leader's
    assert 'stockade_tenant_phase{phase="Ready",tenant="alpha"} 1.0' in text and "stockade_leader 1.0" in text
    assert 'stockade_tenant_condition{status="True",tenant="alpha",type="WorkloadSyncReady"} 1.0' in text
    synced = [line for line in text.splitlines()
              if line.startswith("stockade_syncer_objects_synced_total{") and 'tenant="alpha"' in line]  # fmt: skip
    assert synced and sum(float(line.split()[-1]) for line in synced) >= 3, synced  # at least the 3 pods
    if stockade.in_cluster:  # what Prometheus scrapes: the Service, either replica
        assert "stockade_leader " in stockade.metrics(via_service=True)
        # Both replicas up for minutes, one leading, and the waiting one never killed by its
        # liveness probe (it fails after 10 + 3 x 10 s): no container restarted.
        replicas = stockade.pods()
        assert len(replicas) == 2 and stockade.leader_pod()["metadata"]["name"] in {
            p["metadata"]["name"] for p in replicas
        }
        restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in replicas}
        assert set(restarts.values()) == {0}, restarts


def test_tenant_pod_reaches_its_api_server_with_its_own_token(alpha: Tenant) -> None:
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    command = (
        f'wget -q -O /dev/termination-log --no-check-certificate --header "Authorization: Bearer $(cat {token})" '
        '"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api"'
    )
    apply(alpha.kubectl, pod("whoami", command))
    obj = finished(alpha.kubectl, "whoami")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert '"kind":"APIVersions"' in termination_message(obj).replace(" ", "")


def test_scaling_converges_both_ways(alpha: Tenant, super_kubectl: Kubectl) -> None:
    alpha.kubectl("scale", "deployment/web", "-n", APP_NAMESPACE, "--replicas=1")
    eventually(lambda: len(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB)) == 1, timeout=120, interval=2,
               what="super pods scaled to 1")  # fmt: skip
    assert len(running(pods(alpha.kubectl, APP_NAMESPACE, "app=web"))) == 1


def test_the_syncer_survives_a_flapping_readiness(alpha: Tenant, super_kubectl: Kubectl) -> None:
    """A pass that finds /readyz slow writes Ready=False; the syncer must not stop (and list every
    object again) for it. Three flaps, a pod created during each: all synced, and WorkloadSyncReady
    never left True (a stopped syncer reports False on its way out)."""

    def synced(name: str) -> bool:
        items = super_kubectl.json("get", "pods", "-n", alpha.workloads_namespace)["items"]
        return any((p["metadata"].get("annotations") or {}).get(naming.ANNOTATION_NAME) == name for p in items)

    synced_before = alpha.condition(WORKLOAD_SYNC_READY)
    assert synced_before.get("status") == "True", synced_before
    for flap in range(3):
        conditions = [
            {**c, "status": "False", "reason": "ControlPlaneUnavailable", "message": "/readyz: timed out after 10s"}
            if c["type"] == "Ready" else c
            for c in alpha.get()["status"]["conditions"]
        ]  # fmt: skip
        body = json.dumps({"status": {"conditions": conditions}})
        patched = json.loads(super_kubectl("patch", "tenant", alpha.name, "--subresource=status", "--type=merge",
                                           "-p", body, "-o", "json"))  # fmt: skip
        # The flap was written (the operator's next pass, within seconds, writes the truth back).
        assert next(c for c in patched["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
        name = f"during-flap-{flap}"
        apply(alpha.kubectl, pod(name, "sleep 1"))
        eventually(lambda name=name: synced(name), timeout=60, what=f"pod {name} synced while Ready=False")
    alpha.wait_ready()  # the operator's next pass writes the truth back
    synced_after = alpha.condition(WORKLOAD_SYNC_READY)
    assert synced_after["status"] == "True"
    assert synced_after["lastTransitionTime"] == synced_before["lastTransitionTime"], (synced_before, synced_after)
    for flap in range(3):
        alpha.kubectl("delete", "pod", f"during-flap-{flap}", "-n", APP_NAMESPACE, "--wait=false")


def test_privileged_and_host_path_pods_are_refused_with_a_clear_message(alpha: Tenant, super_kubectl: Kubectl) -> None:
    # The tenant's own API server runs with --allow-privileged=false: refused at the door.
    privileged = pod("privileged", "sleep 3600")
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(KubectlError, match=r"securityContext.privileged: Forbidden"):
        apply(alpha.kubectl, privileged)
    # A hostPath volume is valid Kubernetes, so the tenant accepts it; the syncer refuses to run it
    # in the super cluster and says why on the tenant's pod.
    apply(alpha.kubectl, pod("hostpath", "sleep 3600", volumes=[{"name": "root", "hostPath": {"path": "/"}}]))

    def refused() -> str | None:
        conditions = alpha.kubectl.json("get", "pod", "hostpath", "-n", APP_NAMESPACE)["status"].get("conditions") or []
        return next((c["message"] for c in conditions if c.get("reason") == REJECTED_REASON), None)

    assert "spec.volumes[0].hostPath" in eventually(refused, timeout=60, what="hostPath pod refused")
    names = {p["metadata"]["name"] for p in pods(super_kubectl, alpha.workloads_namespace)}
    assert not any(n.startswith("hostpath-") for n in names)
    alpha.kubectl("delete", "pod", "hostpath", "-n", APP_NAMESPACE, "--wait=false")


def test_tenants_cannot_reach_each_other_nor_the_super_cluster(
    alpha: Tenant, beta: Tenant, super_kubectl: Kubectl, metadata_decoy: Decoy
) -> None:
    beta.wait_ready()
    beta.fetch_kubeconfig()
    beta.kubectl("create", "namespace", APP_NAMESPACE)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": APP_NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(beta.kubectl, web_deployment(1), service)
    beta_pod = eventually(lambda: running(pods(super_kubectl, beta.workloads_namespace, SUPER_WEB))[0], timeout=240)
    beta_service = eventually(
        lambda: next(s for s in super_kubectl.json("get", "services", "-n", beta.workloads_namespace)["items"]
                     if s["spec"].get("selector")),
        timeout=60, what="beta's Service mirrored down",
    )  # fmt: skip
    beta_replica = running(pods(super_kubectl, beta.control_plane_namespace, f"{naming.LABEL_REPLICA}=true"))[0]
    endpoints = super_kubectl.json("get", "endpoints", "kubernetes", "-n", "default")["subsets"][0]
    super_api = f"{endpoints['addresses'][0]['ip']}:{endpoints['ports'][0]['port']}"
    alpha_web = running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))[0]
    targets = {
        "own-api": "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
        "own-pod": f"{alpha_web['status']['podIP']}:8080",
        "beta-pod": f"{beta_pod['status']['podIP']}:8080",
        "beta-service": f"{beta_service['spec']['clusterIP']}:80",
        "beta-etcd-peer": f"{beta_replica['status']['podIP']}:{naming.ETCD_PEER_PORT}",
        "super-api": super_api,
        "super-api-service": "10.0.0.1:443",
        "metadata": "169.254.169.254:80",
    }
    apply(alpha.kubectl, pod("probe", probe_command(targets)))
    output = termination_message(finished(alpha.kubectl, "probe"))
    results = {name: state.split()[0] for name, state in (line.split("=", 1) for line in output.splitlines())}
    # The positive controls prove the probe itself works; everything else must be closed.
    assert results == {
        "own-api": "open",
        "own-pod": "open",
        **{name: "closed" for name in targets if not name.startswith("own-")},
    }, output


# -- a real cluster: Services that route, the tenant's own DNS -------------------------------------

# A Deployment and its Service as in the Kubernetes documentation, by a named target port.
APP = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "app", "namespace": APP_NAMESPACE},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "app"}},
        "template": {
            "metadata": {"labels": {"app": "app"}},
            "spec": {"containers": [container(WEB, ports=[{"name": "http", "containerPort": 8080}])]},
        },
    },
}
APP_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "app", "namespace": APP_NAMESPACE},
    "spec": {"selector": {"app": "app"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
}
# A shell function: the last line of an HTTP answer from $1:$2 (path $3), empty if none.
GET = 'get() { printf \'GET /%s HTTP/1.0\\r\\n\\r\\n\' "$3" | timeout 5 nc "$1" "$2" 2>/dev/null | tail -n 1; }'


def wait_resolves(name: str, server: str = "") -> str:
    """Shell: until `name` resolves (NetworkPolicy is programmed a moment after a pod starts).
    busybox's nslookup asks for a name as given: pass a fully qualified one."""
    return f"for i in $(seq 30); do nslookup {name} {server} >/dev/null 2>&1 && break; sleep 1; done"


def run_probe(tenant: Tenant, name: str, script: str) -> dict[str, str]:
    apply(tenant.kubectl, pod(name, f"{{ {script}; }} > /dev/termination-log"))
    done = finished(tenant.kubectl, name, timeout=240)
    return dict(line.split("=", 1) for line in termination_message(done).splitlines() if "=" in line)


def test_an_app_is_reached_by_service_name_short_name_and_cluster_ip(alpha: Tenant) -> None:
    apply(alpha.kubectl, APP, APP_SERVICE)
    eventually(lambda: len(running(pods(alpha.kubectl, APP_NAMESPACE, "app=app"))) == 2, timeout=240, interval=2,
               what="2 app pods Running")  # fmt: skip
    ip = alpha.kubectl.json("get", "service", "app", "-n", APP_NAMESPACE)["spec"]["clusterIP"]
    # The Endpoints the tenant sees are its pods (their real addresses: the super pods').
    pod_ips = {p["status"]["podIP"] for p in running(pods(alpha.kubectl, APP_NAMESPACE, "app=app"))}
    endpoints = alpha.kubectl.json("get", "endpoints", "app", "-n", APP_NAMESPACE)
    assert {a["ip"] for s in endpoints["subsets"] for a in s["addresses"]} == pod_ips
    seen = run_probe(alpha, "by-name", "; ".join([
        GET, wait_resolves("app.shop.svc.cluster.local"),
        'echo "short=$(get app 80)"', 'echo "fqdn=$(get app.shop.svc.cluster.local 80)"',
        f'echo "cluster-ip=$(get {ip} 80)"', 'echo "variables=$(get $APP_SERVICE_HOST $APP_SERVICE_PORT_WEB)"',
        # (busybox's nslookup tries no search domain for a dotted name; nc resolves as libc does)
        'echo "api-by-name=$(timeout 4 nc kubernetes.default 443 </dev/null >/dev/null 2>&1 && echo yes)"',
        'echo "search=$(grep "^search" /etc/resolv.conf)"', 'echo "ndots=$(grep -c ndots:5 /etc/resolv.conf)"',
        'echo "hostname=$(hostname)"',
    ]))  # fmt: skip
    assert {k: seen.get(k) for k in ("short", "fqdn", "cluster-ip", "variables")} == dict.fromkeys(
        ("short", "fqdn", "cluster-ip", "variables"), "hello"), seen  # fmt: skip
    assert seen["api-by-name"] == "yes" and seen["hostname"] == "by-name", seen
    assert seen["search"] == "search shop.svc.cluster.local svc.cluster.local cluster.local" and seen["ndots"] == "1"


def test_statefulset_pods_reach_each_other_by_their_stable_names(alpha: Tenant) -> None:
    serve = (
        f"{GET}; h=$(hostname); echo $h > /tmp/index.html; httpd -p 8080 -h /tmp; peer=db-$((1 - ${{h#db-}})); "
        'for i in $(seq 120); do r=$(get $peer.db 8080); [ -n "$r" ] && echo "$r" > /tmp/peer.html && break; '
        "sleep 1; done; exec sleep 3600"
    )
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": APP_NAMESPACE},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 8080}]},
    }
    statefulset = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "db", "namespace": APP_NAMESPACE},
                   "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                                container(serve, ports=[{"containerPort": 8080}])]}}}}  # fmt: skip
    apply(alpha.kubectl, headless, statefulset)
    eventually(lambda: len(running(pods(alpha.kubectl, APP_NAMESPACE, "app=db"))) == 2, timeout=300, interval=2,
               what="db-0 and db-1 Running")  # fmt: skip
    seen = run_probe(alpha, "peers", "; ".join([
        GET, wait_resolves("db-1.db.shop.svc.cluster.local"),
        # Until each has written whom it reached (a page not written yet is a 404, not empty).
        'for i in $(seq 150); do [ "$(get db-0.db 8080 peer.html)$(get db-1.db 8080 peer.html)" = db-1db-0 ] '
        "&& break; sleep 1; done",
        'echo "db-0=$(get db-0.db.shop.svc.cluster.local 8080)"', 'echo "db-1=$(get db-1.db 8080)"',
        'echo "db-0-reached=$(get db-0.db 8080 peer.html)"', 'echo "db-1-reached=$(get db-1.db 8080 peer.html)"',
    ]))  # fmt: skip
    # Each pod answers as itself by its stable name, and each reached the other by name.
    assert seen == {"db-0": "db-0", "db-1": "db-1", "db-0-reached": "db-1", "db-1-reached": "db-0"}, seen
    # Its hosts file names it as the tenant's kubelet would, never by the super cluster's namespace.
    hosts = alpha.kubectl("exec", "db-0", "-n", APP_NAMESPACE, "--", "cat", "/etc/hosts")
    assert "\tdb-0.db.shop.svc.cluster.local\tdb-0" in hosts, hosts
    assert alpha.workloads_namespace not in hosts, hosts


def test_another_tenant_can_neither_resolve_nor_reach_a_tenants_services(
    alpha: Tenant, beta: Tenant, super_kubectl: Kubectl
) -> None:
    alpha_ip = alpha.kubectl.json("get", "service", "app", "-n", APP_NAMESPACE)["spec"]["clusterIP"]
    alpha_dns = alpha.kubectl.json("get", "service", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"]
    beta_dns = beta.kubectl.json("get", "service", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"]
    assert alpha_dns != beta_dns  # each tenant its own Service range and DNS
    names = "app.shop.svc.cluster.local"
    seen = run_probe(beta, "snoop", "; ".join([
        GET, wait_resolves("web.shop.svc.cluster.local"),
        # Positive controls: beta's own Service, by name and address.
        'echo "own-name=$(get web 80)"',
        f'echo "own-dns=$(nslookup web.shop.svc.cluster.local {beta_dns} >/dev/null 2>&1 && echo answers)"',
        f'echo "alpha-name=$(nslookup {names} >/dev/null 2>&1 && echo resolves)"',
        f'echo "alpha-dns=$(timeout 5 nslookup {names} {alpha_dns} >/dev/null 2>&1 && echo answers)"',
        f'echo "alpha-service=$(get {alpha_ip} 80)"',
    ]))  # fmt: skip
    assert seen == {"own-name": "hello", "own-dns": "answers", "alpha-name": "", "alpha-dns": "", "alpha-service": ""}
    # ... and the same name is answered by alpha's DNS for alpha's own pods (control of the control).
    assert run_probe(alpha, "own-dns", f'echo "answers=$(nslookup {names} {alpha_dns} >/dev/null 2>&1 && echo yes)"')[
        "answers"] == "yes"  # fmt: skip


def test_dns_answers_again_after_its_pod_is_deleted(alpha: Tenant, super_kubectl: Kubectl) -> None:
    selector = f"{naming.LABEL_COMPONENT}={naming.DNS}"
    (dns_pod,) = running(pods(super_kubectl, alpha.control_plane_namespace, selector))
    assert dns_pod["spec"]["runtimeClassName"] == RUNTIME_CLASS
    super_kubectl("delete", "pod", "-n", alpha.control_plane_namespace, dns_pod["metadata"]["name"], "--wait=false")
    started = time.monotonic()
    seen = run_probe(alpha, "after", "; ".join([
        "for i in $(seq 120); do nslookup app.shop.svc.cluster.local >/dev/null 2>&1 && break; sleep 1; done",
        'echo "tries=$i"', 'echo "answers=$(nslookup app.shop.svc.cluster.local >/dev/null 2>&1 && echo yes)"',
    ]))  # fmt: skip
    assert seen["answers"] == "yes", seen
    print(f"DNS answered again {time.monotonic() - started:.0f} s after its pod was deleted ({seen['tries']} tries)")
    replaced = running(pods(super_kubectl, alpha.control_plane_namespace, selector))
    assert [p["metadata"]["uid"] for p in replaced] != [dns_pod["metadata"]["uid"]]
    eventually(lambda: alpha.condition("DNSReady").get("status") == "True", timeout=120, what="DNSReady again")


def test_api_server_pod_and_operator_killed_together_converge_with_nothing_lost(
    alpha: Tenant, stockade: Operator, super_kubectl: Kubectl
) -> None:
    before = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    selector = f"{naming.LABEL_REPLICA}=true"  # the API server's pod: the whole replica
    killed = {p["metadata"]["uid"] for p in pods(super_kubectl, alpha.control_plane_namespace, selector)}
    super_kubectl("delete", "pod", "-n", alpha.control_plane_namespace, "-l", selector, "--grace-period=0", "--force")
    stockade.restart()
    eventually(  # the StatefulSet's pod comes back under the same name: a new uid
        lambda: {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.control_plane_namespace, selector))}
        - killed,
        timeout=120, what="a new API server pod running",
    )  # fmt: skip
    alpha.wait_ready()
    eventually(lambda: alpha.kubectl("get", "namespace", APP_NAMESPACE), timeout=120, what="tenant API answers again")
    assert alpha.kubectl.json("get", "deployment", "web", "-n", APP_NAMESPACE)["spec"]["replicas"] == 1
    after = pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB)
    assert {p["metadata"]["uid"] for p in running(after)} == before, [  # the workload never stopped
        (p["metadata"]["name"], p["metadata"]["uid"], p["status"].get("phase"), p["metadata"].get("deletionTimestamp"))
        for p in after
    ]


def test_ca_rotation_keeps_workloads_and_a_refetched_kubeconfig_works(alpha: Tenant, super_kubectl: Kubectl) -> None:
    before = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    alpha.patch({"metadata": {"annotations": {"stockade.dev/rotate-ca": str(time.time())}}})
    eventually(lambda: alpha.get()["status"].get("rotation", {}).get("ca"), timeout=120, what="CA rotation recorded")
    alpha.wait_ready()
    alpha.fetch_kubeconfig()
    eventually(lambda: alpha.kubectl("get", "namespace", APP_NAMESPACE), timeout=180, what="new kubeconfig works")
    after = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    assert after == before


def test_suspend_and_resume_keep_data_and_workloads(alpha: Tenant, super_kubectl: Kubectl) -> None:
    before = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    alpha.patch({"spec": {"suspended": True}})
    eventually(lambda: alpha.get()["status"]["phase"] == "Suspended", timeout=120, what="phase Suspended")
    eventually(lambda: not pods(super_kubectl, alpha.control_plane_namespace), timeout=120, what="control plane gone")
    assert argocd_health(alpha.get())[0] == "Suspended"
    assert {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))} == before
    alpha.patch({"spec": {"suspended": False}})
    alpha.wait_ready()
    eventually(lambda: alpha.kubectl("get", "deployment", "web", "-n", APP_NAMESPACE), timeout=120, what="data kept")
    after = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    assert after == before


def test_upgrade_one_minor_keeps_workloads_and_kubeconfig(alpha: Tenant, super_kubectl: Kubectl) -> None:
    before = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    alpha.patch({"spec": {"kubernetes": {"version": CURRENT}}})
    obj = alpha.wait_ready(version=CURRENT)
    assert obj["status"]["version"] == CURRENT
    server = lambda: json.loads(alpha.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]  # noqa: E731
    eventually(lambda: server() == CURRENT, timeout=120, what=f"the tenant API server reports {CURRENT}")
    cp_pods = running(pods(super_kubectl, alpha.control_plane_namespace))
    images = {c["image"] for p in cp_pods for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]}
    assert f"registry.k8s.io/kube-apiserver:{CURRENT}" in images
    assert alpha.kubectl.json("get", "deployment", "web", "-n", APP_NAMESPACE)["spec"]["replicas"] == 1
    after = {p["metadata"]["uid"] for p in running(pods(super_kubectl, alpha.workloads_namespace, SUPER_WEB))}
    assert after == before


def leftovers(super_kubectl: Kubectl, tenant: str) -> list[str]:
    """Everything in the super cluster that still belongs to `tenant`, by label or by namespace."""
    found = []
    label = f"stockade.dev/tenant={tenant}"
    for kind in (
        "namespaces",
        "persistentvolumes",
        "clusterroles",
        "clusterrolebindings",
        "pods",
        "secrets",
        "services",
    ):
        for item in super_kubectl.json("get", kind, "-A", "-l", label)["items"]:
            found.append(f"{kind}/{item['metadata']['name']}")
    for item in super_kubectl.json("get", "namespaces")["items"]:
        if item["metadata"]["name"].startswith(f"stockade-{tenant}-"):
            found.append(f"namespaces/{item['metadata']['name']}")
    for pv in super_kubectl.json("get", "persistentvolumes")["items"]:
        claim = pv["spec"].get("claimRef") or {}
        if claim.get("namespace", "").startswith(f"stockade-{tenant}-"):
            found.append(f"persistentvolumes/{pv['metadata']['name']}")
    return sorted(set(found))


@pytest.mark.parametrize("name", ["beta", "alpha"])
def test_deleting_a_tenant_leaves_nothing_in_the_super_cluster(
    name: str, request: pytest.FixtureRequest, super_kubectl: Kubectl
) -> None:
    tenant: Tenant = request.getfixturevalue(name)
    assert leftovers(super_kubectl, tenant.name)  # it exists before
    super_kubectl("delete", "tenant", tenant.name, "--timeout=300s", timeout=320)
    eventually(lambda: not leftovers(super_kubectl, tenant.name), timeout=180, interval=2,
               what=f"nothing of {tenant.name} left")  # fmt: skip
