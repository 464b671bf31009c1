"""Conditions and phase of a Tenant (pure).

Conditions have the standard Kubernetes shape and follow kstatus (what Flux, `kubectl wait` and
cli-utils read): `Reconciling=True` while the control plane is not yet what the spec asks (InProgress),
`Stalled=True` when it cannot become so until someone changes the spec or the super cluster
(Failed), `Ready` besides; `observedGeneration` names the generation the conditions describe.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from stockade.model import Condition, Phase

READY = "Ready"
CERTIFICATES_READY = "CertificatesReady"
CONTROL_PLANE_READY = "ControlPlaneReady"
ISOLATION_READY = "IsolationReady"
DNS_READY = "DNSReady"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED, CERTIFICATES_READY, CONTROL_PLANE_READY, ISOLATION_READY, DNS_READY)


def timestamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Check:
    """One observed fact: a condition's value before it gets a transition time."""

    type: str
    ok: bool | None  # None: unknown yet
    reason: str
    message: str = ""
    # A failure no retry mends: the spec, or the super cluster, must change first.
    stalls: bool = False

    @property
    def status(self) -> str:
        return "Unknown" if self.ok is None else ("True" if self.ok else "False")


def merge_conditions(
    previous: list[Condition],
    checks: list[Check],
    generation: int | None,
    now: datetime.datetime | None = None,
) -> list[Condition]:
    """New conditions from `checks`, keeping lastTransitionTime where a status did not change."""
    old = {c.type: c for c in previous}
    merged = []
    for check in checks:
        before = old.get(check.type)
        unchanged = before is not None and before.status == check.status
        merged.append(
            Condition(
                type=check.type,
                status=check.status,
                reason=check.reason,
                message=check.message,
                last_transition_time=before.last_transition_time if unchanged and before else timestamp(now),
                observed_generation=generation,
            )
        )
    return merged


def transitions(previous: list[Condition], current: list[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed (each becomes an Event on the Tenant)."""
    old = {c.type: (c.status, c.reason) for c in previous}
    return [c for c in current if old.get(c.type) != (c.status, c.reason)]


def ready_check(checks: list[Check], suspended: bool) -> Check:
    if suspended:
        return Check(READY, False, "Suspended", "the control plane is scaled to zero; all data is kept")
    failing = [c for c in checks if c.ok is not True]
    if not failing:
        return Check(READY, True, "Ready", "the tenant control plane is ready")
    first = next((c for c in failing if c.stalls), failing[0])
    return Check(
        READY, False if first.ok is False else None, first.reason, f"{first.type}: {first.message}", first.stalls
    )


def progress_checks(ready: Check, suspended: bool) -> list[Check]:
    """kstatus's `Reconciling` and `Stalled`, from `ready` (see `ready_check`)."""
    if ready.stalls:
        return [
            Check(STALLED, True, ready.reason, ready.message),
            Check(RECONCILING, False, "Stalled", "no progress until the spec or the super cluster changes"),
        ]
    not_stalled = Check(STALLED, False, "Progressing", "nothing blocks the reconciliation")
    if suspended:
        return [not_stalled, Check(RECONCILING, False, "Suspended", "the control plane is scaled to zero")]
    if ready.ok is True:
        return [not_stalled, Check(RECONCILING, False, "Reconciled", "the control plane is what the spec asks")]
    return [not_stalled, Check(RECONCILING, True, ready.reason, ready.message)]


def phase(
    *, ready: bool, suspended: bool, deleting: bool, ever_ready: bool, spec_changed: bool, stalled: bool = False
) -> Phase:
    if deleting:
        return Phase.DELETING
    if stalled:
        return Phase.FAILED
    if suspended:
        return Phase.SUSPENDED
    if ready:
        return Phase.READY
    if not ever_ready:
        return Phase.PROVISIONING
    return Phase.UPDATING if spec_changed else Phase.DEGRADED
