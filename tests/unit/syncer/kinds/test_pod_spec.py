"""A tenant pod as the super cluster runs it: refusals, translation, status."""

from __future__ import annotations

from typing import Any

import pytest

from stockade import naming
from stockade.syncer import context
from stockade.syncer import translate as tr
from stockade.syncer.kinds import pod_spec
from tests.unit.syncer.helpers import CTX, pod

GATE = context.NetGate("netgate:1", deny=("10.0.0.1:443",), allow=("10.96.0.10:6443",))
SEALED = context.TenantContext(
    **{**CTX.__dict__, "netgate": GATE, "node_selector": {"pool": "tenants"},
       "tolerations": ({"key": "tenants", "operator": "Exists", "effect": "NoSchedule"},)}
)  # fmt: skip


def test_pod_translation_forces_the_sandbox_and_hides_the_super_cluster() -> None:
    spec = {
        "nodeName": "stockade-t", "overhead": {"cpu": "1"}, "runtimeClassName": "kata", "priorityClassName": "high",
        "serviceAccountName": "robot", "automountServiceAccountToken": True,
        "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "2"}},
                        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "KUBERNETES_SERVICE_HOST", "value": "evil"}],
                        "envFrom": [{"secretRef": {"name": "s"}}]}],
        "volumes": [
            {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            {"name": "cfg", "configMap": {"name": "cm"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
        ],
    }  # fmt: skip
    out = pod_spec.translate_pod(pod(spec, labels={"app": "a", "stockade.dev/tenant": "spoofed"}), CTX, "tok")
    s = out["spec"]
    assert out["metadata"]["namespace"] == "stockade-t-workloads"
    # Tenant keys are carried under Stockade's own; a spoofed Stockade label cannot overwrite the real one.
    assert out["metadata"]["labels"] == {
        tr.carried_label("app"): "a", tr.carried_label("stockade.dev/tenant"): "spoofed",
        "stockade.dev/tenant": "t", naming.LABEL_SYNCED: "true", naming.LABEL_NAMESPACE: "ns",
    }  # fmt: skip
    assert "nodeName" not in s and "overhead" not in s and "priorityClassName" not in s
    assert s["runtimeClassName"] == "kata" and s["automountServiceAccountToken"] is False
    assert s["enableServiceLinks"] is False
    assert s["serviceAccountName"] == tr.super_name("ns", "robot")
    container = s["containers"][0]
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "512Mi"},
        "requests": {"cpu": "2", "memory": "128Mi"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"]["value"] == "10.112.4.1"
    assert env["X"]["valueFrom"]["configMapKeyRef"]["name"] == tr.super_name("ns", "cm")
    assert env["ME"] == {"name": "ME", "value": "ns"}  # the tenant's namespace, fixed for the pod's life
    assert container["envFrom"][0]["secretRef"]["name"] == tr.super_name("ns", "s")
    volumes = {v["name"]: v for v in s["volumes"]}
    assert volumes["kube-api-access-x"] == {
        "name": "kube-api-access-x",
        "projected": {"sources": [{"secret": {"name": "tok", "items": [{"key": "token", "path": "token"}]}}]},
    }
    assert volumes["cfg"]["configMap"]["name"] == tr.super_name("ns", "cm")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == tr.super_name("ns", "claim")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"hostNetwork": True}, "spec.hostNetwork"),
        ({"volumes": [{"name": "v", "hostPath": {"path": "/"}}]}, "spec.volumes[0].hostPath"),
        ({"initContainers": [{"name": "i", "securityContext": {"privileged": True}}]},
         "spec.initContainers[0].securityContext.privileged"),
        ({"ephemeralContainers": [{"name": "e", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
         "spec.ephemeralContainers[0].securityContext.capabilities.add"),
        ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, "sysctls"),
        ({"runtimeClassName": "runc"}, "spec.runtimeClassName"),
        ({"volumes": [{"name": "stockade-hosts", "emptyDir": {}}]}, "spec.volumes[0].name: 'stockade-hosts'"),
        ({"initContainers": [{"name": "stockade-netgate"}]}, "spec.initContainers[0].name: 'stockade-netgate'"),
        ({"subdomain": "db", "setHostnameAsFQDN": True}, "spec.setHostnameAsFQDN"),
    ],
)  # fmt: skip
def test_refusals_name_the_field(spec: dict[str, Any], field: str) -> None:
    body = pod({"containers": [{"name": "c", "image": "i"}], **spec})
    assert field in (pod_spec.pod_refusal(body, CTX) or "")


