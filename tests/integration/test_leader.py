"""Two operators on the same Tenants: one leads (the Lease), the other waits; no CA, key or
certificate is ever created twice; a killed leader is replaced within the Lease's duration, and
a leader that stops cleanly hands over at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from stockade import leader, naming
from stockade_dev.testbed import LocalControlPlane
from tests.helpers import eventually
from tests.integration.conftest import RunningOperator, service_account_kubeconfig
from tests.integration.test_operator import create_tenant, get_tenant, patch_tenant, tenant_body, wait_observed

pytestmark = pytest.mark.integration
TENANTS = ("pair-a", "pair-b")
CAS = ("pki-ca", "pki-etcd-ca", "pki-front-proxy-ca", "pki-sa")


@pytest.fixture
def operators(super_cluster: LocalControlPlane, super_client: client.ApiClient) -> Iterator[list[RunningOperator]]:
    kubeconfig = service_account_kubeconfig(super_cluster, super_client, "stockade-system", "stockade-operator")
    started: list[RunningOperator] = []
    for log_name in ("operator-1.log", "operator-2.log"):
        started.append(RunningOperator(super_cluster, kubeconfig, log_name))
        if len(started) == 1:  # the first leads before the second starts, so the roles are known
            eventually(lambda: "leading:" in started[0].log(), 30, what="the first operator leading")
    yield started
    for running in started:
        running.kill()


def whole_log(running: RunningOperator) -> str:
    return running.process.log_path.read_text(errors="replace")


def ca_secrets(api: client.ApiClient) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    found = {}
    for tenant in TENANTS:
        for name in CAS:
            secret = core.read_namespaced_secret(name, naming.control_plane_namespace(tenant))
            found[f"{tenant}/{name}"] = (secret.metadata.uid, secret.metadata.resource_version, secret.data)
    return found


def holder(api: client.ApiClient) -> str:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(leader.LEASE, "stockade-system")
    return str(lease.spec.holder_identity or "")


def test_two_operators_never_reconcile_at_once_and_the_standby_takes_over(
    super_client: client.ApiClient, operators: list[RunningOperator]
) -> None:
    first, second = operators
    eventually(lambda: "waiting for the leadership" in second.log(), 30, what="the second operator standing by")
    assert "stockade_leader 1.0" in first.metrics() and "stockade_leader 0.0" in second.metrics()
    assert first.health() == 200 and second.health() == 200  # a waiting replica is live: no probe kills it
    for tenant in TENANTS:
        create_tenant(super_client, tenant_body(tenant))
    for tenant in TENANTS:
        wait_observed(super_client, tenant)
    before = ca_secrets(super_client)
    time.sleep(3 * 3)  # three resync intervals: the standby still does nothing
    assert "pair-a" not in whole_log(second) and "pair-b" not in whole_log(second)
    assert ca_secrets(super_client) == before

    # The leader dies without a word (SIGKILL): the standby waits out the Lease, then leads.
    first.kill()
    killed = time.monotonic()
    eventually(lambda: "leading: took Lease" in second.log(), leader.DURATION + 20, what="the standby taking over")
    took = time.monotonic() - killed
    # Not before the Lease expired: 15 s after the standby last saw it renewed (at most one renewal
    # interval before the kill).
    assert leader.DURATION - leader.RENEW_EVERY - 1 <= took <= leader.DURATION + 20, took
    assert holder(super_client) in whole_log(second)
    # The new leader reconciles (a spec change is observed) and creates no CA again.
    generation = get_tenant(super_client, "pair-a")["metadata"]["generation"]
    patch_tenant(super_client, "pair-a", {"spec": {"admins": {"users": ["alice"]}}})
    eventually(lambda: get_tenant(super_client, "pair-a")["status"].get("observedGeneration") == generation + 1, 60,
               what="the new leader observing the change")  # fmt: skip
    assert ca_secrets(super_client) == before
    for tenant in TENANTS:  # each tenant's PKI was issued once, by one operator, in all
        issued = [line for running in operators for line in whole_log(running).splitlines()
                  if f"tenant {tenant}: issued" in line and "etcd-ca (created)" in line]  # fmt: skip
        assert len(issued) == 1, issued


def test_a_leader_that_stops_cleanly_hands_over_at_once(
    super_client: client.ApiClient, operators: list[RunningOperator]
) -> None:
    first, second = operators
    eventually(lambda: "waiting for the leadership" in second.log(), 30, what="the second operator standing by")
    first.process.stop(grace=10)  # SIGTERM: kopf's cleanup releases the Lease
    stopped = time.monotonic()
    eventually(lambda: "leading: took Lease" in second.log(), leader.DURATION, what="the standby taking over")
    assert time.monotonic() - stopped < leader.DURATION / 2  # without waiting the Lease out
