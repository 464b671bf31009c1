"""Prometheus metrics of the syncer, per tenant (served by the operator on $STOCKADE_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SYNCED = Counter(
    "stockade_syncer_objects_synced_total", "Objects written to a cluster", ["tenant", "kind", "direction"]
)
REFUSED = Counter("stockade_syncer_refusals_total", "Tenant objects refused", ["tenant", "kind"])
EVENTS_DROPPED = Counter(
    "stockade_syncer_events_dropped_total", "Super Events not forwarded: over a pod's spam budget", ["tenant"]
)
ERRORS = Counter("stockade_syncer_errors_total", "Failed sync attempts", ["tenant", "kind"])
WATCH_RESTARTS = Counter("stockade_syncer_watch_restarts_total", "Watches re-established", ["tenant", "kind", "cause"])
QUEUE_DEPTH = Gauge("stockade_syncer_queue_depth", "Keys waiting in the tenant's queue", ["tenant"])
SYNC_SECONDS = Histogram(
    "stockade_syncer_sync_seconds",
    "Time to handle one key",
    ["tenant", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
