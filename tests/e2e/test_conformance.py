"""The upstream Kubernetes conformance suite as the judge of "a real cluster": its CI selection
(stockade_dev.conformance.CI_FOCUS) against a tenant and, in the same run, against the super
cluster itself. The full [Conformance] run is `make conformance` (bench/results/conformance.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade_dev import conformance as suite
from stockade_dev.testbed.kubectl import Kubectl
from tests.e2e.conftest import Operator, Tenant, can_inspect_runtime, create_tenant

# Each target's run is bounded; the selection takes about 3 minutes per target here.
MINUTES = 20
# The suite's images are served by the local super cluster's registry.
pytestmark = pytest.mark.skipif(not can_inspect_runtime(), reason="needs the local super cluster (its registry)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="module")
def tenant(stockade: Operator, super_kubectl: Kubectl, folder: Path) -> Iterator[Tenant]:
    tenant = create_tenant(super_kubectl, folder, "conformance", suite.tenant_spec())
    tenant.wait_ready()
    tenant.fetch_kubeconfig()
    yield tenant
    super_kubectl("delete", "tenant", tenant.name, "--ignore-not-found", "--wait=false")


def test_conformance_tests_that_pass_on_the_super_cluster_pass_on_the_tenant(
    tenant: Tenant, super_kubectl: Kubectl, folder: Path
) -> None:
    selected = suite.dry_run(folder, suite.CI_FOCUS)
    assert len(selected) >= 25, selected  # the selection still names tests of this suite version
    suite.push_images()
    targets = {
        target: suite.run_suite(
            target, kubeconfig, folder, focus=suite.CI_FOCUS, skip="", procs=3, timeout_seconds=MINUTES * 60
        )
        for target, kubeconfig in (("tenant", tenant.kubeconfig), ("super", super_kubectl.kubeconfig))
    }
    comparison = suite.compare(targets)
    print(json.dumps({"counts": {t: r["counts"] for t, r in targets.items()}, **comparison}, indent=2))
    # Positive control: the suite, its images and the local cluster work, as the baseline shows.
    assert set(targets["super"]["passed_tests"]) == set(selected), targets["super"]["failures"]
    # The judgement: whatever passes on the super cluster passes on the tenant, or has a known cause.
    assert not comparison["not_run_on_tenant"], comparison  # the selection runs whole, within its bound
    assert not comparison["unexplained"], [
        f for f in targets["tenant"]["failures"] if f["test"] in comparison["unexplained"]
    ]
    # And the tenant passes something of every kind: a run where nothing passes proves nothing.
    assert len(targets["tenant"]["passed_tests"]) >= 10, targets["tenant"]
