from __future__ import annotations

from stockade import leader

HELD = {"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": "a", "renewTime": "t1", "leaseTransitions": 2}}


def test_a_lease_is_free_when_released_ours_or_unchanged_for_its_duration_by_our_clock() -> None:
    released = {"spec": {"holderIdentity": None}}
    assert leader.free(released, None, 0.0, "b", 15)
    assert leader.free(HELD, None, 0.0, "a", 15)  # ours
    # Held by another: only once we have watched it stay unchanged for the whole duration.
    assert not leader.free(HELD, None, 100.0, "b", 15)
    seen = leader.Sighting(leader.record(HELD), since=100.0)
    assert not leader.free(HELD, seen, 114.9, "b", 15)
    assert leader.free(HELD, seen, 115.0, "b", 15)
    # A renewal we have not seen yet (the record differs) is not an expiry.
    renewed = {**HELD, "spec": {**HELD["spec"], "renewTime": "t2"}}
    assert not leader.free(renewed, seen, 200.0, "b", 15)


def test_taking_a_lease_counts_a_transition_and_renewing_does_not() -> None:
    taken = leader.held_by(HELD, "b", 3, 15)
    assert taken["holderIdentity"] == "b" and taken["leaseTransitions"] == 3 and taken["leaseDurationSeconds"] == 15
    assert taken["acquireTime"] == taken["renewTime"]
    ours = {"spec": {**taken, "acquireTime": "2026-01-01T00:00:00.000000Z"}}
    renewed = leader.held_by(ours, "b", 99, 15)
    assert renewed["acquireTime"] == "2026-01-01T00:00:00.000000Z" and renewed["leaseTransitions"] == 3
    assert leader.micro_time().endswith("Z") and "." in leader.micro_time()
