"""The fair queue."""

from __future__ import annotations

from stockade.syncer.queue import FairQueue


async def test_fair_queue_serves_tenants_round_robin() -> None:
    queue = FairQueue()
    for i in range(100):
        await queue.put("greedy", i)
    await queue.put("small", "only")
    await queue.put("greedy", 5)  # already waiting: not queued twice
    first_two = [await queue.get(), await queue.get()]
    assert ("small", "only") in first_two
    assert queue.depth("greedy") == 99
