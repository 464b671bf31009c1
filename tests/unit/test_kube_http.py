"""`stockade.kube` against a real HTTPS server on loopback (aiohttp, certificates from Stockade's
PKI) that answers as an API server would in its hard cases: a throttled request (429 with
Retry-After), a watch that ends and is resumed from its resourceVersion, a 410 Gone, watch lines
cut into arbitrary chunks, and a server that goes silent."""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from stockade import pki
from stockade.kube import ApiError, Credentials, KubeClient
from stockade.syncer.informer import GoneError, Informer

PODS = "/api/v1/namespaces/ns/pods"


def pod(name: str, version: int, size: int = 10) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version)}, "data": "x" * size}


@dataclass
class FakeApiServer:
    """What the test server does, scripted per test; `seen` records the requests it got."""

    throttle: int = 0  # answer this many requests with 429 first
    list_version: int = 1
    items: list[dict[str, Any]] = field(default_factory=list)
    # Each watch request pops one script: a list of events, "gone" (a 410 event), or "silent".
    watches: list[Any] = field(default_factory=list)
    chunk: int = 5
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, dict(request.query)))
        if self.throttle:
            self.throttle -= 1
            return web.json_response({"kind": "Status", "code": 429}, status=429, headers={"Retry-After": "0"})
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": str(self.list_version)}, "items": self.items})
        script = self.watches.pop(0) if self.watches else "silent"
        response = web.StreamResponse()
        await response.prepare(request)
        if script == "silent":
            await asyncio.sleep(3600)
        elif script == "gone":
            await response.write(json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}).encode())
        else:
            stream = b"".join(json.dumps(event).encode() + b"\n" for event in script)
            for start in range(0, len(stream), self.chunk):  # lines cut anywhere, as TCP may
                await response.write(stream[start : start + self.chunk])
        return response


@pytest.fixture
def tls(tmp_path: Path) -> tuple[bytes, ssl.SSLContext]:
    ca = pki.create_ca("test-ca")
    leaf = pki.issue_certificate(ca, pki.CertificateRequest("127.0.0.1", server=True, ip_addresses=("127.0.0.1",)))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.NamedTemporaryFile("wb", dir=tmp_path, suffix=".pem") as handle:
        handle.write(leaf.cert_pem + b"\n" + leaf.key_pem)
        handle.flush()
        context.load_cert_chain(handle.name)
    return ca.cert_pem, context


@pytest.fixture
async def serve(tls: tuple[bytes, ssl.SSLContext]) -> AsyncIterator[Callable[[FakeApiServer], Any]]:
    runners: list[web.AppRunner] = []

    async def start(fake: FakeApiServer) -> KubeClient:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls[1])
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return KubeClient(Credentials(server=f"https://127.0.0.1:{port}", ca_pem=tls[0], token="t"), timeout=5)

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_throttled_request_waits_as_told_and_then_succeeds(serve: Any) -> None:
    fake = FakeApiServer(throttle=2, items=[pod("a", 1)])
    async with await serve(fake) as kube:
        items = await kube.list("v1", "Pod", "ns")
    assert [i["metadata"]["name"] for i in items] == ["a"]
    assert len(fake.seen) == 3  # two 429s, then the answer


async def test_throttling_that_never_ends_is_an_error_not_a_hang(serve: Any) -> None:
    fake = FakeApiServer(throttle=100)
    async with await serve(fake) as kube:
        with pytest.raises(ApiError) as raised:
            await kube.list("v1", "Pod", "ns")
    assert raised.value.status == 429 and len(fake.seen) == 6  # bounded retries


