"""When the operator runs a Tenant's syncer."""

from __future__ import annotations

from stockade.handlers import syncing


def test_the_syncer_runs_through_a_readiness_flap_and_stops_when_suspended() -> None:
    not_ready = {"version": "v1.34.4", "conditions": [{"type": "Ready", "status": "False", "reason": "Degraded"}]}
    assert syncing(spec={}, status=not_ready)  # one slow /readyz does not stop it
    assert syncing(spec={"suspended": False}, status={"version": "v1.34.4"})
    assert not syncing(spec={"suspended": True}, status=not_ready)
    assert not syncing(spec={}, status={})  # never answered yet: nothing to sync with
