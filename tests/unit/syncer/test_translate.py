"""Names across the wall: super names, carried metadata, scrubbed messages."""

from __future__ import annotations

from stockade import naming
from stockade.syncer import translate as tr
from stockade.syncer.kinds import pod_spec, volumes
from tests.unit.syncer.helpers import CTX, pod


def test_super_names_are_short_unique_and_stable() -> None:
    assert tr.super_name("ns", "p") == tr.super_name("ns", "p")
    assert tr.super_name("a-x", "b") != tr.super_name("a", "x-b")
    long = tr.super_name("n" * 63, "p" * 253)
    assert len(long) <= 63 and long[0].isalpha()
    assert tr.super_name("ns", "9lives")[0].isalpha()


def test_tenant_metadata_never_reaches_the_super_cluster_verbatim() -> None:
    hostile = {
        "io.katacontainers.config.hypervisor.kernel_params": "init=/bin/sh",
        "azure.workload.identity/use": "true",
        "pv.kubernetes.io/bind-completed": "yes",
        "iam.gke.io/gcp-service-account": "admin@project",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    out = pod_spec.translate_pod(pod(labels={"azure.workload.identity/use": "true"}, annotations=hostile), CTX, None)
    meta = out["metadata"]
    assert not set(hostile) & set(meta["annotations"]) and "azure.workload.identity/use" not in meta["labels"]
    # Positive control: each is still carried, inert, under Stockade's own key (downward API reads it).
    assert meta["annotations"][tr.carried_annotation("azure.workload.identity/use")] == "true"
    assert tr.carried_annotation("kubectl.kubernetes.io/last-applied-configuration") not in meta["annotations"]
    assert all(
        k.startswith("stockade.dev/") or k.startswith(naming.CARRIED_ANNOTATION_PREFIX) for k in meta["annotations"]
    )
    claim = {"metadata": {"name": "c", "namespace": "ns", "uid": "u", "annotations": hostile}, "spec": {}}
    assert "pv.kubernetes.io/bind-completed" not in volumes.translate_pvc(claim, CTX)["metadata"]["annotations"]


def test_carried_keys_are_valid_and_distinct() -> None:
    keys = ["app", "a.io/x", "b.io/x", "x" * 63, "example.com/" + "y" * 63, "weird.io/-_."]
    carried = {tr.carried_label(k) for k in keys}
    assert len(carried) == len(keys)
    for key in carried:
        prefix, name = key.split("/")
        assert prefix == "label.stockade.dev" and 1 <= len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()


def test_super_messages_are_scrubbed_for_the_tenant() -> None:
    web = tr.super_name("shop", "web")
    text = (
        f"Successfully assigned stockade-t-workloads/{web} to node-7 at 172.18.0.2; "
        f'MountVolume.SetUp failed for volume "x" : open /var/lib/kubelet/pods/123/volumes/x: no such file; '
        "ValidatingAdmissionPolicy 'stockade-sandboxed-pods' with binding 'b' denied request: hostPort forbidden; "
        f"other {tr.super_name('other', 'secret')}"
    )
    hidden = {"stockade-t-workloads": "shop", "node-7": "stockade-t", "172.18.0.2": "192.0.2.10"}
    out = tr.scrub(text, lambda name: "web" if name == web else None, hidden)
    assert "shop/web to stockade-t at 192.0.2.10" in out and "hostPort forbidden" in out
    for leak in ("stockade-t-workloads", "node-7", "172.18.0.2", "/var/lib/kubelet", "stockade-sandboxed-pods", web):
        assert leak not in out
    assert "<super-object>" in out and "<node-path>" in out
