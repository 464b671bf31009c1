"""Leader election over a Lease (coordination.k8s.io/v1): two operators never reconcile at once.

Every operator replica takes part; only the holder of the Lease `stockade-operator` in the
operator's namespace runs handlers. The others wait in kopf's start-up (kopf starts no watch, timer
or daemon before its start-up handlers finish). The holder renews the Lease every RENEW_EVERY
seconds; if it has not renewed for RENEW_DEADLINE, it gives up and its process exits, so a
partitioned leader stops writing before a standby takes over. A standby takes over a Lease whose
record has not changed for DURATION seconds *by its own clock* (as client-go does): no two machines'
clocks are ever compared. A leader that stops cleanly releases the Lease, so a standby takes over
at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade.kube import ApiError, KubeClient

log = logging.getLogger("stockade.leader")

LEASE = "stockade-operator"
DURATION = 15.0
RENEW_DEADLINE = 10.0  # < DURATION: the leader has given up before any standby may take over
RENEW_EVERY = 3.0
RETRY_EVERY = 2.0


class LostLeadershipError(Exception):
    pass


def identity() -> str:
    """This process: host name (the pod's name in a cluster), pid and a random suffix."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def micro_time(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    """What changes each time a holder acquires or renews the Lease."""
    spec = lease.get("spec") or {}
    return spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions")


@dataclass(frozen=True)
class Sighting:
    """A Lease record, and when (this process's monotonic clock) it was first seen as it is."""

    record: tuple[Any, ...]
    since: float


def free(lease: Mapping[str, Any], sighting: Sighting | None, now: float, me: str, duration: float) -> bool:
    """Whether `me` may take `lease` now: it is ours, released, or unchanged for `duration` seconds
    since we first saw it so (pure)."""
    holder = (lease.get("spec") or {}).get("holderIdentity")
    if not holder or holder == me:
        return True
    return sighting is not None and sighting.record == record(lease) and now - sighting.since >= duration


def held_by(lease: Mapping[str, Any], me: str, transitions: int, duration: float) -> dict[str, Any]:
    """The Lease's spec once `me` holds (or renews) it."""
    stamp = micro_time()
    spec = dict(lease.get("spec") or {})
    if spec.get("holderIdentity") != me:
        spec.update(acquireTime=stamp, leaseTransitions=transitions)
    spec.update(holderIdentity=me, leaseDurationSeconds=int(duration), renewTime=stamp)
    return spec


class LeaderElector:
    def __init__(self, kube: KubeClient, namespace: str, me: str | None = None, duration: float = DURATION):
        self.kube = kube
        self.namespace = namespace
        self.me = me or identity()
        self.duration = duration
        # When the election loop last went round (leading or waiting), by the monotonic clock:
        # the liveness endpoint (metrics.serve) reads it from its own thread to see that the
        # event loop is not stuck.
        self.heartbeat = time.monotonic()

    async def acquire(self) -> None:
        """Return once this process holds the Lease (waiting as long as another holds it)."""
        sighting: Sighting | None = None
        told = None
        while True:
            self.heartbeat = time.monotonic()
            lease = await self.kube.get_or_none("coordination.k8s.io/v1", "Lease", LEASE, self.namespace)
            if lease is None:
                if await self._create():
                    return
                continue
            now = time.monotonic()
            if sighting is None or sighting.record != record(lease):
                sighting = Sighting(record(lease), now)
            if free(lease, sighting, now, self.me, self.duration) and await self._take(lease):
                return
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if holder != told:
                log.info("waiting for the leadership: Lease %s/%s is held by %s", self.namespace, LEASE, holder)
                told = holder
            await asyncio.sleep(RETRY_EVERY)

    async def keep(self) -> None:
        """Renew the Lease until cancelled; raise LostLeadershipError once it could not be renewed
        for RENEW_DEADLINE seconds, or another process holds it."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(RENEW_EVERY)
            self.heartbeat = time.monotonic()
            try:
                current = await self.kube.get("coordination.k8s.io/v1", "Lease", LEASE, self.namespace)
                holder = (current.get("spec") or {}).get("holderIdentity")
                if holder != self.me:
                    raise LostLeadershipError(f"Lease {self.namespace}/{LEASE} is now held by {holder}")
                if await self._take(current):
                    renewed = time.monotonic()
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("cannot renew Lease %s/%s: %s", self.namespace, LEASE, error)
            if time.monotonic() - renewed > RENEW_DEADLINE:
                raise LostLeadershipError(f"Lease {self.namespace}/{LEASE} not renewed for {RENEW_DEADLINE:.0f} s")

    async def release(self) -> None:
        """Give the Lease up (a clean stop), so a standby need not wait for it to expire."""
        lease = await self.kube.get_or_none("coordination.k8s.io/v1", "Lease", LEASE, self.namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
            return
        patch = {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": {"holderIdentity": None},
        }
        try:
            await self.kube.patch_merge("coordination.k8s.io/v1", "Lease", LEASE, patch, self.namespace)
        except ApiError as error:
            log.warning("cannot release Lease %s/%s: %s", self.namespace, LEASE, error)

    async def _create(self) -> bool:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": self.namespace},
            "spec": held_by({}, self.me, 0, self.duration),
        }
        try:
            await self.kube.create(lease)
        except ApiError as error:
            if error.status == 409:  # another process created it first
                return False
            raise
        log.info("leading: created Lease %s/%s as %s", self.namespace, LEASE, self.me)
        return True

    async def _take(self, lease: Mapping[str, Any]) -> bool:
        """Acquire or renew `lease`, only over the version read (False if someone wrote meanwhile)."""
        spec = lease.get("spec") or {}
        ours = spec.get("holderIdentity") == self.me
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        patch = {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": held_by(lease, self.me, transitions, self.duration),
        }
        try:
            await self.kube.patch_merge("coordination.k8s.io/v1", "Lease", LEASE, patch, self.namespace)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        if not ours:
            log.info(
                "leading: took Lease %s/%s as %s (from %s)", self.namespace, LEASE, self.me, spec.get("holderIdentity")
            )
        return True
