from __future__ import annotations

import time

from prometheus_client import REGISTRY

from stockade import metrics
from stockade.model import Condition, Phase, TenantStatus
from tests.helpers import http_get


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_tenants_series_follow_its_status_and_go_with_it() -> None:
    ready = Condition(type="Ready", status="False", reason="Starting", last_transition_time="2026-01-01T00:00:00Z")
    status = TenantStatus(phase=Phase.PROVISIONING, conditions=[ready], certificates_not_after="2099-01-01T00:00:00Z")
    metrics.observe_status("m-1", status)
    assert sample("stockade_tenant_phase", tenant="m-1", phase="Provisioning") == 1
    assert sample("stockade_tenant_phase", tenant="m-1", phase="Ready") == 0
    assert sample("stockade_tenant_condition", tenant="m-1", type="Ready", status="False") == 1
    assert sample("stockade_tenant_condition", tenant="m-1", type="Ready", status="True") == 0
    assert (sample("stockade_certificate_expiry_seconds", tenant="m-1") or 0) > 60 * 365 * 86400
    metrics.observe_status("m-2", status)
    metrics.forget("m-1")
    assert sample("stockade_tenant_phase", tenant="m-1", phase="Provisioning") is None
    assert sample("stockade_tenant_phase", tenant="m-2", phase="Provisioning") == 1  # others stay


def test_a_pass_is_timed_by_its_result() -> None:
    before = sample("stockade_reconcile_seconds_count", result="stalled") or 0
    with metrics.timed_pass() as timing:
        timing["result"] = "stalled"
    assert sample("stockade_reconcile_seconds_count", result="stalled") == before + 1
    failed = sample("stockade_reconcile_seconds_count", result="failed") or 0
    try:
        with metrics.timed_pass():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert sample("stockade_reconcile_seconds_count", result="failed") == failed + 1


def test_the_liveness_endpoint_fails_once_the_event_loop_stops_beating() -> None:
    beat = {"at": time.monotonic()}
    server = metrics.serve(0, lambda: beat["at"], host="127.0.0.1")
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> tuple[int, str]:
        return http_get(url + path, timeout=5)

    try:
        assert get("/healthz")[0] == 200  # beating
        code, text = get("/metrics")
        assert code == 200 and "stockade_leader" in text
        beat["at"] = time.monotonic() - metrics.STALE_AFTER - 1
        code, text = get("/healthz")
        assert code == 503 and text.startswith("stuck"), text
        assert get("/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
