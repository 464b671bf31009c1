"""A Tenant provisioned by the previous release (a workload per control-plane component) is
migrated in place to one pod per replica by this one: its data and its running workloads survive.

The previous release is taken from this repository's history (`git archive`), and runs as a
one-tenant operator (`legacy_operator.py`) while this session's operator is paused, so no other
Tenant is touched by it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import naming
from stockade.syncer import translate as tr
from stockade_dev.testbed import ManagedProcess
from stockade_dev.testbed.kubectl import Kubectl
from stockade_dev.testbed.pytest_plugin import SESSION_OWNER
from tests.e2e.conftest import NETGATE_IMAGE, REPO, RUNTIME_CLASS, Operator, Tenant, create_tenant
from tests.e2e.workloads import APP_NAMESPACE, apply, pods, running, web_deployment
from tests.helpers import LEGACY_DEPLOYMENTS, eventually

# The last commit of the per-component layout (a StatefulSet for etcd, a Deployment for each of
# kube-apiserver, kube-controller-manager and kube-scheduler).
LEGACY_COMMIT = "ecd9ea96120a881bba0d74e4385564de08f895c7"
NAME = "elder"
SUPER_WEB = f"{tr.carried_label('app')}=web"


@pytest.fixture(scope="module")
def legacy_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That release's files (`operator/`: its package and templates; `manifests/`), from git."""
    folder = tmp_path_factory.mktemp("legacy")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", LEGACY_COMMIT, "operator",
                              "manifests"], check=True, capture_output=True, timeout=60).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def install_rbac(super_kubectl: Kubectl, release: Path) -> None:
    """The operator's ClusterRole of a release (the verbs differ between layouts)."""
    super_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(release / "manifests" / "rbac.yaml"))


@pytest.fixture(scope="module")
def elder(stockade: Operator, super_kubectl: Kubectl, legacy_release: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Tenant, ManagedProcess]]:  # fmt: skip
    folder = tmp_path_factory.mktemp("elder")
    legacy = ManagedProcess(
        "stockade-legacy-operator",
        [sys.executable, str(Path(__file__).with_name("legacy_operator.py")), NAME, "900"],
        folder / "legacy-operator.log", SESSION_OWNER,
        env={"PYTHONPATH": str(legacy_release / "operator"), "KUBECONFIG": str(stockade.kubeconfig),
             "STOCKADE_RUNTIME_CLASS": RUNTIME_CLASS, "STOCKADE_NETGATE_IMAGE": NETGATE_IMAGE,
             "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    stockade.stop()  # this release's operator must not see the Tenant before the migration
    install_rbac(super_kubectl, legacy_release)
    legacy.start()
    tenant = create_tenant(super_kubectl, folder, NAME, {"controlPlane": {"service": {"type": "NodePort"}}})
    try:
        yield tenant, legacy
    finally:
        legacy.stop()
        install_rbac(super_kubectl, REPO)
        if not stockade.running():
            stockade.start()
        super_kubectl("delete", "tenant", NAME, "--ignore-not-found", "--wait=false")


def layout(super_kubectl: Kubectl, tenant: Tenant) -> dict[str, list[str]]:
    """The control-plane workloads by kind, each Running control-plane pod's containers, and the
    phase and conditions of the pods that are not Running (what a failed wait shows)."""
    namespace = tenant.control_plane_namespace
    found = {kind: [o["metadata"]["name"] for o in super_kubectl.json("get", kind, "-n", namespace)["items"]]
             for kind in ("deployments", "statefulsets")}  # fmt: skip
    every = pods(super_kubectl, namespace)
    for item in running(every):
        spec = item["spec"]
        found[item["metadata"]["name"]] = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
    found["not running"] = [
        f"{p['metadata']['name']}: {p['status'].get('phase')} "
        + "; ".join(f"{c['type']}={c['status']} {c.get('message', '')}" for c in p["status"].get("conditions", []))
        for p in every
        if p["status"].get("phase") != "Running"
    ]
    return found


def test_a_tenant_of_the_previous_release_migrates_in_place_keeping_data_and_workloads(
    elder: tuple[Tenant, ManagedProcess], stockade: Operator, super_kubectl: Kubectl
) -> None:
    tenant, legacy = elder

    # The previous release provisions it, in its own layout, and runs a workload.
    def legacy_ready() -> bool:
        if not legacy.running():
            pytest.fail(f"the legacy operator exited:\n{legacy.log_tail(40)}")
        return tenant.condition("Ready").get("status") == "True"

    eventually(legacy_ready, timeout=420, interval=2, what="the legacy Tenant Ready")
    before = layout(super_kubectl, tenant)
    assert sorted(before["deployments"]) == sorted(LEGACY_DEPLOYMENTS), (before, legacy.log_tail(40))
    assert before["etcd-0"] == ["etcd"]
    tenant.fetch_kubeconfig()
    tenant.kubectl("create", "namespace", APP_NAMESPACE)
    tenant.kubectl("create", "configmap", "keep", "-n", APP_NAMESPACE, "--from-literal=written=before")
    apply(tenant.kubectl, web_deployment(1))
    tenant_pod = eventually(lambda: running(pods(tenant.kubectl, APP_NAMESPACE, "app=web"))[0], timeout=240,
                            interval=2, what="the tenant pod Running under the previous release")  # fmt: skip
    super_pod = running(pods(super_kubectl, tenant.workloads_namespace, SUPER_WEB))[0]
    config_map = tenant.kubectl.json("get", "configmap", "keep", "-n", APP_NAMESPACE)

    # This release takes over, installed as an upgrade would: its RBAC, then its operator.
    legacy.stop()
    install_rbac(super_kubectl, REPO)
    stockade.start()

    def migrated_layout() -> dict[str, list[str]]:
        found = layout(super_kubectl, tenant)
        assert found["deployments"] == [], found  # no DNS: it keeps its old range
        assert found.get("etcd-0") == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"], found
        return found

    migrated = eventually(migrated_layout, timeout=300, interval=2, what="one pod per replica, the Deployments gone")
    assert migrated["statefulsets"] == [naming.CONTROL_PLANE]
    eventually(lambda: tenant.condition("ControlPlaneReady").get("message", "").startswith("1 control-plane"),
               timeout=300, interval=2, what="this release reports the control plane Ready")  # fmt: skip
    tenant.wait_ready()

    # The tenant's data: same objects (same uids), same contents.
    kept = eventually(lambda: tenant.kubectl.json("get", "configmap", "keep", "-n", APP_NAMESPACE), timeout=120,
                      what="the tenant API answers after the migration")  # fmt: skip
    assert (kept["metadata"]["uid"], kept["data"]) == (config_map["metadata"]["uid"], {"written": "before"})
    # The workload never stopped: the same tenant pod, backed by the same super pod, still Running.
    after = eventually(lambda: running(pods(tenant.kubectl, APP_NAMESPACE, "app=web")), timeout=120)
    assert [p["metadata"]["uid"] for p in after] == [tenant_pod["metadata"]["uid"]]
    assert [p["metadata"]["uid"] for p in running(pods(super_kubectl, tenant.workloads_namespace, SUPER_WEB))] == [
        super_pod["metadata"]["uid"]
    ]
    # And it is a working cluster: a new workload runs.
    tenant.kubectl("scale", "deployment", "web", "-n", APP_NAMESPACE, "--replicas=2")
    eventually(lambda: len(running(pods(tenant.kubectl, APP_NAMESPACE, "app=web"))) == 2, timeout=240, interval=2,
               what="a second tenant pod Running after the migration")  # fmt: skip