def test_baseline_allows_what_restricted_refuses() -> None:
    plain = pod()
    assert pod_spec.pod_refusal(plain, CTX) is None
    restricted = context.TenantContext(**{**CTX.__dict__, "pod_security": "restricted"})
    assert "allowPrivilegeEscalation" in (pod_spec.pod_refusal(plain, restricted) or "")
    assert (
        pod_spec.pod_refusal(
            pod(
                spec={"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]}
            ),
            CTX,
        )
        is None
    )


def test_status_up_hides_the_node_address() -> None:
    super_pod = {"status": {"phase": "Running", "hostIP": "172.18.0.2", "qosClass": "Guaranteed"}}
    status = pod_spec.tenant_pod_status(super_pod, CTX)
    ip = CTX.virtual_node_ip
    assert status == {"phase": "Running", "hostIP": ip, "hostIPs": [{"ip": ip}]}


@pytest.mark.parametrize("volume", [{"nfs": {"server": "10.9.9.9", "path": "/"}}, {"iscsi": {}}, {"csi": {}},
                                    {"image": {"reference": "x"}}, {"rbd": {}}])  # fmt: skip
def test_volume_types_by_allowlist_at_every_level(volume: dict[str, Any]) -> None:
    kind = next(iter(volume))
    body = pod({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "v", **volume}]})
    assert f"spec.volumes[0].{kind}: volume type not allowed" in (pod_spec.pod_refusal(body, CTX) or "")
    extended = context.TenantContext(**{**CTX.__dict__, "volume_types": CTX.volume_types | {kind}})
    assert pod_spec.pod_refusal(body, extended) is None  # the superuser may allow it for one Tenant


