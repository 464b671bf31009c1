"""The fair queue."""

from __future__ import annotations

import asyncio

from stockade.syncer.queue import FairQueue


async def test_fair_queue_serves_tenants_round_robin() -> None:
    queue = FairQueue()
    for i in range(100):
        queue.put("greedy", i)
    queue.put("small", "only")
    queue.put("greedy", 5)  # already waiting: not queued twice
    first_two = [await queue.get(), await queue.get()]
    assert ("small", "only") in first_two
    assert queue.depth("greedy") == 99


async def test_waiting_workers_wake_for_work_put_from_plain_callbacks() -> None:
    queue = FairQueue()
    got: list[tuple[str, object]] = []

    async def worker() -> None:
        got.append(await queue.get())

    workers = [asyncio.create_task(worker()) for _ in range(3)]
    await asyncio.sleep(0.01)  # all three waiting on an empty queue
    loop = asyncio.get_running_loop()
    loop.call_soon(queue.put, "a", 1)  # as a watch callback would: not a coroutine, no task
    loop.call_soon(queue.put, "b", 2)
    await asyncio.sleep(0.05)
    assert sorted(got, key=str) == [("a", 1), ("b", 2)]
    assert sum(not w.done() for w in workers) == 1  # the third keeps waiting for work
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def test_a_key_being_handled_is_not_handed_to_a_second_worker_but_queued_again_once_done() -> None:
    queue = FairQueue()
    queue.put("t", "pod")
    assert await queue.get() == ("t", "pod")  # worker 1 handles it
    queue.put("t", "pod")  # changed meanwhile (e.g. the echo of worker 1's own write)
    queue.put("t", "pod")
    queue.put("t", "other")
    assert await queue.get() == ("t", "other")  # worker 2 gets other work, never "pod" a second time
    assert queue.depth("t") == 0
    queue.done("t", "other")
    queue.done("t", "pod")  # worker 1 is done: "pod" comes back, once
    assert queue.depth("t") == 1
    assert await queue.get() == ("t", "pod")
    queue.done("t", "pod")
    assert queue.depth("t") == 0  # positive control: done without a change queues nothing


async def test_a_forgotten_tenant_leaves_no_busy_keys_behind() -> None:
    queue = FairQueue()
    queue.put("t", "pod")
    await queue.get()
    queue.forget("t")
    queue.put("t", "pod")  # the tenant's syncer started again: its key is not stuck as busy
    assert queue.depth("t") == 1


async def test_the_patrol_waits_while_changes_wait_and_a_changed_key_leaves_the_patrol_lane() -> None:
    queue = FairQueue()
    for i in range(3):
        queue.put("t", f"patrolled-{i}", patrol=True)
    queue.put("t", "patrolled-1")  # it changed meanwhile: promoted, handled with the changes
    queue.put("u", "new-pod")
    got = [await queue.get() for _ in range(4)]
    assert got[:2] == [("t", "patrolled-1"), ("u", "new-pod")]  # changes first, fairly
    assert got[2:] == [("t", "patrolled-0"), ("t", "patrolled-2")]  # then the patrol, once each
    assert queue.depth("t") == 0 and queue.depth("u") == 0
    queue.put("t", "patrolled-0", patrol=True)  # busy (not done): queued again once done
    queue.done("t", "patrolled-0")
    assert await queue.get() == ("t", "patrolled-0")
