"""Every kind the syncer handles, one module each behind one contract (`base.Kind`).

The engine (`stockade.syncer.engine`) knows only this registry: it watches each kind on the sides
the kind asks for, queues keys, and calls `Kind.sync(key)`; `LOOPS` run beside the queue.
A new kind is a new module here and one line below.
"""

from __future__ import annotations

from stockade.syncer.kinds.base import Kind, Sides
from stockade.syncer.kinds.config import ConfigMaps, Secrets
from stockade.syncer.kinds.events import Events
from stockade.syncer.kinds.node import VirtualNode
from stockade.syncer.kinds.pods import Pods
from stockade.syncer.kinds.serviceaccounts import ServiceAccounts
from stockade.syncer.kinds.services import Endpoints, EndpointSlices, Services
from stockade.syncer.kinds.volumes import Volumes

KINDS: tuple[type[Kind], ...] = (
    Pods,
    ConfigMaps,
    Secrets,
    ServiceAccounts,
    Volumes,
    Services,
    Endpoints,
    EndpointSlices,
    Events,
)
LOOPS = (VirtualNode,)

__all__ = ["KINDS", "LOOPS", "Kind", "Sides"]
