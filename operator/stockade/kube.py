"""A small async Kubernetes client on aiohttp: server-side apply, get, list, delete, watch.

Why not the generated kubernetes_asyncio client: Stockade needs a handful of verbs on a known set
of kinds, against several API servers at once (the super cluster and every tenant). A thin client
keeps server-side apply, timeouts and TLS explicit, shares aiohttp with kopf, and has no
per-kind generated code to keep in step with the server.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from stockade import model
from stockade.naming import FIELD_MANAGER

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_KINDS = [
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "Pod", "pods"),
    Kind("v1", "Event", "events"),
    Kind("v1", "Endpoints", "endpoints"),
    Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("v1", "PersistentVolume", "persistentvolumes", namespaced=False),
    Kind("v1", "ResourceQuota", "resourcequotas"),
    Kind("v1", "LimitRange", "limitranges"),
    Kind("v1", "Node", "nodes", namespaced=False),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Kind("networking.k8s.io/v1", "ServiceCIDR", "servicecidrs", namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind(
        "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", namespaced=False
    ),
    Kind(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        namespaced=False,
    ),
    Kind("apiregistration.k8s.io/v1", "APIService", "apiservices", namespaced=False),
    Kind("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", namespaced=False),
    Kind("coordination.k8s.io/v1", "Lease", "leases"),
    Kind("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", namespaced=False),
    Kind(model.API_VERSION, model.KIND, model.PLURAL, namespaced=False),
    Kind("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False),
]
KINDS: Mapping[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in _KINDS}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}") from None


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str, path: str):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: {status} {message}")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    token_file: Path | None = None
    token: str | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Mapping[str, Any]) -> Credentials:
        context_name = kubeconfig.get("current-context")
        contexts = {c["name"]: c["context"] for c in kubeconfig["contexts"]}
        context = contexts[context_name] if context_name else next(iter(contexts.values()))
        cluster = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in kubeconfig["users"] if u["name"] == context["user"])
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"])
        else:
            ca = Path(cluster["certificate-authority"]).read_bytes()

        def data(key: str) -> bytes | None:
            if f"{key}-data" in user:
                return base64.b64decode(user[f"{key}-data"])
            return Path(user[key]).read_bytes() if key in user else None

        return cls(
            server=cluster["server"],
            ca_pem=ca,
            cert_pem=data("client-certificate"),
            key_pem=data("client-key"),
            token=user.get("token"),
        )

    @classmethod
    def from_environment(cls) -> Credentials:
        """In a pod: its ServiceAccount. Elsewhere: the kubeconfig named by $KUBECONFIG."""
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return cls.in_cluster()
        path = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
        return cls.from_kubeconfig(yaml.safe_load(path.read_text()))

    @classmethod
    def in_cluster(cls) -> Credentials:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        if ":" in host:
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            ca_pem=(SERVICE_ACCOUNT_DIR / "ca.crt").read_bytes(),
            token_file=SERVICE_ACCOUNT_DIR / "token",
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if self.cert_pem and self.key_pem:
            # ssl can only load a client key from a file: write both to a private temporary file.
            with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(self.cert_pem + b"\n" + self.key_pem)
                handle.flush()
                context.load_cert_chain(handle.name)
        return context

    def bearer(self) -> str | None:
        if self.token_file:  # projected tokens rotate: read on every request
            return self.token_file.read_text().strip()
        return self.token


# A throttled request (429) is retried this many times, after the server's Retry-After (capped).
THROTTLE_RETRIES = 5
MAX_RETRY_AFTER_SECONDS = 10.0


def retry_after(header: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds; a date or garbage counts as 1 s)."""
    try:
        seconds = float(header) if header is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class KubeClient:
    """One API server. Use `async with KubeClient(credentials) as kube:`."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0):
        self.credentials = credentials
        self.timeout = timeout
        self._ssl = credentials.ssl_context()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection limit: with HTTP/1.1 every open watch holds a connection of its own, and
            # one super-cluster client serves the watches of every tenant's syncer.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if token := self.credentials.bearer():
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else orjson.dumps(body)  # JSON in C: the syncer's hot path
        throttled = 0
        while True:
            async with self.session.request(
                method,
                self.credentials.server + path,
                data=data,
                params=params,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as response:
                raw = await response.read()
                try:
                    payload = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    payload = raw.decode(errors="replace")
                if response.status != 429 or throttled == THROTTLE_RETRIES:
                    if response.status >= 400:
                        raise ApiError(response.status, payload, method, path)
                    return payload
                # API Priority and Fairness: the server says when to come back.
                delay = retry_after(response.headers.get("Retry-After"))
            throttled += 1
            await asyncio.sleep(delay)

    # -- verbs -------------------------------------------------------------------------------

    async def apply(self, obj: Mapping[str, Any], *, subresource: str = "", force: bool = True) -> Any:
        """Server-side apply under Stockade's field manager."""
        meta = obj["metadata"]
        path = kind_of(obj).path(meta.get("namespace"), meta["name"]) + (f"/{subresource}" if subresource else "")
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        return await self.request("PATCH", path, body=obj, params=params, content_type="application/apply-patch+yaml")

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        return await self.request("GET", KINDS[(api_version, kind)].path(namespace, name))

    async def get_or_none(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        try:
            return await self.get(api_version, kind, name, namespace)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> builtins.list[Any]:
        return (await self.list_with_version(api_version, kind, namespace, label_selector=label_selector))[0]

    async def list_with_version(
        self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[builtins.list[Any], str]:
        """Items and the list's resourceVersion, to start a watch from."""
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", KINDS[(api_version, kind)].path(namespace), params=params, timeout=120)
        return list(result.get("items", [])), str(result["metadata"].get("resourceVersion", ""))

    async def create(self, obj: Mapping[str, Any]) -> Any:
        return await self.request("POST", kind_of(obj).path(obj["metadata"].get("namespace")), body=obj)

    async def patch_merge(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        subresource: str = "",
    ) -> Any:
        path = KINDS[(api_version, kind)].path(namespace, name) + (f"/{subresource}" if subresource else "")
        return await self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        grace_seconds: int | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False if it was already gone. `uid` makes it a precondition (never the wrong object)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self.request("DELETE", KINDS[(api_version, kind)].path(namespace, name), body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def get_raw(self, path: str, timeout: float | None = None) -> tuple[int, str]:
        """GET a non-resource path such as /readyz; returns (status, body) without raising."""
        async with self.session.get(
            self.credentials.server + path,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
        ) as response:
            return response.status, await response.text()

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        read_timeout: float = 90.0,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (with bookmarks). A silent connection fails after `read_timeout`."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        async with self.session.get(
            self.credentials.server + KINDS[(api_version, kind)].path(namespace),
            params=params,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=read_timeout),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text(), "WATCH", kind)
            async for line in json_lines(response.content.iter_any()):
                yield orjson.loads(line)


# Larger than any object the API server stores (its request limit is 3 MiB): a longer line is an error.
MAX_LINE_BYTES = 16 * 2**20


async def json_lines(chunks: AsyncIterator[bytes], limit: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """The non-empty lines of a stream of chunks, however the chunks cut them and however long a
    line is up to `limit` (aiohttp's own line reader stops at 128 KiB: one large ConfigMap or Secret
    in a watch would break it)."""
    pending = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:  # only the new bytes are searched: linear
            pending += chunk[start:end]
            if pending.strip():
                yield bytes(pending)
            pending.clear()
            start = end + 1
        pending += chunk[start:]
        if len(pending) > limit:
            raise ValueError(f"a watch line longer than {limit} bytes")
    if pending.strip():
        yield bytes(pending)


async def wait_for(predicate: Any, timeout: float, interval: float = 1.0) -> Any:
    """Await `predicate()` until it returns a truthy value or `timeout` passes (then None)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result or asyncio.get_running_loop().time() >= deadline:
            return result
        await asyncio.sleep(interval)
