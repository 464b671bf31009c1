"""Prometheus metrics of the operator (served with the syncer's, stockade.syncer.metrics, on
$STOCKADE_METRICS_PORT; in a cluster, through the Service stockade-system/stockade-operator-metrics).

Per-Tenant series follow kube-state-metrics' style: one series per possible value, 1 for the
current one (`sum by (phase) (stockade_tenant_phase)` counts Tenants by phase)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from stockade.model import Phase, TenantStatus

RECONCILE_SECONDS = Histogram(
    "stockade_reconcile_seconds",
    "Duration of one pass over a Tenant, by result (ok, stalled, failed)",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILE_ERRORS = Counter(
    "stockade_reconcile_errors_total", "Passes that ended with Ready=False for an error, by reason", ["reason"]
)
TENANT_PHASE = Gauge("stockade_tenant_phase", "1 for the Tenant's current phase, 0 for the others", ["tenant", "phase"])
TENANT_CONDITION = Gauge(
    "stockade_tenant_condition", "1 for each condition's current status, 0 for the others", ["tenant", "type", "status"]
)
CERTIFICATE_EXPIRY = Gauge(
    "stockade_certificate_expiry_seconds", "Seconds until the Tenant's earliest certificate expires", ["tenant"]
)
LEADER = Gauge("stockade_leader", "1 while this operator process holds the leader Lease")

STATUSES = ("True", "False", "Unknown")


@contextmanager
def timed_pass() -> Iterator[dict[str, str]]:
    """Times the `with` block as one pass; the block sets `result["result"]` (default: failed)."""
    result = {"result": "failed"}
    started = time.monotonic()
    try:
        yield result
    finally:
        RECONCILE_SECONDS.labels(result["result"]).observe(time.monotonic() - started)


def observe_status(tenant: str, status: TenantStatus) -> None:
    """Set the Tenant's series from the status just written."""
    for phase in Phase:
        TENANT_PHASE.labels(tenant, phase.value).set(1 if status.phase == phase else 0)
    for condition in status.conditions:
        for value in STATUSES:
            TENANT_CONDITION.labels(tenant, condition.type, value).set(1 if condition.status == value else 0)
    if status.certificates_not_after:
        expiry = datetime.datetime.strptime(status.certificates_not_after, "%Y-%m-%dT%H:%M:%SZ")
        remaining = expiry.replace(tzinfo=datetime.UTC) - datetime.datetime.now(datetime.UTC)
        CERTIFICATE_EXPIRY.labels(tenant).set(remaining.total_seconds())


def forget(tenant: str) -> None:
    """Drop a deleted Tenant's series."""
    for gauge in (TENANT_PHASE, TENANT_CONDITION, CERTIFICATE_EXPIRY):
        gauge.remove_by_labels({"tenant": tenant})
