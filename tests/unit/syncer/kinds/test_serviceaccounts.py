"""ServiceAccounts."""

from __future__ import annotations

from stockade.syncer.kinds import serviceaccounts
from tests.unit.syncer.helpers import tenant_context

CTX = tenant_context()


def test_a_mirrored_service_account_never_mounts_a_super_cluster_token() -> None:
    account = {"metadata": {"name": "app", "namespace": "ns", "uid": "u"}, "automountServiceAccountToken": True,
               "secrets": [{"name": "x"}], "imagePullSecrets": [{"name": "y"}]}  # fmt: skip
    out = serviceaccounts.translate_service_account(account, CTX)
    assert out["automountServiceAccountToken"] is False
    assert "secrets" not in out and "imagePullSecrets" not in out
