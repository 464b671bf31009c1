"""The engine's process-wide parts that need no API server."""

from __future__ import annotations

import gc
import weakref

from stockade.syncer.engine import collect_garbage


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_survivors_are_frozen_out_of_sight_and_a_full_round_collects_their_cycles() -> None:
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
        alive = weakref.ref(a)
        collect_garbage(full=False)
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: the collector no longer walks it (the point: no long pauses)
        collect_garbage(full=True)
        assert alive() is None  # the hourly full round unfreezes and frees it
    finally:
        gc.unfreeze()
