"""Prometheus metrics of the operator (served with the syncer's, stockade.syncer.metrics, on
$STOCKADE_METRICS_PORT; in a cluster, through the Service stockade-system/stockade-operator-metrics),
and its liveness endpoint on the same port.

Per-Tenant series follow kube-state-metrics' style: one series per possible value, 1 for the
current one (`sum by (phase) (stockade_tenant_phase)` counts Tenants by phase)."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
# /healthz fails once the event loop has not gone round for this long (the leader election beats
# every few seconds, leading or waiting): longer than the leader's renewal deadline, so a slow API
# server makes the leader step down before its liveness fails.
STALE_AFTER = 30.0


def serve(port: int, heartbeat: Callable[[], float], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics (Prometheus text format) and /healthz on `port`, from a thread of its own, so
    that a stuck event loop is seen: /healthz answers 503 once `heartbeat()` (a time.monotonic()
    value) is older than STALE_AFTER. A standby is live too: the probe must not kill a replica that
    waits for the Lease (kopf's own liveness endpoint starts only once start-up is over)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                age = time.monotonic() - heartbeat()
                live = age < STALE_AFTER
                text = f"{'ok' if live else 'stuck'}: the event loop last went round {age:.0f} s ago\n"
                self._answer(200 if live else 503, text.encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: /metrics, /healthz\n", "text/plain; charset=utf-8")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes and scrapes every few seconds: not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server


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
