from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from stockade import certificates as certs
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


def control_plane(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one pod template of the control plane (a pod per replica)."""
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"] in ([naming.DNS, naming.KUBELET], [])
    assert statefulset["metadata"]["name"] == naming.CONTROL_PLANE
    return dict(statefulset["spec"]["template"])


def containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = template["spec"]
    return {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def args_of(template: dict[str, Any], container: str) -> list[str]:
    return list(containers(template)[container]["args"])


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


def test_one_sandboxed_pod_per_replica_every_container_hardened() -> None:
    template = control_plane(rendered())
    spec = template["spec"]
    assert spec["runtimeClassName"] == "kata"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert template["metadata"]["annotations"]["stockade.dev/pki-checksum"] == "sum"
    assert template["metadata"]["labels"][naming.LABEL_REPLICA] == "true"
    found = containers(template)
    assert list(found) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    for container in found.values():
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert set(container["resources"]) == {"requests", "limits"}
    assert found["kube-apiserver"]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert found["kube-scheduler"]["resources"]["requests"] == {"cpu": "50m", "memory": "96Mi"}


def test_each_container_mounts_only_its_own_certificates() -> None:
    template = control_plane(rendered())
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    for name, container in containers(template).items():
        pki_mounts = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == render.PKI_DIR]
        assert pki_mounts == [f"pki-{name}"]
        projected = [s["secret"]["name"] for s in volumes[f"pki-{name}"]["projected"]["sources"]]
        assert projected == [secret for secret, _ in render.PKI_SOURCES[name]]
    # The scheduler mounts its kubeconfig alone.
    assert [s for s, _ in render.PKI_SOURCES[naming.SCHEDULER]] == [naming.kubeconfig_secret("scheduler")]


def test_components_start_in_dependency_order_and_talk_over_loopback() -> None:
    template = control_plane(rendered())
    init = template["spec"]["initContainers"]
    # Sidecars, in order: etcd, then the API server once etcd has a leader; the controllers once it is ready.
    assert [(c["name"], c["restartPolicy"]) for c in init] == [("etcd", "Always"), ("kube-apiserver", "Always")]
    assert init[0]["startupProbe"]["httpGet"]["path"] == "/health"
    assert init[1]["startupProbe"]["httpGet"]["path"] == "/readyz"
    for container in init + template["spec"]["containers"]:
        assert container["startupProbe"]["periodSeconds"] == 1
    for container in template["spec"]["containers"]:  # a sick controller keeps the API server in its Service
        assert "readinessProbe" not in container and "livenessProbe" in container
    assert "--listen-client-urls=https://127.0.0.1:2379" in args_of(template, "etcd")
    assert "--etcd-servers=https://127.0.0.1:2379" in args_of(template, "kube-apiserver")


def test_controllers_reach_the_api_server_of_their_own_pod() -> None:
    inp = render.TenantInput("team-a", "uid-1", TenantSpec(), OperatorConfig())
    names = certs.ServingNames(apiserver_dns=("x",), apiserver_ips=("127.0.0.1",), etcd_dns=("y",), etcd_ips=())
    bundle = certs.plan_pki({}, {}, None, names).bundle
    servers = {}
    for secret in render.kubeconfig_secrets(inp, bundle):
        config = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
        servers[secret["metadata"]["name"]] = config["clusters"][0]["cluster"]["server"]
    local, service = "https://127.0.0.1:6443", naming.apiserver_url("team-a")
    assert servers == {"controller-manager-kubeconfig": local, "scheduler-kubeconfig": local,
                       "admin-kubeconfig": service, "syncer-kubeconfig": service,
                       "dns-kubeconfig": service}  # fmt: skip


def test_runtime_class_and_registry_come_from_the_spec() -> None:
    objects = rendered({"controlPlane": {"runtimeClassName": "gvisor", "imageRegistry": "mirror.local:5000/k8s"}})
    template = control_plane(objects)
    assert template["spec"]["runtimeClassName"] == "gvisor"
    images = {name: c["image"] for name, c in containers(template).items()}
    assert all(image.startswith("mirror.local:5000/k8s/") for image in images.values())
    assert images["kube-apiserver"] == "mirror.local:5000/k8s/kube-apiserver:v1.34.4"


def test_suspended_scales_to_zero() -> None:
    objects = rendered({"suspended": True})
    assert {o["spec"]["replicas"] for o in objects if o["kind"] == "StatefulSet"} == {0}


def test_high_availability() -> None:
    objects = rendered({"controlPlane": {"replicas": 3}})
    template = control_plane(objects)
    initial = next(a for a in args_of(template, "etcd") if a.startswith("--initial-cluster="))
    assert initial.count(",") == 2  # three members
    assert "etcd-2=https://etcd-2.etcd-peers.stockade-team-a-control-plane.svc:2380" in initial
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert list(pdbs) == [naming.CONTROL_PLANE, naming.DNS] and pdbs[naming.CONTROL_PLANE]["spec"]["minAvailable"] == 2
    assert by_kind(objects, "Deployment")[naming.DNS]["spec"]["replicas"] == 3  # an HA tenant's DNS is HA too
    assert "--leader-elect=true" in args_of(template, "kube-controller-manager")
    assert "--leader-elect=true" in args_of(template, "kube-scheduler")
    assert not by_kind(rendered(), "PodDisruptionBudget")


def test_services_route_to_whole_replicas_and_peers_find_every_member() -> None:
    services = by_kind(rendered(), "Service")
    assert set(services) == {naming.APISERVER, naming.ETCD_PEERS, naming.DNS, naming.KUBELET}
    assert services[naming.APISERVER]["spec"]["selector"] == {naming.LABEL_REPLICA: "true"}
    # Members of both layouts (an HA tenant migrating keeps its quorum).
    assert services[naming.ETCD_PEERS]["spec"]["selector"] == {naming.LABEL_COMPONENT: "etcd"}


def test_network_policies() -> None:
    closed = by_kind(rendered(), "NetworkPolicy")
    assert set(closed) == {
        "default-deny",
        "control-plane",
        "same-tenant",
        naming.DNS,
        naming.KUBELET,
        naming.POLICY_CALLOUTS,
    }
    # The API server (a whole replica, not a pod of etcd alone) may call its own workloads, any port,
    # and nowhere else; they accept it besides each other.
    callouts = closed[naming.POLICY_CALLOUTS]["spec"]
    assert callouts["podSelector"] == {"matchLabels": {naming.LABEL_REPLICA: "true"}}
    assert callouts["egress"] == [{"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": naming.workloads_namespace("team-a")}}}]}]  # fmt: skip
    from_ = closed["same-tenant"]["spec"]["ingress"][0]["from"]
    assert from_ == [
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": naming.control_plane_namespace("team-a")}
            },
            "podSelector": {"matchLabels": {naming.LABEL_REPLICA: "true"}},
        },
    ]
    assert "internet-egress" not in closed
    open_ = by_kind(rendered({"workloads": {"egress": {"internet": True}}}), "NetworkPolicy")
    blocked = open_["internet-egress"]["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in blocked and "10.1.2.3/32" in blocked and "10.0.0.0/8" in blocked
    api, peers = closed["control-plane"]["spec"]["ingress"]
    # From its own workloads, the operator, its DNS and its kubelet API.
    assert api["ports"] == [{"port": 6443}] and len(api["from"]) == 4
    assert peers == {"from": [{"podSelector": {"matchLabels": {naming.LABEL_COMPONENT: "etcd"}}}],
                     "ports": [{"port": 2380}]}  # fmt: skip
    # No port of etcd's but the peer port is open to anyone, in or out.
    egress_ports = [p["port"] for rule in closed["control-plane"]["spec"]["egress"] for p in rule["ports"]]
    assert egress_ports == [2380, 53, 53, naming.KUBELET_PORT]  # the last: to its virtual node's kubelet API
    exposed = by_kind(rendered({"controlPlane": {"service": {"type": "LoadBalancer"}}}), "NetworkPolicy")
    assert "from" not in exposed["control-plane"]["spec"]["ingress"][0]


def test_ephemeral_etcd_has_no_claim() -> None:
    objects = rendered({"controlPlane": {"etcd": {"storage": {"type": "Ephemeral"}}}})
    etcd = by_kind(objects, "StatefulSet")[naming.CONTROL_PLANE]
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


def test_the_tenant_service_range_gives_the_api_server_and_dns_their_addresses() -> None:
    inp = render.TenantInput("team-a", "uid-1", TenantSpec(), OperatorConfig(), service_range="10.112.8.0/22")
    objects = render.render_tenant(inp)
    services = by_kind(objects, "Service")
    assert services[naming.APISERVER]["spec"]["clusterIP"] == "10.112.8.1"  # the tenant's `kubernetes`
    assert {p["port"] for p in services[naming.APISERVER]["spec"]["ports"]} == {6443, 443}
    assert services[naming.DNS]["spec"]["clusterIP"] == "10.112.8.10"
    assert services[naming.KUBELET]["spec"]["clusterIP"] == "10.112.8.2"  # the virtual node's address
    assert {(p["port"], p["protocol"], p["targetPort"]) for p in services[naming.DNS]["spec"]["ports"]} == {
        (53, "UDP", naming.DNS_PORT), (53, "TCP", naming.DNS_PORT),
    }  # fmt: skip
    assert "--service-cluster-ip-range=10.112.8.0/22" in args_of(control_plane(objects), naming.APISERVER)
    pool = render.service_pool(OperatorConfig())
    assert pool["kind"] == "ServiceCIDR" and pool["spec"]["cidrs"] == ["10.112.0.0/12"]


def test_the_tenant_dns_is_sandboxed_hardened_and_reads_only_its_tenant() -> None:
    objects = rendered()
    dns = by_kind(objects, "Deployment")[naming.DNS]["spec"]["template"]["spec"]
    assert dns["runtimeClassName"] == "kata" and dns["automountServiceAccountToken"] is False
    assert dns["securityContext"]["runAsNonRoot"] is True
    (container,) = dns["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Its one secret is the kubeconfig of its own read-only identity, no certificate of any other.
    (kubeconfig,) = [v for v in dns["volumes"] if "projected" in v]
    assert [s["secret"]["name"] for s in kubeconfig["projected"]["sources"]] == ["dns-kubeconfig"]
    corefile = by_kind(objects, "ConfigMap")[naming.DNS]["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    assert "fallthrough" not in corefile  # no cluster name or address is ever asked upstream
    assert "forward" not in corefile  # no internet egress: no other name resolves either
    assert "forward . /etc/resolv.conf" in by_kind(rendered({"workloads": {"egress": {"internet": True}}}),
                                                   "ConfigMap")[naming.DNS]["data"]["Corefile"]  # fmt: skip
    policy = by_kind(objects, "NetworkPolicy")[naming.DNS]["spec"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": naming.workloads_namespace("team-a")}}}]  # fmt: skip
    suspended = by_kind(rendered({"suspended": True}), "Deployment")[naming.DNS]
    assert suspended["spec"]["replicas"] == 0


def test_a_tenant_from_before_the_pool_keeps_its_range_and_gets_no_dns() -> None:
    inp = render.TenantInput("team-a", "uid-1", TenantSpec(), OperatorConfig(), service_range=None)
    objects = render.render_tenant(inp)
    assert "--service-cluster-ip-range=10.96.0.0/12" in args_of(control_plane(objects), naming.APISERVER)
    assert "clusterIP" not in by_kind(objects, "Service")[naming.APISERVER]["spec"]  # it keeps its address
    assert naming.DNS not in by_kind(objects, "Deployment") and naming.DNS not in by_kind(objects, "NetworkPolicy")
    assert naming.KUBELET not in by_kind(objects, "Deployment") and not by_kind(objects, "Role")


def test_the_kubelet_api_reaches_only_its_tenants_workloads_and_only_its_api_server_reaches_it() -> None:
    objects = rendered()
    pod = by_kind(objects, "Deployment")[naming.KUBELET]["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "kata" and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == naming.KUBELET and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert f"--namespace={naming.workloads_namespace('team-a')}" in container["args"]
    # Its certificates: the tenant's and front-proxy CAs' certificates (never a key of a CA), its own
    # serving pair and its identity in the tenant (the tenant's API server at its ClusterIP).
    (pki,) = [v for v in pod["volumes"] if "projected" in v]
    paths = [i["path"] for s in pki["projected"]["sources"] for i in s["secret"]["items"]]
    assert paths == ["ca.crt", "front-proxy-ca.crt", "kubelet.crt", "kubelet.key",
                     "kubelet-tenant.crt", "kubelet-tenant.key"]  # fmt: skip
    assert "--front-proxy-ca=/etc/kubelet/pki/front-proxy-ca.crt" in container["args"]
    assert "--tenant-server=https://10.112.0.1:6443" in container["args"]
    assert f"--node-name={naming.virtual_node('team-a')}" in container["args"]
    # Its super identity: one Role, in the workloads namespace only, no wildcard.
    (role,) = by_kind(objects, "Role").values()
    assert role["metadata"]["namespace"] == naming.workloads_namespace("team-a")
    assert {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("", "pods"), ("", "pods/log"), ("", "pods/exec"), ("", "pods/attach"), ("", "pods/portforward"),
        ("metrics.k8s.io", "pods")}  # fmt: skip
    assert "*" not in str(role["rules"])
    (binding,) = by_kind(objects, "RoleBinding").values()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": naming.KUBELET,
                                    "namespace": naming.control_plane_namespace("team-a")}]  # fmt: skip
    policy = by_kind(objects, "NetworkPolicy")[naming.KUBELET]["spec"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": {naming.LABEL_REPLICA: "true"}}}],
                                  "ports": [{"port": naming.KUBELET_PORT}]}]  # fmt: skip
    assert policy["egress"] == [  # its tenant's API server, the super API server; nothing else
        {"to": [{"podSelector": {"matchLabels": {naming.LABEL_REPLICA: "true"}}}], "ports": [{"port": 6443}]},
        {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]},
    ]
    # And the API server, which checks the kubelet's certificate at the address the node publishes.
    args = args_of(control_plane(objects), naming.APISERVER)
    assert "--kubelet-preferred-address-types=InternalIP" in args
    assert f"--kubelet-certificate-authority={render.PKI_DIR}/ca.crt" in args
