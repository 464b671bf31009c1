"""Properties of the translation for arbitrary tenant objects (Hypothesis): whatever a tenant
writes, a super object that the syncer would create never carries a forbidden field, a foreign
runtime class, the tenant's own placement, or a tenant label or annotation key verbatim."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade import naming
from stockade.syncer import context
from stockade.syncer.kinds import pod_spec, services, volumes

CTX = context.TenantContext(
    tenant="t", runtime_class="kata", pod_security="baseline", apiserver_host="10.96.0.10", apiserver_port=6443,
    default_requests={"cpu": "100m"}, default_limits={"cpu": "1"}, virtual_node="stockade-t",
    node_selector={"pool": "tenants"}, tolerations=({"key": "tenants", "operator": "Exists"},),
    netgate=context.NetGate("gate:1", deny=("10.0.0.1:443",), allow=("10.96.0.10:6443",)),
)  # fmt: skip
OWN_KEYS = ("stockade.dev/", naming.CARRIED_LABEL_PREFIX, naming.CARRIED_ANNOTATION_PREFIX)

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
prefixes = st.sampled_from(["", "kubernetes.io/", "io.katacontainers.config.", "azure.workload.identity/",
                            "pv.kubernetes.io/", "stockade.dev/", "label.stockade.dev/", "example.com/"])  # fmt: skip
keys = st.builds(lambda p, n: p + n, prefixes, names)
metadata_maps = st.dictionaries(keys, st.text(max_size=20), max_size=6)
volume_kinds = st.sampled_from(["emptyDir", "configMap", "secret", "hostPath", "nfs", "csi", "iscsi", "projected",
                                "downwardAPI", "persistentVolumeClaim", "image", "ephemeral", "gitRepo"])  # fmt: skip
handler = st.fixed_dictionaries(
    {}, optional={"httpGet": st.fixed_dictionaries({"port": st.just(80)}, optional={"host": names}),
                  "tcpSocket": st.fixed_dictionaries({"port": st.just(80)}, optional={"host": names})},
)  # fmt: skip
security_contexts = st.fixed_dictionaries(
    {},
    optional={
        "privileged": st.booleans(),
        "capabilities": st.fixed_dictionaries({"add": st.lists(st.sampled_from(["NET_ADMIN", "SYS_ADMIN",
                                                                                 "NET_BIND_SERVICE"]), max_size=2)}),
        "procMount": st.sampled_from(["Default", "Unmasked"]),
        "seLinuxOptions": st.fixed_dictionaries({"type": st.sampled_from(["container_t", "spc_t"])}),
        "seccompProfile": st.fixed_dictionaries({"type": st.sampled_from(["RuntimeDefault", "Unconfined"])}),
    },
)  # fmt: skip
containers = st.fixed_dictionaries(
    {"name": names, "image": names},
    optional={
        "securityContext": security_contexts,
        "livenessProbe": handler,
        "readinessProbe": handler,
        "lifecycle": st.fixed_dictionaries({}, optional={"preStop": handler, "postStart": handler}),
        "ports": st.lists(st.fixed_dictionaries({"containerPort": st.just(80)}, optional={"hostPort": st.just(80)}),
                          max_size=1),
    },
)  # fmt: skip


def _volume(kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, kind: {}}
    if kind == "configMap":
        body[kind] = {"name": name}
    elif kind == "secret":
        body[kind] = {"secretName": name}
    elif kind == "persistentVolumeClaim":
        body[kind] = {"claimName": name}
    elif kind == "ephemeral":
        body[kind] = {"volumeClaimTemplate": {"metadata": {"annotations": {"pv.kubernetes.io/x": "y"}}, "spec": {}}}
    return body


pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": names, "namespace": names, "uid": names, "labels": metadata_maps, "annotations": metadata_maps}
        ),
        "spec": st.fixed_dictionaries(
            {"containers": st.lists(containers, min_size=1, max_size=2)},
            optional={
                "initContainers": st.lists(containers, max_size=1),
                "runtimeClassName": st.sampled_from(["kata", "runc", "gvisor"]),
                "hostNetwork": st.booleans(),
                "hostPID": st.booleans(),
                "nodeName": names,
                "nodeSelector": metadata_maps,
                "tolerations": st.lists(st.fixed_dictionaries({"operator": st.just("Exists")}), max_size=1),
                "affinity": st.just({"nodeAffinity": {}}),
                "topologySpreadConstraints": st.just([{"maxSkew": 1}]),
                "priorityClassName": names,
                "schedulerName": names,
                "dnsPolicy": st.sampled_from(["ClusterFirst", "Default", "ClusterFirstWithHostNet"]),
                "volumes": st.lists(st.builds(_volume, volume_kinds, names), max_size=3),
            },
        ),
    }
)  # fmt: skip

FORBIDDEN_POD_FIELDS = ("nodeName", "affinity", "topologySpreadConstraints", "priorityClassName", "schedulerName",
                        "hostNetwork", "hostPID", "hostIPC", "overhead", "ephemeralContainers")  # fmt: skip


def _only_own_keys(meta: dict[str, Any]) -> None:
    for field in ("labels", "annotations"):
        for key in meta.get(field) or {}:
            assert key.startswith(OWN_KEYS), (field, key)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods)
def test_a_pod_the_syncer_would_create_is_always_sealed(tenant_pod: dict[str, Any]) -> None:
    if pod_spec.pod_refusal(tenant_pod, CTX) is not None:
        return  # refused: nothing reaches the super cluster
    out = pod_spec.translate_pod(tenant_pod, CTX, "token")
    spec, meta = out["spec"], out["metadata"]
    _only_own_keys(meta)
    assert meta["namespace"] == CTX.namespace
    assert spec["runtimeClassName"] == "kata" and spec["automountServiceAccountToken"] is False
    assert not any(spec.get(field) for field in FORBIDDEN_POD_FIELDS)
    assert spec.get("tolerations") == [dict(t) for t in CTX.tolerations]
    assert spec.get("nodeSelector") == dict(CTX.node_selector)
    assert spec["dnsPolicy"] in ("None", "Default")
    assert spec["initContainers"][0]["name"] == context.NETGATE_CONTAINER
    for volume in spec.get("volumes") or []:
        assert set(volume) - {"name"} <= CTX.volume_types, volume
        if "ephemeral" in volume:
            assert "metadata" not in volume["ephemeral"]["volumeClaimTemplate"]
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            sc = container.get("securityContext") or {}
            assert not sc.get("privileged") and sc.get("procMount") in (None, "Default")
            assert set((sc.get("capabilities") or {}).get("add") or []) <= {"NET_BIND_SERVICE"}
            assert (sc.get("seLinuxOptions") or {}).get("type", "container_t") == "container_t"
            assert (sc.get("seccompProfile") or {}).get("type") != "Unconfined"
            assert not any(p.get("hostPort") for p in container.get("ports") or [])
            handlers = [container.get(p) or {} for p in pod_spec.PROBES]
            handlers += [h or {} for h in (container.get("lifecycle") or {}).values()]
            assert not any((h.get(a) or {}).get("host") for h in handlers for a in ("httpGet", "tcpSocket"))
            assert container["resources"]["limits"] and container["resources"]["requests"]
            if container["name"] != context.NETGATE_CONTAINER:
                assert container["imagePullPolicy"] == "Always"


service_objects = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": names, "namespace": names, "uid": names, "labels": metadata_maps, "annotations": metadata_maps}
        ),
        "spec": st.fixed_dictionaries(
            {"ports": st.lists(st.fixed_dictionaries({"port": st.integers(1, 65535)},
                                                     optional={"nodePort": st.integers(30000, 32767)}), max_size=2)},
            optional={
                "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
                "selector": metadata_maps,
                "externalIPs": st.lists(names, max_size=1),
                "loadBalancerSourceRanges": st.just(["0.0.0.0/0"]),
                "externalTrafficPolicy": st.just("Local"),
            },
        ),
    }
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(service_objects)
def test_a_service_the_syncer_would_create_opens_nothing_on_the_nodes(service: dict[str, Any]) -> None:
    if services.service_refusal(service, "10.112.4.0/22") is not None:
        return
    out = services.translate_service(service, CTX)
    _only_own_keys(out["metadata"])
    assert out["spec"]["type"] == "ClusterIP"
    assert set(out["spec"]) <= {"type", "clusterIP", "ports", "selector", "sessionAffinity", "sessionAffinityConfig",
                                "publishNotReadyAddresses", "ipFamilyPolicy", "internalTrafficPolicy"}  # fmt: skip
    assert not any("nodePort" in port for port in out["spec"]["ports"])
    for key in out["spec"].get("selector") or {}:
        assert key.startswith(OWN_KEYS)


claims = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": names, "namespace": names, "uid": names, "labels": metadata_maps, "annotations": metadata_maps}
        ),
        "spec": st.fixed_dictionaries(
            {"accessModes": st.just(["ReadWriteOnce"]), "resources": st.just({"requests": {"storage": "1Gi"}})},
            optional={"volumeName": names, "selector": st.just({"matchLabels": {"x": "y"}}),
                      "dataSourceRef": st.just({"kind": "PersistentVolumeClaim", "name": "other"})},
        ),
    }
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(claims)
def test_a_claim_never_names_a_super_volume_or_another_claim(claim: dict[str, Any]) -> None:
    out = volumes.translate_pvc(claim, CTX)
    _only_own_keys(out["metadata"])
    assert set(out["spec"]) <= {"accessModes", "resources", "storageClassName", "volumeMode"}
