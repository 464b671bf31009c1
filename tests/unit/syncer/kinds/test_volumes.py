"""PersistentVolumeClaims, and the tenant's record of a bound claim's volume."""

from __future__ import annotations

from stockade import naming
from stockade.syncer.kinds import volumes
from tests.unit.syncer.helpers import tenant_context

CTX = tenant_context()
CLAIM = {
    "metadata": {"name": "data", "namespace": "ns", "uid": "u1",
                 "annotations": {"volume.kubernetes.io/selected-node": "n"}},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv-9",
             "selector": {"matchLabels": {"a": "b"}}, "storageClassName": "fast"},
}  # fmt: skip


def test_a_claim_keeps_only_what_a_provisioner_needs() -> None:
    out = volumes.translate_pvc(CLAIM, CTX)
    assert set(out["spec"]) == {"accessModes", "resources", "storageClassName"}  # no volumeName, no selector
    assert out["metadata"]["namespace"] == naming.workloads_namespace("t")
    assert "volume.kubernetes.io/selected-node" not in out["metadata"]["annotations"]


def test_the_tenant_volume_is_a_record_pre_bound_to_its_claim() -> None:
    bound = {"metadata": {"name": "data-ns-0123456789"}, "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}}}
    volume = volumes.tenant_volume(CLAIM, bound)
    assert volume["metadata"]["name"] == volumes.tenant_volume_name("ns", "data")
    assert volume["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                                          "name": "data", "uid": "u1"}  # fmt: skip
    assert volume["spec"]["capacity"] == {"storage": "2Gi"}  # what the super cluster gave, not what was asked
    assert volume["spec"]["csi"]["driver"] == volumes.VOLUME_DRIVER  # no tenant node mounts it
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