async def test_a_watch_is_resumed_from_its_version_and_a_gone_one_lists_again(serve: Any) -> None:
    big = pod("big", 3, size=300_000)  # over aiohttp's 128 KiB line limit, cut into 5-byte chunks
    fake = FakeApiServer(
        items=[pod("a", 1)],
        watches=[
            [{"type": "ADDED", "object": pod("b", 2)},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}}],
            [{"type": "ADDED", "object": big}],  # the resumed watch
            "gone",
            [{"type": "DELETED", "object": pod("a", 5)}],  # after the relist
        ],
        chunk=7,
    )  # fmt: skip
    changes: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}

    def changed(event: str, key: tuple[str, str], obj: dict[str, Any]) -> None:
        changes.append((event, key[1]))
        sizes[key[1]] = len(obj.get("data", ""))

    async with await serve(fake) as kube:
        informer = Informer(kube, "v1", "Pod", tenant="t", side="tenant", namespace="ns", on_change=changed)
        task = asyncio.create_task(informer.run())
        try:
            for _ in range(500):
                if ("DELETED", "a") in changes:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # After the 410 the list is the truth: what it no longer has is deleted (b, big), what it has
    # unchanged (a, version 1) is not reported again.
    assert changes[:3] == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "big")]
    assert set(changes[3:5]) == {("DELETED", "b"), ("DELETED", "big")} and changes[5:] == [("DELETED", "a")]
    watch_versions = [query["resourceVersion"] for method, query in fake.seen if query.get("watch") == "true"]
    # Resumed from the bookmark, then from the last event; after the 410, from the relist; then on.
    assert watch_versions[:4] == ["1", "3", "3", "1"]
    lists = [query for method, query in fake.seen if query.get("watch") != "true"]
    assert len(lists) == 2  # the first list, and one after 410 Gone
    assert sizes["big"] == 300_000  # the long line came through whole


async def test_a_watch_line_reports_gone_as_its_own_error(serve: Any) -> None:
    fake = FakeApiServer(watches=["gone"])
    async with await serve(fake) as kube:
        informer = Informer(kube, "v1", "Pod", tenant="t", side="tenant", namespace="ns", on_change=lambda *a: None)
        await informer._relist()
        with pytest.raises(GoneError):
            await informer._watch()


async def test_a_silent_server_times_out_instead_of_hanging(serve: Any) -> None:
    fake = FakeApiServer(watches=["silent"])
    async with await serve(fake) as kube:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async for _ in kube.watch("v1", "Pod", "ns", resource_version="1", read_timeout=0.5):
                pass
        assert time.monotonic() - started < 5


async def test_an_informer_caches_its_own_writes_but_never_an_older_version_or_a_watched_deletion(serve: Any) -> None:
    fake = FakeApiServer(
        items=[pod("kept", 4)],
        watches=[
            [{"type": "DELETED", "object": pod("deleted", 6)}],
            [{"type": "ADDED", "object": pod("created", 7)},  # the echo of our create
             {"type": "MODIFIED", "object": pod("created", 9)}],  # someone else's change
        ],
    )  # fmt: skip
    changes: list[tuple[str, str, str]] = []

    def changed(event: str, key: tuple[str, str], obj: dict[str, Any]) -> None:
        changes.append((event, key[1], version(obj)))

    async with await serve(fake) as kube:
        informer = Informer(kube, "v1", "Pod", tenant="t", side="super", namespace="ns", on_change=changed)
        await informer._relist()
        await informer._watch()
        informer.wrote(pod("created", 7))  # a create's answer: cached before its watch event comes
        assert informer.get(("ns", "created")) == pod("created", 7)
        informer.wrote(pod("kept", 3))  # an older version than the cache's: ignored
        informer.wrote(pod("deleted", 5))  # its deletion was watched already: no ghost
        assert version(informer.get(("ns", "kept"))) == "4" and informer.get(("ns", "deleted")) is None
        informer.wrote(pod("kept", 8))  # positive control: a newer version replaces the cached one
        assert version(informer.get(("ns", "kept"))) == "8"
        await informer._watch()
    # The echo of the write queues nothing; the next change does, and is cached.
    assert changes == [("ADDED", "kept", "4"), ("DELETED", "deleted", "6"), ("MODIFIED", "created", "9")]
    assert version(informer.get(("ns", "created"))) == "9"


def version(obj: dict[str, Any] | None) -> str:
    return str((obj or {}).get("metadata", {}).get("resourceVersion"))
