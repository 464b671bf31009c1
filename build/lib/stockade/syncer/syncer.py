"""One tenant's syncer: informers on both sides, a handler per kind, a virtual node, a patrol.

Down (tenant → super): Pods, ConfigMaps, Secrets, ServiceAccounts, PersistentVolumeClaims,
Services and selector-less Endpoints, translated by `translate`. Up (super → tenant): pod, Service
and PVC status, and Events about synced pods. Every handler is level-based: it compares the two
caches for one key and repairs the difference, so the patrol (every key, periodically) and a
restart (every key, once) need nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from stockade import naming
from stockade.kube import ApiError, KubeClient
from stockade.logs import about
from stockade.syncer import metrics
from stockade.syncer import translate as tr
from stockade.syncer.informer import Informer, Key, key_of
from stockade.syncer.queue import FairQueue

log = logging.getLogger("stockade.syncer")

# Kinds mirrored down, with their translation.
CONFIG_KINDS: dict[str, Callable[[Mapping[str, Any], tr.TenantContext], dict[str, Any]]] = {
    "ConfigMap": tr.translate_config,
    "Secret": tr.translate_config,
    "ServiceAccount": tr.translate_service_account,
    "PersistentVolumeClaim": tr.translate_pvc,
    "Service": tr.translate_service,
    "Endpoints": tr.translate_endpoints,
}
SYNCED_KINDS = ("Pod", *CONFIG_KINDS)
TOKEN_SECONDS = 3600
TOKEN_REFRESH_BEFORE = datetime.timedelta(minutes=20)
LEASE_NAMESPACE = "kube-node-lease"
# Per-key retry backoff: a key that keeps failing (a refusal by the super cluster, an API server
# away) is retried after 0.5 s, 1 s, 2 s … up to 5 minutes, without a worker waiting for it.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 300.0
# A refusal by the super cluster is shown to the tenant once it has lasted this many attempts
# (0.5 + 1 + 2 s): one that clears by itself (a ServiceAccount not mirrored yet) stays quiet.
TELL_AFTER_FAILURES = 3


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _skip_tenant_object(kind: str, obj: Mapping[str, Any]) -> bool:
    """Objects every namespace has, or that only make sense inside the tenant cluster."""
    name = obj["metadata"]["name"]
    if kind == "ConfigMap" and name == "kube-root-ca.crt":
        return True
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return True
    if kind in ("Service", "Endpoints") and obj["metadata"].get("namespace") == "default" and name == "kubernetes":
        return True
    return obj["metadata"].get("namespace") in ("kube-system", "kube-public", "kube-node-lease")


def _subset(desired: Any, current: Any) -> bool:
    """Whether everything in `desired` is also in `current` (server defaults may add more)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(k in current and _subset(v, current[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(_subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    return bool(desired == current)


@dataclass
class Health:
    ok: bool = True
    message: str = ""


class TenantSyncer:
    def __init__(
        self,
        ctx: tr.TenantContext,
        super_kube: KubeClient,
        tenant_kube: KubeClient,
        tenant_ca_pem: bytes,
        queue: FairQueue,
        *,
        capacity: Mapping[str, str],
        patrol_seconds: float = 60.0,
        heartbeat_seconds: float = 10.0,
        on_health: Callable[[bool, str], None] = lambda ok, message: None,
    ):
        self.ctx = ctx
        self.tenant = ctx.tenant
        self.super = super_kube
        self.tenant_api = tenant_kube
        self.tenant_ca_pem = tenant_ca_pem
        self.queue = queue
        self.capacity = dict(capacity)
        self.patrol_seconds = patrol_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.health = Health()
        self._on_health = on_health
        selector = f"{naming.LABEL_TENANT}={ctx.tenant},{tr.LABEL_SYNCED}=true"
        self.tenant_informers: dict[str, Informer] = {}
        self.super_informers: dict[str, Informer] = {}
        for kind in SYNCED_KINDS:
            self.tenant_informers[kind] = Informer(
                tenant_kube,
                "v1",
                kind,
                tenant=self.tenant,
                side="tenant",
                on_change=self._tenant_changed(kind),
                on_health=self._health,
            )
            self.super_informers[kind] = Informer(
                super_kube,
                "v1",
                kind,
                tenant=self.tenant,
                side="super",
                namespace=ctx.namespace,
                label_selector=selector,
                on_change=self._super_changed(kind),
            )
        self.super_events = Informer(
            super_kube,
            "v1",
            "Event",
            tenant=self.tenant,
            side="super",
            namespace=ctx.namespace,
            on_change=self._super_event,
        )
        self._told: dict[str, str] = {}  # tenant uid -> last warning posted
        self._tenant_volumes: dict[str, str] = {}  # tenant PersistentVolumes published -> claim uid
        self._failures: dict[tuple[str, Key], int] = {}  # consecutive failures per key
        self._retries: dict[tuple[str, Key], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # fire-and-forget work, kept referenced

    # -- health ----------------------------------------------------------------------------------

    def _health(self, ok: bool, message: str) -> None:
        if ok == self.health.ok and message == self.health.message:
            return
        if ok and not all(i.synced.is_set() for i in self.tenant_informers.values()):
            return
        self.health = Health(ok, message)
        self._on_health(ok, message)

    # -- change notifications → queue ------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enqueue(self, kind: str, key: Key) -> None:
        self._spawn(self.queue.put(self.tenant, (kind, key)))

    def _lasting(self, item: tuple[str, Key]) -> bool:
        """Whether `item` has failed often enough in a row that the tenant should hear of it."""
        return self._failures.get(item, 0) >= TELL_AFTER_FAILURES

    def _retry_later(self, item: tuple[str, Key], *, failed: bool = True) -> float:
        """Queue `item` again after its backoff (a failure) or the first delay (not synced yet); a
        worker never sleeps on it."""
        failures = self._failures.get(item, 0)
        if failed:
            self._failures[item] = failures + 1
        delay = float(min(RETRY_FIRST_SECONDS * 2**failures, RETRY_MAX_SECONDS)) if failed else RETRY_FIRST_SECONDS
        if item not in self._retries:
            loop = asyncio.get_running_loop()

            def due() -> None:
                self._retries.pop(item, None)
                self._enqueue(*item)

            self._retries[item] = loop.call_later(delay, due)
        return delay

    def _tenant_changed(self, kind: str) -> Callable[[str, Key, dict[str, Any]], None]:
        def changed(event: str, key: Key, obj: dict[str, Any]) -> None:
            self._enqueue(kind, key)

        return changed

    def _super_changed(self, kind: str) -> Callable[[str, Key, dict[str, Any]], None]:
        def changed(event: str, key: Key, obj: dict[str, Any]) -> None:
            tenant_key = tr.tenant_key(obj)
            if tenant_key is not None:
                self._enqueue(kind, tenant_key)

        return changed

    def _super_event(self, event: str, key: Key, obj: dict[str, Any]) -> None:
        if event == "ADDED" and obj.get("involvedObject", {}).get("kind") == "Pod":
            self._spawn(self._forward_event(obj))

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until cancelled."""
        informers = [*self.tenant_informers.values(), *self.super_informers.values(), self.super_events]
        tasks = [asyncio.create_task(i.run(), name=f"{self.tenant}-{i.side}-{i.kind}") for i in informers]
        tasks.append(asyncio.create_task(self._heartbeat(), name=f"{self.tenant}-node"))
        tasks.append(asyncio.create_task(self._patrol(), name=f"{self.tenant}-patrol"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for handle in self._retries.values():
                handle.cancel()
            self._retries.clear()
            for task in [*tasks, *self._tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            self.queue.forget(self.tenant)

    async def wait_synced(self, timeout: float = 60) -> None:
        informers = [*self.tenant_informers.values(), *self.super_informers.values()]
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers)), timeout)

    async def _patrol(self) -> None:
        """Every key of both sides, periodically: repairs drift and removes orphans."""
        informers = [*self.tenant_informers.values(), *self.super_informers.values()]
        await asyncio.gather(*(i.synced.wait() for i in informers))
        while True:
            for kind in SYNCED_KINDS:
                keys = set(self.tenant_informers[kind].cache)
                keys |= {k for obj in self.super_informers[kind].cache.values() if (k := tr.tenant_key(obj))}
                for key in keys:
                    await self.queue.put(self.tenant, (kind, key))
            await asyncio.sleep(self.patrol_seconds)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (*self.tenant_informers.values(), *self.super_informers.values()))

    async def handle(self, item: tuple[str, Key]) -> None:
        kind, key = item
        # Judging needs both sides' full picture: before the super informers have listed, a tenant
        # pod would look like it lost its super pod (and be deleted) right after a restart.
        if not self.synced():
            self._retry_later(item, failed=False)
            return
        started = time.monotonic()
        try:
            if kind == "Pod":
                await self._sync_pod(key)
            else:
                await self._sync_config(kind, key)
        except ApiError as error:
            if error.status == 404 or error.status == 409:
                return  # gone or changed meanwhile: the next event brings the key back
            metrics.ERRORS.labels(self.tenant, kind).inc()
            # Every other answer is retried with backoff: a refusal (403 quota, 422) may stop once
            # the tenant frees quota or changes the object, and the tenant has been told why.
            delay = self._retry_later(item)
            log.warning(
                "tenant=%s kind=%s key=%s/%s: %s (retry in %.1fs)", self.tenant, kind, *key, error, delay,
                extra=about(self.tenant, kind, *key),
            )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            # The API server is unreachable or restarting.
            metrics.ERRORS.labels(self.tenant, kind).inc()
            delay = self._retry_later(item)
            log.warning(
                "tenant=%s kind=%s key=%s/%s: %s (retry in %.1fs)", self.tenant, kind, *key, error, delay,
                extra=about(self.tenant, kind, *key),
            )  # fmt: skip
        else:
            self._failures.pop(item, None)
        finally:
            metrics.SYNC_SECONDS.labels(self.tenant, kind).observe(time.monotonic() - started)

    # -- what the tenant is shown ----------------------------------------------------------------

    def _tenant_name_of(self, super_name: str) -> str | None:
        """The tenant name of a synced object, from its super name (for messages)."""
        for informer in self.super_informers.values():
            obj = informer.get((self.ctx.namespace, super_name))
            if obj is not None and (key := tr.tenant_key(obj)):
                return key[1]
        return None

    def _scrub(self, text: str, tenant_namespace: str, shadow: Mapping[str, Any] | None = None) -> str:
        hidden = {self.ctx.namespace: tenant_namespace}
        if shadow:
            if node := shadow.get("spec", {}).get("nodeName"):
                hidden[node] = self.ctx.virtual_node
            for ip in (shadow.get("status") or {}).get("hostIPs") or []:
                hidden[ip.get("ip", "")] = self.ctx.virtual_node_ip
        return tr.scrub(text, self._tenant_name_of, hidden)

    def _refusal_message(self, error: ApiError, tenant_namespace: str) -> str:
        message = error.body.get("message", "") if isinstance(error.body, dict) else str(error.body)[:300]
        return self._scrub(str(message), tenant_namespace)

    # -- pods ------------------------------------------------------------------------------------

    async def _sync_pod(self, key: Key) -> None:
        namespace, name = key
        pod = self.tenant_informers["Pod"].get(key)
        super_key = (self.ctx.namespace, tr.super_name(namespace, name))
        shadow = self.super_informers["Pod"].get(super_key)
        if shadow is not None and (
            pod is None or shadow["metadata"]["annotations"].get(tr.ANNOTATION_UID) != pod["metadata"]["uid"]
        ):
            # The tenant pod is gone, or this super pod belongs to an older pod of the same name.
            await self._delete_super("Pod", shadow, grace=self._grace(pod) if pod else None)
            return
        if pod is None:
            await self._delete_orphan_token(key)
            return
        if pod["metadata"].get("deletionTimestamp"):
            if shadow is not None:
                await self._delete_super("Pod", shadow, grace=self._grace(pod))
            else:
                # The super pod is gone: finish the deletion, as a kubelet would.
                await self.tenant_api.delete("v1", "Pod", name, namespace, uid=pod["metadata"]["uid"], grace_seconds=0)
            return
        if pod["spec"].get("nodeName") != self.ctx.virtual_node:
            return  # not scheduled to this tenant's virtual node (yet)
        if refusal := tr.pod_refusal(pod, self.ctx):
            await self._refuse_pod(pod, refusal)
            return
        if shadow is None:
            if pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") or pod.get("status", {}).get(
                "containerStatuses"
            ):
                # It ran, and its super pod disappeared (evicted, deleted): let the tenant's
                # controllers replace it.
                log.info(
                    "tenant=%s pod %s/%s lost its super pod; deleting it in the tenant",
                    self.tenant, namespace, name, extra=about(self.tenant, "Pod", namespace, name),
                )  # fmt: skip
                await self.tenant_api.delete("v1", "Pod", name, namespace, uid=pod["metadata"]["uid"], grace_seconds=0)
                return
            await self._create_super_pod(pod)
            return
        await self._refresh_token(pod, shadow)
        self._told.pop(pod["metadata"]["uid"], None)
        await self._update_super_pod(pod, shadow)
        await self._up_sync_pod(pod, shadow)

    @staticmethod
    def _grace(pod: Mapping[str, Any] | None) -> int | None:
        if not pod:
            return None
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        return int(grace) if grace is not None else pod["spec"].get("terminationGracePeriodSeconds")

    async def _refuse_pod(self, pod: Mapping[str, Any], reason: str) -> None:
        """The tenant pod's PodScheduled condition and a Warning Event say why it does not run."""
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("reason") == tr.REJECTED_REASON and c.get("message") == reason for c in conditions):
            return
        metrics.REFUSED.labels(self.tenant, "Pod").inc()
        meta = pod["metadata"]
        log.info(
            "tenant=%s pod %s/%s refused: %s", self.tenant, meta["namespace"], meta["name"], reason,
            extra=about(self.tenant, "Pod", meta["namespace"], meta["name"]),
        )  # fmt: skip
        others = [c for c in conditions if c.get("type") != "PodScheduled"]
        await self.tenant_api.patch_merge(
            "v1",
            "Pod",
            meta["name"],
            {"status": {"conditions": [*others, tr.rejected_condition(reason, now_iso())]}},
            meta["namespace"],
            subresource="status",
        )
        await self._tell_once(pod, tr.REJECTED_REASON, f"not run in the super cluster: {reason}")

    async def _create_super_pod(self, pod: Mapping[str, Any]) -> None:
        wants_token = pod["spec"].get("automountServiceAccountToken") is not False and any(
            tr._is_service_account_volume(v) for v in pod["spec"].get("volumes") or []
        )
        shadow = tr.translate_pod(pod, self.ctx, tr.token_secret_name(pod) if wants_token else None)
        try:
            created = await self.super.create(shadow)
        except ApiError as error:
            if error.status in (400, 403, 422) and self._lasting(("Pod", key_of(pod))):
                # A lasting refusal (quota, LimitRange, admission policy): the tenant is shown why,
                # on the pod's condition and in an Event; the key is retried with backoff.
                await self._refuse_pod(
                    pod, f"the super cluster refused it: {self._refusal_message(error, pod['metadata']['namespace'])}"
                )
            raise
        metrics.SYNCED.labels(self.tenant, "Pod", "down").inc()
        if wants_token:
            # Issued once the pod exists, owned by it from birth: a pod the super cluster refuses
            # leaves no token behind, and the token goes with its pod. The kubelet waits for it.
            await self._issue_token(pod, created)

    async def _delete_orphan_token(self, key: Key) -> None:
        """A token Secret whose tenant pod is gone (made before tokens were owned from birth)."""
        name = tr.token_secret_name({"metadata": {"namespace": key[0], "name": key[1]}})
        secret = self.super_informers["Secret"].get((self.ctx.namespace, name))
        if secret is not None and tr.tenant_key(secret) == key:
            await self._delete_super("Secret", secret)

    async def _issue_token(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """A token from the *tenant* API server, bound to the tenant pod, owned by its super pod."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        response = await self.tenant_api.request("POST", path, body=request)
        expires = response["status"]["expirationTimestamp"]
        secret = tr.token_secret(pod, self.ctx, response["status"]["token"], self.tenant_ca_pem, expires, shadow)
        await self.super.apply(secret)

    async def _refresh_token(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        name = tr.token_secret_name(pod)
        volumes = shadow.get("spec", {}).get("volumes") or []
        if not any((v.get("secret") or {}).get("secretName") == name for v in volumes):
            return
        secret = self.super_informers["Secret"].get((self.ctx.namespace, name))
        expires = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(tr.TOKEN_EXPIRES_ANNOTATION)
        if expires:
            due = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - TOKEN_REFRESH_BEFORE
            if datetime.datetime.now(datetime.UTC) < due:
                return
        await self._issue_token(pod, shadow)

    async def _update_super_pod(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """Pod specs are immutable but for images (and labels/annotations): follow those."""
        desired = tr.translate_pod(pod, self.ctx, None)
        patch: dict[str, Any] = {}
        current_images = {c["name"]: c.get("image") for c in shadow["spec"].get("containers", [])}
        changed = [
            {"name": c["name"], "image": c["image"]}
            for c in desired["spec"]["containers"]
            if current_images.get(c["name"]) != c.get("image")
        ]
        if changed:
            patch["spec"] = {"containers": changed}
        meta = desired["metadata"]
        if meta["labels"] != shadow["metadata"].get("labels") or not _subset(
            meta["annotations"], shadow["metadata"].get("annotations")
        ):
            patch["metadata"] = {"labels": meta["labels"], "annotations": meta["annotations"]}
        if patch:
            await self.super.request(
                "PATCH",
                f"/api/v1/namespaces/{self.ctx.namespace}/pods/{shadow['metadata']['name']}",
                body=patch,
                content_type="application/strategic-merge-patch+json",
            )

    async def _up_sync_pod(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        namespace = pod["metadata"]["namespace"]
        status = tr.tenant_pod_status(shadow, self.ctx, lambda text: self._scrub(text, namespace, shadow))
        if not status or _subset(status, pod.get("status") or {}):
            return
        meta = pod["metadata"]
        await self.tenant_api.patch_merge(
            "v1", "Pod", meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )
        metrics.SYNCED.labels(self.tenant, "Pod", "up").inc()

    async def _delete_super(self, kind: str, shadow: Mapping[str, Any], grace: int | None = None) -> None:
        meta = shadow["metadata"]
        if meta.get("deletionTimestamp"):
            return
        await self.super.delete("v1", kind, meta["name"], self.ctx.namespace, uid=meta["uid"], grace_seconds=grace)
        metrics.SYNCED.labels(self.tenant, kind, "down").inc()

    # -- other kinds -----------------------------------------------------------------------------

    async def _sync_config(self, kind: str, key: Key) -> None:
        namespace, name = key
        obj = self.tenant_informers[kind].get(key)
        shadow = self.super_informers[kind].get((self.ctx.namespace, tr.super_name(namespace, name)))
        # Only shadows the syncer made carry the tenant UID; others (e.g. the Endpoints the super
        # cluster's own controller keeps for a Service with a selector) are not ours to judge.
        shadow_uid = ((shadow or {}).get("metadata", {}).get("annotations") or {}).get(tr.ANNOTATION_UID)
        stale = shadow_uid is not None and (obj is None or shadow_uid != obj["metadata"]["uid"])
        if kind == "PersistentVolumeClaim" and (obj is None or obj["metadata"].get("deletionTimestamp")):
            # The claim is going: so is the tenant's record of its volume.
            volume = tr.tenant_volume_name(namespace, name)
            if await self.tenant_api.delete("v1", "PersistentVolume", volume):
                self._tenant_volumes.pop(volume, None)
        if kind == "Secret" and self.tenant_informers["Pod"].get(key) is None:
            await self._delete_orphan_token(key)
        if stale or (obj is not None and shadow is not None and obj["metadata"].get("deletionTimestamp")):
            await self._delete_super(kind, shadow)  # type: ignore[arg-type]
            return
        if obj is None or obj["metadata"].get("deletionTimestamp") or _skip_tenant_object(kind, obj):
            return
        if kind == "Endpoints" and not self._selectorless_service(obj):
            return  # Endpoints of Services with a selector are computed in the super cluster
        if kind == "Service" and obj["spec"].get("type") == "ExternalName":
            # A name, not an address: nothing for the super cluster to route (the tenant's DNS answers it).
            if shadow is not None:
                await self._delete_super(kind, shadow)
            return
        refusal = self._config_refusal(kind, obj)
        if refusal:
            if shadow is not None:
                await self._delete_super(kind, shadow)
            metrics.REFUSED.labels(self.tenant, kind).inc()
            await self._tell_once(obj, tr.REJECTED_REASON, f"not synced to the super cluster: {refusal}")
            return
        desired = CONFIG_KINDS[kind](obj, self.ctx)
        if shadow is None or not _subset({k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}, shadow):
            try:
                await self.super.apply(desired)
            except ApiError as error:
                if error.status in (400, 403, 422) and self._lasting((kind, key)):
                    message = self._refusal_message(error, namespace)
                    await self._tell_once(obj, tr.REJECTED_REASON, f"the super cluster refused it: {message}")
                raise
            metrics.SYNCED.labels(self.tenant, kind, "down").inc()
        self._told.pop(obj["metadata"]["uid"], None)
        if shadow is not None and kind in ("Service", "PersistentVolumeClaim"):
            await self._up_sync_status(kind, obj, shadow)

    def _selectorless_service(self, endpoints: Mapping[str, Any]) -> bool:
        service = self.tenant_informers["Service"].get(
            (endpoints["metadata"]["namespace"], endpoints["metadata"]["name"])
        )
        return bool(service) and not service["spec"].get("selector")  # type: ignore[index]

    def _config_refusal(self, kind: str, obj: Mapping[str, Any]) -> str | None:
        if kind == "Service":
            return tr.service_refusal(obj)
        if kind in ("ConfigMap", "Secret"):
            return self._budget_refusal(kind, obj)
        if kind == "Endpoints":
            pod_ips = {
                ip["ip"]
                for shadow in self.super_informers["Pod"].cache.values()
                for ip in (shadow.get("status") or {}).get("podIPs") or []
            }
            return tr.endpoints_refusal(obj, pod_ips)
        return None

    def _budget_refusal(self, kind: str, obj: Mapping[str, Any]) -> str | None:
        """The tenant's ConfigMaps and Secrets share a byte budget in the super cluster's etcd."""
        own = (self.ctx.namespace, tr.super_name(obj["metadata"]["namespace"], obj["metadata"]["name"]))
        used = sum(
            tr.config_bytes(item)
            for informer in (self.super_informers["ConfigMap"], self.super_informers["Secret"])
            for key, item in informer.cache.items()
            if key != own and tr.TOKEN_EXPIRES_ANNOTATION not in (item["metadata"].get("annotations") or {})
        )
        size = tr.config_bytes(obj)
        if used + size > self.ctx.config_bytes:
            return (
                f"data: {kind} of {size} bytes would take the tenant's synced ConfigMaps and Secrets to "
                f"{used + size} bytes, over the budget of {self.ctx.config_bytes} (spec.workloads.quota.configBytes)"
            )
        return None

    async def _up_sync_status(self, kind: str, obj: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        if kind == "PersistentVolumeClaim":
            await self._publish_volume(obj, shadow)
            return
        meta = obj["metadata"]
        # The tenant Service keeps its own (immutable) ClusterIP; the one that carries traffic in the
        # super cluster is published on it as an annotation (a tenant DNS will answer with it).
        cluster_ip = (shadow.get("spec") or {}).get("clusterIP")
        annotations = meta.get("annotations") or {}
        if cluster_ip and annotations.get(tr.ANNOTATION_SUPER_CLUSTER_IP) != cluster_ip:
            patch = {"metadata": {"annotations": {tr.ANNOTATION_SUPER_CLUSTER_IP: cluster_ip}}}
            await self.tenant_api.patch_merge("v1", kind, meta["name"], patch, meta["namespace"])
        status = {"loadBalancer": (shadow.get("status") or {}).get("loadBalancer") or {}}
        if _subset(status, obj.get("status") or {}) or status == {"loadBalancer": {}}:
            return
        await self.tenant_api.patch_merge(
            "v1", kind, meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )
        metrics.SYNCED.labels(self.tenant, kind, "up").inc()

    async def _publish_volume(self, claim: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """Once the super claim is bound, a PersistentVolume in the tenant stands for its volume, so
        the tenant's own volume binder binds the tenant claim (and keeps it bound)."""
        if (shadow.get("status") or {}).get("phase") != "Bound":
            return
        volume = tr.tenant_volume(claim, shadow)
        if self._tenant_volumes.get(volume["metadata"]["name"]) == claim["metadata"]["uid"]:
            return
        try:
            await self.tenant_api.create(volume)
            metrics.SYNCED.labels(self.tenant, "PersistentVolume", "up").inc()
        except ApiError as error:
            if error.status != 409:  # anything but "it exists already" is retried with the key
                raise
        self._tenant_volumes[volume["metadata"]["name"]] = claim["metadata"]["uid"]

    # -- events ----------------------------------------------------------------------------------

    async def _tell_once(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning Event on the tenant object, not repeated while the message stays the same."""
        uid = obj["metadata"]["uid"]
        if self._told.get(uid) == message:
            return
        self._told[uid] = message
        await self._tenant_event(obj, "Warning", reason, message)

    async def _tenant_event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        stamp = now_iso()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "stockade-syncer"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.tenant_api.create(event)
        except ApiError as error:
            log.warning("tenant=%s: cannot post event: %s", self.tenant, error, extra=about(self.tenant, "Event"))

    async def _forward_event(self, event: Mapping[str, Any]) -> None:
        """An Event about a super pod becomes an Event about the tenant pod (idempotent by name)."""
        involved = event["involvedObject"]
        shadow = self.super_informers["Pod"].get((self.ctx.namespace, involved.get("name", "")))
        key = tr.tenant_key(shadow) if shadow else None
        pod = self.tenant_informers["Pod"].get(key) if key else None
        reason = event.get("reason", "")
        if pod is None or not (reason in tr.FORWARDED_EVENT_REASONS or reason in tr.PLACEMENT_EVENT_REASONS):
            return
        meta = pod["metadata"]
        if reason in tr.PLACEMENT_EVENT_REASONS:
            message = tr.PLACEMENT_MESSAGE
        else:
            message = self._scrub(event.get("message", ""), meta["namespace"], shadow)
        forwarded = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": naming.fit(f"{meta['name']}.{event['metadata']['uid'][:13]}", 253),
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event.get("type", "Normal"),
            "reason": reason,
            "message": message,
            "count": event.get("count", 1),
            "firstTimestamp": event.get("firstTimestamp") or now_iso(),
            "lastTimestamp": event.get("lastTimestamp") or now_iso(),
            "source": {"component": "stockade-syncer", "host": self.ctx.virtual_node},
        }
        with contextlib.suppress(ApiError):  # 409: already forwarded (e.g. after a restart)
            await self.tenant_api.create(forwarded)

    # -- virtual node ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Publish the virtual node and keep its lease fresh, so the tenant scheduler binds pods
        to it and the tenant's node lifecycle controller keeps it Ready."""
        while True:
            try:
                await self._publish_node()
            except Exception as error:
                log.warning(
                    "tenant=%s: virtual node heartbeat failed: %s", self.tenant, error, extra=about(self.tenant, "Node")
                )
            await asyncio.sleep(self.heartbeat_seconds)

    async def _publish_node(self) -> None:
        stamp = now_iso()
        node = tr.virtual_node(self.ctx, self.capacity, stamp, self.ctx.virtual_node_ip)
        existing = await self.tenant_api.get_or_none("v1", "Node", self.ctx.virtual_node)
        if existing is None:
            await self.tenant_api.create({k: v for k, v in node.items() if k != "status"})
        await self.tenant_api.patch_merge(
            "v1", "Node", self.ctx.virtual_node, {"status": node["status"]}, subresource="status"
        )
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease_spec = {"holderIdentity": self.ctx.virtual_node, "leaseDurationSeconds": 40, "renewTime": micro}
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.ctx.virtual_node, "namespace": LEASE_NAMESPACE},
            "spec": lease_spec,
        }
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        current = None
        with contextlib.suppress(ApiError):
            current = await self.tenant_api.request("GET", f"{path}/{self.ctx.virtual_node}")
        if current is None:
            await self.tenant_api.request("POST", path, body=lease)
        else:
            current["spec"] = {**current.get("spec", {}), **lease_spec}
            await self.tenant_api.request("PUT", f"{path}/{self.ctx.virtual_node}", body=current)


class SyncerPool:
    """Workers serving every tenant's queue fairly."""

    def __init__(self, workers: int = 8):
        self.queue = FairQueue()
        self.syncers: dict[str, TenantSyncer] = {}
        self.workers = workers

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            tenant, item = await self.queue.get()
            syncer = self.syncers.get(tenant)
            if syncer is None:
                continue
            try:
                await syncer.handle(item)  # type: ignore[arg-type]
            except Exception:
                # A bug in one handler must not take a worker (and with it every tenant) down.
                log.exception("tenant=%s: unexpected error handling %s", tenant, item, extra=about(tenant))
