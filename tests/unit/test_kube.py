"""The watch stream's line reader (pure): lines of any length, however the chunks cut them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from stockade.kube import json_lines


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(chunks: AsyncIterator[bytes], limit: int = 2**24) -> list[bytes]:
    return [line async for line in json_lines(chunks, limit)]


@pytest.mark.parametrize("size", [7, 4096, 65536, 10**7])
async def test_lines_of_any_length_come_through_whole(size: int) -> None:
    big = {"type": "ADDED", "object": {"data": {"blob": "x" * 1_000_000}}}
    stream = b"\n".join([b'{"type":"BOOKMARK"}', json.dumps(big).encode(), b"", b'{"type":"DELETED"}']) + b"\n"
    lines = await collect(chunks_of(stream, size))
    assert [json.loads(line)["type"] for line in lines] == ["BOOKMARK", "ADDED", "DELETED"]
    assert len(json.loads(lines[1])["object"]["data"]["blob"]) == 1_000_000


async def test_a_last_line_without_newline_is_kept_and_an_endless_line_refused() -> None:
    assert await collect(chunks_of(b'{"a":1}\n{"b":2}', 3)) == [b'{"a":1}', b'{"b":2}']
    assert await collect(chunks_of(b'{"a":1}\n\n{"b":2}\n', 1)) == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        await collect(chunks_of(b"y" * 1000, 10), limit=100)
