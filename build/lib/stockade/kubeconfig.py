"""Kubeconfig documents, built as plain dicts (pure)."""

from __future__ import annotations

import base64
from typing import Any

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build_kubeconfig(
    *,
    cluster: str,
    server: str,
    ca_pem: bytes,
    user: str,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one context, credentials embedded."""
    credentials: dict[str, str] = {}
    if cert_pem is not None and key_pem is not None:
        credentials = {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}
    elif token is not None:
        credentials = {"token": token}
    else:
        raise ValueError("a kubeconfig needs a client certificate and key, or a token")
    context: dict[str, str] = {"cluster": cluster, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
        "preferences": {},
    }


def dump(kubeconfig: dict[str, Any]) -> str:
    return yaml.safe_dump(kubeconfig, sort_keys=False)


def ca_of(kubeconfig: dict[str, Any]) -> bytes:
    """The CA bundle a kubeconfig trusts (of its first cluster)."""
    return base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
