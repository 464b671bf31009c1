"""ConfigMaps and Secrets, and the byte budget."""

from __future__ import annotations

from stockade.syncer import context
from stockade.syncer.kinds import config


def test_config_bytes_and_quantities() -> None:
    assert (
        context.parse_bytes("16Mi") == 16 * 2**20
        and context.parse_bytes("1k") == 1000
        and context.parse_bytes("5") == 5
    )
    assert config.config_bytes({"data": {"a": "xyz"}, "binaryData": {"b": "QUJD"}}) == 1 + 3 + 1 + 4
