"""The operator's configuration and the tenant Service ranges it implies."""

from __future__ import annotations

import pytest

from stockade import naming
from stockade.config import OperatorConfig


def test_every_tenant_gets_a_block_of_the_pool_with_fixed_addresses() -> None:
    blocks = naming.service_ranges("10.112.0.0/12", 22)
    assert len(blocks) == 1024 and blocks[:2] == ["10.112.0.0/22", "10.112.4.0/22"]
    assert naming.service_range_of("10.112.5.17", 22) == "10.112.4.0/22"
    assert naming.service_cidr_first_ip("10.112.4.0/22") == "10.112.4.1"
    assert naming.dns_service_ip("10.112.4.0/22") == "10.112.4.10"


def test_bad_service_pool_settings_are_refused_naming_the_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig().service_pool == "10.112.0.0/12"  # positive control: the defaults hold
    with pytest.raises(ValueError, match=r"STOCKADE_TENANT_SERVICE_POOL: '10.112.0.1/12' is not a network"):
        OperatorConfig(service_pool="10.112.0.1/12")
    with pytest.raises(ValueError, match=r"STOCKADE_TENANT_SERVICE_PREFIX: 12 must be longer than the pool's /12"):
        OperatorConfig(service_prefix=12)
    with pytest.raises(ValueError, match=r"STOCKADE_TENANT_SERVICE_PREFIX: 30 .* at most /28"):
        OperatorConfig(service_prefix=30)
    monkeypatch.setenv("STOCKADE_TENANT_SERVICE_PREFIX", "/22")
    with pytest.raises(ValueError, match=r"STOCKADE_TENANT_SERVICE_PREFIX: '/22' is not a prefix length"):
        OperatorConfig.from_env()
    monkeypatch.setenv("STOCKADE_TENANT_SERVICE_PREFIX", "24")
    assert OperatorConfig.from_env().service_prefix == 24