@pytest.mark.parametrize(
    ("container", "field"),
    [
        ({"livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}}}, "livenessProbe.httpGet.host"),
        ({"readinessProbe": {"tcpSocket": {"host": "10.0.0.1", "port": 443}}}, "readinessProbe.tcpSocket.host"),
        ({"startupProbe": {"httpGet": {"host": "x", "port": 1}}}, "startupProbe.httpGet.host"),
        ({"lifecycle": {"preStop": {"httpGet": {"host": "x", "port": 1}}}}, "lifecycle.preStop.httpGet.host"),
        ({"lifecycle": {"postStart": {"tcpSocket": {"host": "x", "port": 1}}}}, "lifecycle.postStart.tcpSocket.host"),
        ({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, "securityContext.seLinuxOptions.type"),
        ({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}, "securityContext.appArmorProfile.type"),
        ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "securityContext.seccompProfile.type"),
    ],
)  # fmt: skip
def test_node_side_handlers_and_confinement_opt_outs_are_refused(container: dict[str, Any], field: str) -> None:
    body = pod({"containers": [{"name": "c", "image": "i", **container}]})
    assert f"spec.containers[0].{field}" in (pod_spec.pod_refusal(body, CTX) or "")
    control = pod({"containers": [{"name": "c", "image": "i", "livenessProbe": {"httpGet": {"port": 80}}}]})
    assert pod_spec.pod_refusal(control, CTX) is None


def test_placement_is_the_tenants_never_the_pods() -> None:
    spec = {
        "containers": [{"name": "c", "image": "i"}], "nodeName": "stockade-t",
        "tolerations": [{"operator": "Exists"}], "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "affinity": {"nodeAffinity": {}}, "topologySpreadConstraints": [{"maxSkew": 1}],
        "schedulingGates": [{"name": "x"}],
    }  # fmt: skip
    s = pod_spec.translate_pod(pod(spec), SEALED, None)["spec"]
    assert s["tolerations"] == [{"key": "tenants", "operator": "Exists", "effect": "NoSchedule"}]
    assert s["nodeSelector"] == {"pool": "tenants"}
    assert not {"nodeName", "affinity", "topologySpreadConstraints", "schedulingGates"} & set(s)
    assert not {"tolerations", "nodeSelector"} & set(pod_spec.translate_pod(pod(spec), CTX, None)["spec"])
    assert "spec.resourceClaims" in (
        pod_spec.pod_refusal(pod({**spec, "resourceClaims": [{"name": "gpu"}]}), CTX) or ""
    )


def test_tenant_pods_never_get_the_super_clusters_dns() -> None:
    s = pod_spec.translate_pod(pod(), CTX, None)["spec"]
    assert s["dnsPolicy"] == "None"
    assert s["dnsConfig"]["searches"] == ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert s["dnsConfig"]["nameservers"] == ["10.112.4.10"]  # the tenant's own DNS
    no_dns = context.TenantContext(**{**CTX.__dict__, "dns_servers": ()})
    assert pod_spec.translate_pod(pod(), no_dns, None)["spec"]["dnsConfig"]["nameservers"] == [pod_spec.NO_NAMESERVER]
    assert {"name": "ndots", "value": "5"} in s["dnsConfig"]["options"]
    own = {"nameservers": ["192.0.2.53"], "searches": ["corp"]}
    custom = pod_spec.translate_pod(pod({"containers": [], "dnsPolicy": "None", "dnsConfig": own}), CTX, None)["spec"]
    assert custom["dnsPolicy"] == "None" and custom["dnsConfig"] == own


def test_downward_api_shows_the_tenants_view() -> None:
    paths = ["spec.nodeName", "status.hostIP", "status.hostIPs", "spec.serviceAccountName", "metadata.name",
             "status.podIP"]  # fmt: skip
    env = [{"name": p, "valueFrom": {"fieldRef": {"fieldPath": p}}} for p in paths]
    volume = {"name": "info", "downwardAPI": {"items": [
        {"path": "team", "fieldRef": {"fieldPath": "metadata.labels['team']"}},
        {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}},
    ]}}  # fmt: skip
    out = pod_spec.translate_pod(
        pod({"containers": [{"name": "c", "image": "i", "env": env}], "volumes": [volume]}), CTX, None
    )
    values = {e["name"]: e.get("value") for e in out["spec"]["containers"][0]["env"]}
    assert values["spec.nodeName"] == "stockade-t" and values["status.hostIP"] == CTX.virtual_node_ip
    assert values["status.hostIPs"] == CTX.virtual_node_ip and values["spec.serviceAccountName"] == "default"
    assert values["metadata.name"] == "p"
    assert values["status.podIP"] is None  # the pod's own address is the same on both sides: read live
    items = out["spec"]["volumes"][0]["downwardAPI"]["items"]
    assert items[0]["fieldRef"]["fieldPath"] == f"metadata.labels['{tr.carried_label('team')}']"
    assert items[1]["fieldRef"]["fieldPath"] == f"metadata.annotations['{tr.carried_annotation('note')}']"


def test_downward_api_files_of_all_labels_and_annotations_are_the_tenant_pods() -> None:
    volume = {"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
    ]}}  # fmt: skip
    projected = {"name": "more", "projected": {"sources": [{"downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
    ]}}]}}  # fmt: skip
    spec = {"containers": [{"name": "c", "image": "i"}], "volumes": [volume, projected]}
    labels = {"b": "2", "a": 'say "hi"\tthere\n', "app.kubernetes.io/name": "wéb"}
    out = pod_spec.translate_pod(pod(spec, labels=labels, annotations={"note": "x\x01y"}), CTX, None)
    items = [out["spec"]["volumes"][0]["downwardAPI"]["items"][0],
             out["spec"]["volumes"][1]["projected"]["sources"][0]["downwardAPI"]["items"][0]]  # fmt: skip
    assert items[0]["fieldRef"]["fieldPath"] == f"metadata.annotations['{naming.ANNOTATION_TENANT_LABELS}']"
    assert items[1]["fieldRef"]["fieldPath"] == f"metadata.annotations['{naming.ANNOTATION_TENANT_ANNOTATIONS}']"
    annotations = out["metadata"]["annotations"]
    # Sorted `key="value"` lines quoted as Go's %q does, no newline at the end: the kubelet's file.
    assert annotations[naming.ANNOTATION_TENANT_LABELS] == (
        'a="say \\"hi\\"\\tthere\\n"\napp.kubernetes.io/name="wéb"\nb="2"'
    )
    assert annotations[naming.ANNOTATION_TENANT_ANNOTATIONS] == 'note="x\\x01y"'
    # A pod that reads neither carries neither (they would only weigh on the super pod).
    plain = pod_spec.translate_pod(pod(labels=labels), CTX, None)["metadata"]["annotations"]
    assert naming.ANNOTATION_TENANT_LABELS not in plain and naming.ANNOTATION_TENANT_ANNOTATIONS not in plain
    assert pod_spec.kubelet_map_text({}) == ""


