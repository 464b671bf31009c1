"""Pods: a tenant pod bound to the virtual node runs as a super pod (translated and refused by
`pod_spec`), with a token from the tenant API server; its status goes back up, and its deletion
runs both ways as a kubelet's would."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from stockade.kube import ApiError
from stockade.logs import about
from stockade.naming import TOKEN_EXPIRES_ANNOTATION
from stockade.syncer import metrics
from stockade.syncer.kinds import pod_spec
from stockade.syncer.kinds.base import REJECTED_REASON, Kind, now_iso, stale, subset
from stockade.syncer.translate import Key, key_of

log = logging.getLogger("stockade.syncer")

EPHEMERAL_PATH = "spec.ephemeralContainers"
# A token is renewed 20 minutes before it expires, or once 80 % of its life has passed if it is
# shorter-lived (as the kubelet does).
TOKEN_REFRESH_BEFORE = datetime.timedelta(minutes=20)


def grace(pod: Mapping[str, Any] | None) -> int | None:
    if not pod:
        return None
    seconds = pod["metadata"].get("deletionGracePeriodSeconds")
    return int(seconds) if seconds is not None else pod["spec"].get("terminationGracePeriodSeconds")


def has_run(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") in ("Running", "Succeeded", "Failed") or bool(status.get("containerStatuses"))


class Pods(Kind):
    kind = "Pod"

    async def sync(self, key: Key) -> None:
        s = self.sides
        namespace, name = key
        pod = s.in_tenant(self.kind, key)
        shadow = s.shadow(self.kind, key)
        if shadow is not None and stale(shadow, pod):
            # The tenant pod is gone, or this super pod belongs to an older pod of the same name.
            await s.delete_super(self.kind, shadow, grace=grace(pod))
            return
        if pod is None:
            return
        uid = pod["metadata"]["uid"]
        if pod["metadata"].get("deletionTimestamp"):
            if shadow is not None:
                await s.delete_super(self.kind, shadow, grace=grace(pod))
            else:
                # The super pod is gone: finish the deletion, as a kubelet would.
                await s.tenant_api.delete("v1", self.kind, name, namespace, uid=uid, grace_seconds=0)
            return
        if pod["spec"].get("nodeName") != s.ctx.virtual_node:
            return  # not scheduled to this tenant's virtual node (yet)
        refusal = pod_spec.pod_refusal(pod, s.ctx)
        if refusal and not (shadow is not None and refusal.startswith(EPHEMERAL_PATH)):
            await self._refuse(pod, refusal)
            return
        if shadow is None:
            if has_run(pod):
                # It ran, and its super pod disappeared (evicted, deleted): let the tenant's
                # controllers replace it.
                log.info(
                    "tenant=%s pod %s/%s lost its super pod; deleting it in the tenant", s.tenant, namespace, name,
                    extra=about(s.tenant, self.kind, namespace, name),
                )  # fmt: skip
                await s.tenant_api.delete("v1", self.kind, name, namespace, uid=uid, grace_seconds=0)
                return
            await self._create(pod)
            return
        await self._refresh_token(pod, shadow)
        await self._update(pod, shadow)
        await self.up(pod, shadow)
        if refusal:
            # A running pod stays as it is; the debug container it was given does not run.
            await s.tell_once(pod, REJECTED_REASON, f"ephemeral container not run in the super cluster: {refusal}")
        else:
            s.settled(uid)
            await self._add_ephemeral_containers(pod, shadow)

    def _services_in(self, namespace: str) -> list[dict[str, Any]]:
        """The tenant Services of `namespace`: their variables go into its pods' containers."""
        return [svc for (ns, _), svc in self.sides.tenant_caches["Service"].cache.items() if ns == namespace]

    async def _refuse(self, pod: Mapping[str, Any], reason: str) -> None:
        """The tenant pod's PodScheduled condition and a Warning Event say why it does not run."""
        s = self.sides
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("reason") == REJECTED_REASON and c.get("message") == reason for c in conditions):
            return
        metrics.REFUSED.labels(s.tenant, self.kind).inc()
        meta = pod["metadata"]
        log.info(
            "tenant=%s pod %s/%s refused: %s", s.tenant, meta["namespace"], meta["name"], reason,
            extra=about(s.tenant, self.kind, meta["namespace"], meta["name"]),
        )  # fmt: skip
        others = [c for c in conditions if c.get("type") != "PodScheduled"]
        condition = pod_spec.rejected_condition(REJECTED_REASON, reason, now_iso())
        await s.tenant_api.patch_merge(
            "v1", self.kind, meta["name"], {"status": {"conditions": [*others, condition]}}, meta["namespace"],
            subresource="status",
        )  # fmt: skip
        await s.tell_once(pod, REJECTED_REASON, f"not run in the super cluster: {reason}")

    async def _create(self, pod: Mapping[str, Any]) -> None:
        s = self.sides
        for kind, name in pod_spec.dependencies(pod):
            await s.first(kind, (pod["metadata"]["namespace"], name))
        wants_token = pod_spec.wants_token(pod)
        namespace = pod["metadata"]["namespace"]
        services = self._services_in(namespace)
        token = pod_spec.token_secret_name(pod) if wants_token else None
        shadow = pod_spec.translate_pod(pod, s.ctx, token, services)
        # The token is bound to the tenant pod, not the super one: minted while the super pod is
        # created (one round trip less per pod), and stored only once the super pod exists.
        minting = asyncio.ensure_future(self._mint_tokens(pod)) if wants_token else None
        try:
            created = await s.super.create(shadow)
        except BaseException as error:
            if minting is not None:  # a refused pod leaves no token behind: it is never stored
                minting.cancel()
                await asyncio.gather(minting, return_exceptions=True)
            if isinstance(error, ApiError) and error.status in (400, 403, 422) and s.lasting(self.kind, key_of(pod)):
                # A lasting refusal (quota, LimitRange, admission policy): the tenant is shown why,
                # on the pod's condition and in an Event; the key is retried with backoff.
                message = s.refusal_message(error, pod["metadata"]["namespace"])
                await self._refuse(pod, f"the super cluster refused it: {message}")
            raise
        s.super_caches[self.kind].wrote(created)
        metrics.SYNCED.labels(s.tenant, self.kind, "down").inc()
        if minting is not None:
            # Stored owned by the super pod from birth: the token goes with its pod. The kubelet
            # waits for it.
            await self._store_token(pod, created, *(await minting))
        await self.up(pod, created)  # the super pod's first status: its watch echo is skipped

    async def _mint_tokens(self, pod: Mapping[str, Any]) -> tuple[dict[str, str], str]:
        """Every token the pod mounts (by its key in the token Secret), from the *tenant* API
        server, bound to the tenant pod; and when the first of them expires."""
        requests = pod_spec.token_requests(pod)
        minted = await asyncio.gather(*(self._mint_token(pod, *request) for request in requests.values()))
        return dict(zip(requests, (token for token, _ in minted), strict=True)), min(e for _, e in minted)

    async def _mint_token(self, pod: Mapping[str, Any], audience: str, seconds: int) -> tuple[str, str]:
        """(token, when to count it expired) from the tenant API server for `audience` (its own if
        empty). The lifetime asked for, not the one granted, paces renewal: an API server may grant
        far more (a year for the standard volume's 3607 s, `--service-account-extend-token-expiration`),
        and the kubelet renews such a token on the lifetime it asked for too."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }
        if audience:
            spec["audiences"] = [audience]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        asked_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        response = await self.sides.tenant_api.request("POST", path, body=request)
        granted = datetime.datetime.fromisoformat(response["status"]["expirationTimestamp"].replace("Z", "+00:00"))
        return response["status"]["token"], min(granted, asked_until).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def _store_token(
        self, pod: Mapping[str, Any], shadow: Mapping[str, Any], tokens: Mapping[str, str], expires: str
    ) -> None:
        """The tokens in a Secret owned by the super pod `shadow`."""
        s = self.sides
        secret = pod_spec.token_secret(pod, s.ctx, tokens, s.tenant_ca_pem, expires, shadow)
        s.super_caches["Secret"].wrote(await s.super.apply(secret))

    async def _refresh_token(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        s = self.sides
        requests = pod_spec.token_requests(pod)
        if not requests:
            return
        secret = s.super_caches["Secret"].get((s.ctx.namespace, pod_spec.token_secret_name(pod)))
        expires = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(TOKEN_EXPIRES_ANNOTATION)
        if expires and set(requests) <= set((secret or {}).get("data") or {}):
            shortest = min(seconds for _, seconds in requests.values())
            before = min(TOKEN_REFRESH_BEFORE, datetime.timedelta(seconds=shortest / 5))
            due = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - before
            if datetime.datetime.now(datetime.UTC) < due:
                return
        await self._store_token(pod, shadow, *(await self._mint_tokens(pod)))

    async def _add_ephemeral_containers(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """Ephemeral containers the tenant added (`kubectl debug`) and the super pod lacks. They can
        only be added, never changed or removed, through the super pod's own subresource."""
        s = self.sides
        present = {c["name"] for c in shadow["spec"].get("ephemeralContainers") or []}
        if all(c["name"] in present for c in pod["spec"].get("ephemeralContainers") or []):
            return
        namespace = pod["metadata"]["namespace"]
        services = self._services_in(namespace)
        wanted = pod_spec.translate_ephemeral_containers(pod, s.ctx, services)
        added = [c for c in wanted if c["name"] not in present]
        written = await s.super.request(
            "PATCH",
            f"/api/v1/namespaces/{s.ctx.namespace}/pods/{shadow['metadata']['name']}/ephemeralcontainers",
            body={"spec": {"ephemeralContainers": added}},
            content_type="application/strategic-merge-patch+json",
        )
        s.super_caches[self.kind].wrote(written)
        metrics.SYNCED.labels(s.tenant, self.kind, "down").inc()

    async def _update(self, pod: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        """Pod specs are immutable but for images, activeDeadlineSeconds (and labels/annotations):
        follow those."""
        s = self.sides
        desired = pod_spec.translate_pod(pod, s.ctx, None)
        patch: dict[str, Any] = {}
        deadline = desired["spec"].get("activeDeadlineSeconds")
        if deadline is not None and deadline != shadow["spec"].get("activeDeadlineSeconds"):
            patch["spec"] = {"activeDeadlineSeconds": deadline}
        current_images = {c["name"]: c.get("image") for c in shadow["spec"].get("containers", [])}
        changed = [
            {"name": c["name"], "image": c["image"]}
            for c in desired["spec"]["containers"]
            if current_images.get(c["name"]) != c.get("image")
        ]
        if changed:
            patch.setdefault("spec", {})["containers"] = changed
        meta = desired["metadata"]
        if meta["labels"] != shadow["metadata"].get("labels") or not subset(
            meta["annotations"], shadow["metadata"].get("annotations")
        ):
            patch["metadata"] = {"labels": meta["labels"], "annotations": meta["annotations"]}
        if patch:
            await s.super.request(
                "PATCH",
                f"/api/v1/namespaces/{s.ctx.namespace}/pods/{shadow['metadata']['name']}",
                body=patch,
                content_type="application/strategic-merge-patch+json",
            )

    async def up(self, obj: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        s = self.sides
        namespace = obj["metadata"]["namespace"]
        status = pod_spec.tenant_pod_status(shadow, s.ctx, lambda text: s.scrub(text, namespace, shadow))
        if not status or subset(status, obj.get("status") or {}):
            return
        meta = obj["metadata"]
        written = await s.tenant_api.patch_merge(
            "v1", self.kind, meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )
        s.tenant_caches[self.kind].wrote(written)
        metrics.SYNCED.labels(s.tenant, self.kind, "up").inc()
