from __future__ import annotations

from typing import Any

import pytest

from stockade.syncer import translate as tr
from stockade.syncer.queue import FairQueue

CTX = tr.TenantContext(
    tenant="t", runtime_class="kata", pod_security="baseline", apiserver_host="10.96.0.10", apiserver_port=6443,
    default_requests={"cpu": "100m", "memory": "128Mi"}, default_limits={"cpu": "1", "memory": "512Mi"},
    virtual_node="stockade-t",
)  # fmt: skip


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", **meta},
        "spec": spec or {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip


def test_super_names_are_short_unique_and_stable() -> None:
    assert tr.super_name("ns", "p") == tr.super_name("ns", "p")
    assert tr.super_name("a-x", "b") != tr.super_name("a", "x-b")
    long = tr.super_name("n" * 63, "p" * 253)
    assert len(long) <= 63 and long[0].isalpha()
    assert tr.super_name("ns", "9lives")[0].isalpha()


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
    out = tr.translate_pod(pod(spec, labels={"app": "a", "stockade.dev/tenant": "spoofed"}), CTX, "tok")
    s = out["spec"]
    assert out["metadata"]["namespace"] == "stockade-t-workloads"
    assert out["metadata"]["labels"] == {"app": "a", "stockade.dev/tenant": "t", tr.LABEL_SYNCED: "true",
                                         tr.LABEL_NAMESPACE: "ns"}  # fmt: skip
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
    assert env["KUBERNETES_SERVICE_HOST"]["value"] == "10.96.0.10"
    assert env["X"]["valueFrom"]["configMapKeyRef"]["name"] == tr.super_name("ns", "cm")
    assert env["ME"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{tr.ANNOTATION_NAMESPACE}']"
    assert container["envFrom"][0]["secretRef"]["name"] == tr.super_name("ns", "s")
    volumes = {v["name"]: v for v in s["volumes"]}
    assert volumes["kube-api-access-x"] == {
        "name": "kube-api-access-x",
        "secret": {"secretName": "tok", "defaultMode": 0o644},
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
    ],
)  # fmt: skip
def test_refusals_name_the_field(spec: dict[str, Any], field: str) -> None:
    body = pod({"containers": [{"name": "c", "image": "i"}], **spec})
    assert field in (tr.pod_refusal(body, CTX) or "")


def test_baseline_allows_what_restricted_refuses() -> None:
    plain = pod()
    assert tr.pod_refusal(plain, CTX) is None
    restricted = tr.TenantContext(**{**CTX.__dict__, "pod_security": "restricted"})
    assert "allowPrivilegeEscalation" in (tr.pod_refusal(plain, restricted) or "")
    assert (
        tr.pod_refusal(
            pod(
                spec={"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]}
            ),
            CTX,
        )
        is None
    )


def test_service_and_endpoint_refusals() -> None:
    assert "CVE-2020-8554" in (tr.service_refusal({"spec": {"externalIPs": ["1.1.1.1"]}}) or "")
    assert "NodePort" in (tr.service_refusal({"spec": {"type": "NodePort"}}) or "")
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.5"}]}]}
    assert tr.endpoints_refusal(endpoints, {"10.0.0.5"}) is None
    assert "10.0.0.5" in (tr.endpoints_refusal(endpoints, set()) or "")


def test_status_up_hides_the_node_address() -> None:
    status = tr.tenant_pod_status({"status": {"phase": "Running", "hostIP": "172.18.0.2", "qosClass": "Guaranteed"}},
                                  "192.0.2.1")  # fmt: skip
    assert status == {"phase": "Running", "hostIP": "192.0.2.1", "hostIPs": [{"ip": "192.0.2.1"}]}


async def test_fair_queue_serves_tenants_round_robin() -> None:
    queue = FairQueue()
    for i in range(100):
        await queue.put("greedy", i)
    await queue.put("small", "only")
    await queue.put("greedy", 5)  # already waiting: not queued twice
    first_two = [await queue.get(), await queue.get()]
    assert ("small", "only") in first_two
    assert queue.depth("greedy") == 99