def test_ephemeral_containers_are_translated_as_containers_without_resources() -> None:
    debug = {"name": "dbg", "image": "busybox", "targetContainerName": "c",
             "env": [{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                     {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}  # fmt: skip
    spec = {"containers": [{"name": "c", "image": "i"}], "ephemeralContainers": [debug]}
    tenant_pod = pod(spec)
    assert "ephemeralContainers" not in pod_spec.translate_pod(tenant_pod, CTX, None)["spec"]  # never on create
    (out,) = pod_spec.translate_ephemeral_containers(tenant_pod, CTX)
    env = {e["name"]: e for e in out["env"]}
    assert env["ME"]["value"] == "p" and env["S"]["valueFrom"]["secretKeyRef"]["name"] == tr.super_name("ns", "s")
    assert env["KUBERNETES_SERVICE_HOST"]["value"] == CTX.apiserver_host
    assert out["imagePullPolicy"] == "Always" and "resources" not in out
    assert out["targetContainerName"] == "c"


def test_the_network_gate_runs_first_and_is_hidden_from_the_tenant() -> None:
    spec = {"containers": [{"name": "c", "image": "i"}], "initContainers": [{"name": "own", "image": "i"}]}
    s = pod_spec.translate_pod(pod(spec), SEALED, None)["spec"]
    assert [c["name"] for c in s["initContainers"]] == [context.NETGATE_CONTAINER, "own"]
    gate = s["initContainers"][0]
    assert gate["args"] == ["--deny=10.0.0.1:443", "--allow=10.96.0.10:6443", "--seconds=120"]
    assert gate["securityContext"]["runAsNonRoot"] and gate["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec._restricted_refusal({"containers": [gate]}) is None  # the gate itself meets Pod Security restricted
    no_own_init = pod_spec.translate_pod(pod(), SEALED, None)["spec"]
    assert [c["name"] for c in no_own_init["initContainers"]] == [context.NETGATE_CONTAINER]
    status = pod_spec.tenant_pod_status(
        {"status": {"initContainerStatuses": [{"name": context.NETGATE_CONTAINER}, {"name": "own"}]}}, SEALED
    )
    assert status["initContainerStatuses"] == [{"name": "own"}]


def test_tenant_containers_always_pull_with_their_own_credentials() -> None:
    spec = {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Never"}],
            "initContainers": [{"name": "i", "image": "i", "imagePullPolicy": "IfNotPresent"}]}  # fmt: skip
    s = pod_spec.translate_pod(pod(spec), SEALED, None)["spec"]
    assert [c["imagePullPolicy"] for c in s["containers"]] == ["Always"]
    assert [c["imagePullPolicy"] for c in s["initContainers"]] == ["IfNotPresent", "Always"]  # the gate is ours


def test_token_secret_is_owned_by_its_pod_from_birth() -> None:
    owner = {"metadata": {"name": "sp", "uid": "su"}}
    secret = pod_spec.token_secret(pod(), CTX, {"token": "jwt"}, b"ca", "2030-01-01T00:00:00Z", owner)
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "sp", "uid": "su"}]
    assert secret["metadata"]["name"] == pod_spec.token_secret_name(pod())
    assert sorted(secret["data"]) == ["ca.crt", "namespace", "token"]


def test_projected_tokens_of_any_audience_and_path_are_the_tenants() -> None:
    api_access = {"name": "kube-api-access-x", "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}  # fmt: skip
    vault = {"name": "vault", "projected": {"sources": [
        {"serviceAccountToken": {"path": "sa-token", "audience": "vault", "expirationSeconds": 600}},
        {"configMap": {"name": "settings"}},
    ]}}  # fmt: skip
    spec = {"containers": [{"name": "c", "image": "i"}], "volumes": [api_access, vault],
            "automountServiceAccountToken": False}  # fmt: skip
    tenant_pod = pod(spec)
    # One token per audience, the shortest lifetime any of its sources asks for; one the pod names
    # itself is mounted even with automountServiceAccountToken false, as Kubernetes does.
    vault_key = pod_spec.token_key({"audience": "vault"})
    assert pod_spec.token_requests(tenant_pod) == {"token": ("", 3607), vault_key: ("vault", 600)}
    assert pod_spec.wants_token(tenant_pod) and vault_key.startswith("token-") and vault_key != "token"
    volumes = {v["name"]: v for v in pod_spec.translate_pod(tenant_pod, CTX, "tok")["spec"]["volumes"]}
    sources = volumes["kube-api-access-x"]["projected"]["sources"]
    assert volumes["kube-api-access-x"]["projected"]["defaultMode"] == 0o644
    assert sources[0] == {"secret": {"name": "tok", "items": [{"key": "token", "path": "token"}]}}
    assert sources[1] == {"secret": {"name": "tok", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{naming.ANNOTATION_NAMESPACE}']"
    )
    assert volumes["vault"]["projected"]["sources"] == [
        {"secret": {"name": "tok", "items": [{"key": vault_key, "path": "sa-token"}]}},
        {"configMap": {"name": tr.super_name("ns", "settings")}},
    ]
    assert not pod_spec.token_requests(pod()) and not pod_spec.wants_token(pod())


def test_dependencies_are_everything_the_pod_names_in_its_namespace() -> None:
    projected = [{"configMap": {"name": "extra"}}, {"secret": {"name": "keys"}}, {"serviceAccountToken": {"path": "t"}}]
    volumes = [
        {"name": "a", "configMap": {"name": "settings"}},
        {"name": "b", "secret": {"secretName": "tls"}},
        {"name": "c", "projected": {"sources": projected}},
        {"name": "d", "emptyDir": {}},
    ]
    env = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "tls", "key": "k"}}},
        {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    container = {"name": "c", "image": "i", "env": env,
                 "envFrom": [{"configMapRef": {"name": "env"}}, {"secretRef": {"name": "settings"}}]}  # fmt: skip
    subject = pod({"serviceAccountName": "builder", "imagePullSecrets": [{"name": "registry"}], "volumes": volumes,
                   "containers": [container]})  # fmt: skip
    assert pod_spec.dependencies(subject) == [
        ("ServiceAccount", "builder"), ("Secret", "registry"), ("ConfigMap", "settings"), ("Secret", "tls"),
        ("ConfigMap", "extra"), ("Secret", "keys"), ("ConfigMap", "env"), ("Secret", "settings"),
    ]  # fmt: skip
    assert pod_spec.dependencies(pod()) == [("ServiceAccount", "default")]


def test_service_variables_are_the_tenants_as_its_kubelet_would_write_them() -> None:
    web = {
        "metadata": {"name": "web-app"},
        "spec": {
            "clusterIP": "10.112.4.20",
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
            ],
        },
    }
    headless = {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}
    spec = {
        "containers": [
            {
                "name": "c",
                "image": "i",
                "env": [
                    {"name": "URL", "value": "http://$(WEB_APP_SERVICE_HOST)"},
                    {"name": "WEB_APP_SERVICE_PORT", "value": "8"},
                ],
            }
        ]
    }
    env = pod_spec.translate_pod(pod(spec), CTX, None, [web, headless])["spec"]["containers"][0]["env"]
    values = {e["name"]: e["value"] for e in env}
    assert values["WEB_APP_SERVICE_HOST"] == "10.112.4.20"
    assert values["WEB_APP_SERVICE_PORT"] == "8"  # the container's own wins
    assert values["WEB_APP_SERVICE_PORT_HTTP"] == "80" and values["WEB_APP_SERVICE_PORT_DNS_UDP"] == "53"
    assert values["WEB_APP_PORT"] == "tcp://10.112.4.20:80"
    assert (
        values["WEB_APP_PORT_53_UDP"] == "udp://10.112.4.20:53" and values["WEB_APP_PORT_53_UDP_ADDR"] == "10.112.4.20"
    )
    assert values["KUBERNETES_SERVICE_HOST"] == "10.112.4.1" and values["KUBERNETES_PORT"] == "tcp://10.112.4.1:443"
    assert not [n for n in values if n.startswith("DB_")]  # headless: no variables
    names = [e["name"] for e in env]
    assert names.index("WEB_APP_SERVICE_HOST") < names.index("URL")  # defined before it refers to them
    unlinked = pod_spec.translate_pod(pod({**spec, "enableServiceLinks": False}), CTX, None, [web])
    assert not [e for e in unlinked["spec"]["containers"][0]["env"] if e["name"].startswith("WEB_APP_SERVICE_HOST")]


def test_containers_keep_the_tenant_pods_hostname() -> None:
    assert pod_spec.translate_pod(pod(), CTX, None)["spec"]["hostname"] == "p"
    spec = {"containers": [], "hostname": "db-0", "subdomain": "db"}
    out = pod_spec.translate_pod(pod(spec), CTX, None)["spec"]
    assert (out["hostname"], out["subdomain"]) == ("db-0", "db")
    assert pod_spec.translate_pod(pod(name="a" * 62 + "-b" * 5), CTX, None)["spec"]["hostname"] == "a" * 62
    assert "hostname" not in pod_spec.translate_pod(pod(name="web.v2"), CTX, None)["spec"]  # not a DNS label


def test_a_pod_with_a_subdomain_has_its_tenant_name_in_its_hosts_file() -> None:
    spec = {"hostname": "db-0", "subdomain": "db", "initContainers": [{"name": "own", "image": "i"}],
            "containers": [{"name": "c", "image": "i"},
                           {"name": "mine", "image": "i", "volumeMounts": [{"name": "h", "mountPath": "/etc/hosts"}]}],
            "volumes": [{"name": "h", "configMap": {"name": "hosts"}}]}  # fmt: skip
    out = pod_spec.translate_pod(pod(spec, namespace="shop"), SEALED, None)["spec"]
    gate, own = out["initContainers"]
    # The super kubelet writes db-0.db.<super namespace>.svc.<its domain>; the gate renames it.
    assert gate["args"][-2:] == [
        "--hosts-file=/stockade-hosts/hosts",
        f"--hosts-rename=db-0.db.{SEALED.namespace}.svc=db-0.db.shop.svc.{SEALED.cluster_domain}",
    ]
    assert gate["volumeMounts"] == [{"name": context.HOSTS_VOLUME, "mountPath": context.HOSTS_DIR}]
    hosts_mount = {"name": context.HOSTS_VOLUME, "mountPath": "/etc/hosts", "subPath": "hosts"}
    assert hosts_mount in own["volumeMounts"] and hosts_mount in out["containers"][0]["volumeMounts"]
    assert hosts_mount not in out["containers"][1]["volumeMounts"]  # it mounts its own /etc/hosts
    volumes = {v["name"]: v for v in out["volumes"]}
    assert volumes[context.HOSTS_VOLUME] == {"name": context.HOSTS_VOLUME,
                                             "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}  # fmt: skip
    assert pod_spec._restricted_refusal({"containers": [gate]}) is None
    # Without a subdomain the kubelet writes only the hostname: the file is the kubelet's.
    plain = pod_spec.translate_pod(pod({"containers": [{"name": "c", "image": "i"}]}), SEALED, None)["spec"]
    assert "volumeMounts" not in plain["initContainers"][0] and "volumeMounts" not in plain["containers"][0]
    # A pod without a hostname of its own is named by its super pod's name, as that kubelet does.
    unnamed = pod_spec.translate_pod(pod({"subdomain": "db", "containers": []}, name="web.v2"), SEALED, None)
    host = unnamed["metadata"]["name"]
    assert unnamed["spec"]["initContainers"][0]["args"][-1].startswith(f"--hosts-rename={host}.db.")


def test_container_statuses_do_not_show_the_super_pods_resources() -> None:
    resources = {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}
    super_status = {"status": {"containerStatuses": [{"name": "c", "ready": True, "resources": resources,
                                                      "allocatedResources": {"cpu": "100m"}}],
                               "initContainerStatuses": [{"name": "own", "resources": resources}]}}  # fmt: skip
    status = pod_spec.tenant_pod_status(super_status, SEALED)
    assert status["containerStatuses"] == [{"name": "c", "ready": True}]
    assert status["initContainerStatuses"] == [{"name": "own"}]
