"""The syncer's health reaches the Tenant even when writing it fails."""

from __future__ import annotations

import asyncio

from stockade.syncer.runner import HEALTHY_MESSAGE, HealthReporter


async def test_a_failed_report_is_retried_with_the_latest_state_and_forwarding_goes_on() -> None:
    written: list[tuple[bool, str]] = []
    failures = 2

    async def report(ok: bool, message: str) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("super API server away")
        written.append((ok, message))

    reporter = HealthReporter(report, first_retry=0.01, max_retry=0.02)
    task = asyncio.create_task(reporter.run())
    try:
        reporter.put(False, "tenant API server unreachable")
        await asyncio.sleep(0.005)
        reporter.put(True, "")  # arrives while the first write is failing: only the latest is written
        for _ in range(200):
            if written:
                break
            await asyncio.sleep(0.01)
        assert written == [(True, HEALTHY_MESSAGE)]
        reporter.put(False, "flap")  # the forwarder is still alive after its failures
        for _ in range(200):
            if len(written) == 2:
                break
            await asyncio.sleep(0.01)
        assert written == [(True, HEALTHY_MESSAGE), (False, "flap")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
