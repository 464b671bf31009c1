"""Drives the super cluster towards what a Tenant asks for. Level-based and idempotent.

Each pass reads the world, computes the desired objects with the pure builders (`render`,
`certificates`), applies them with server-side apply (an unchanged object is not written), and
reports what it observed as conditions. The operator may be killed at any point: the next pass
picks up from what exists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stockade import certificates as certs
from stockade import metrics, naming, render, tenant_rbac
from stockade import status as st
from stockade.config import OperatorConfig
from stockade.kube import ApiError, Credentials, KubeClient
from stockade.logs import about
from stockade.model import (
    API_VERSION,
    KIND,
    Endpoint,
    Phase,
    RotationStatus,
    SecretReference,
    ServiceType,
    TenantNamespaces,
    TenantSpec,
    TenantStatus,
    tenant_name_problem,
)

log = logging.getLogger("stockade.reconciler")

# A status write that meets a newer version (409) is computed again on the fresh one, this often.
STATUS_WRITE_ATTEMPTS = 5
# Kinds whose objects come and go, with the namespaces they are pruned in ("control-plane" or
# both): those the spec may stop asking for, and those of the earlier control-plane layout (a
# Deployment per component, etcd's client Service) that one pod per replica replaces — the etcd
# StatefulSet itself migrates in place. Objects of other kinds exist for every tenant.
PRUNABLE_KINDS = (
    ("networking.k8s.io/v1", "NetworkPolicy", "both"),
    ("policy/v1", "PodDisruptionBudget", "both"),
    ("apps/v1", "Deployment", "control-plane"),
    ("v1", "Service", "control-plane"),
)

# Blocks of the Service pool tried after a refused claim before the pass fails (and is retried).
SERVICE_RANGE_ATTEMPTS = 16
# How long a new pool ServiceCIDR may take to become Ready (polls of 0.5 s).
POOL_READY_POLLS = 40

# Posts an Event on the Tenant: (type "Normal"/"Warning", reason, message).
EventSink = Callable[[str, str, str], Awaitable[None]]


def describe_validation_error(error: ValidationError) -> str:
    """`spec.a.b: reason; spec.c: reason` for every problem pydantic found."""
    parts = []
    for problem in error.errors():
        path = ".".join(str(p) for p in ("spec", *problem["loc"]))
        # A validator's own ValueError: its message alone, without pydantic's "Value error, ".
        cause = (problem.get("ctx") or {}).get("error") if problem["type"] == "value_error" else None
        parts.append(f"{path}: {cause if cause is not None else problem['msg']}")
    return "; ".join(parts)


# API answers that no retry mends: the request itself is refused (invalid, forbidden, malformed).
REFUSED_STATUSES = (400, 403, 422)


class StalledError(Exception):
    """A pass cannot go on until the spec or the super cluster changes."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def failed_pass(error: Exception) -> st.Check:
    """Ready=False for a pass that `error` stopped; `stalls` if retrying cannot mend it."""
    if isinstance(error, StalledError):
        return st.Check(st.READY, False, error.reason, str(error), stalls=True)
    if isinstance(error, ApiError):
        refused = error.status in REFUSED_STATUSES
        reason = "ApplyRefused" if refused else "ApplyFailed"
        return st.Check(st.READY, False, reason, f"the super cluster answered {error}", stalls=refused)
    return st.Check(st.READY, False, "ReconcileFailed", str(error))


@dataclass
class Observed:
    """What one pass learned, turned into status at the end."""

    checks: list[st.Check] = field(default_factory=list)
    endpoint: Endpoint | None = None
    certificates_not_after: str | None = None
    running_version: str | None = None
    rotation: RotationStatus | None = None
    service_range: str | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) Events


class TenantReconciler:
    def __init__(
        self,
        kube: KubeClient,
        config: OperatorConfig,
        *,
        tenant_client: Callable[[Credentials], KubeClient] = KubeClient,
    ):
        self.kube = kube
        self.config = config
        self._tenant_client = tenant_client
        self._locks: dict[str, asyncio.Lock] = {}
        self._pool_ready = False

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- the pass ------------------------------------------------------------------------------

    async def reconcile(self, name: str, events: EventSink) -> TenantStatus | None:
        """One pass for the Tenant `name`, on its current state read fresh from the API server:
        a timer or a queued handler never acts on a stale copy. None if it no longer exists."""
        async with self.lock(name):
            body = await self.kube.get_or_none(API_VERSION, KIND, name)
            if body is None:
                return None
            with metrics.timed_pass() as timing:
                status = await self._reconcile(body, events)
                timing["result"] = "stalled" if status.phase == Phase.FAILED else "ok"
            return status

    async def _reconcile(self, body: Mapping[str, Any], events: EventSink) -> TenantStatus:
        meta = body["metadata"]
        name = meta["name"]
        previous = TenantStatus.model_validate(body.get("status") or {})
        if meta.get("deletionTimestamp"):
            return previous

        try:
            if problem := tenant_name_problem(name):
                raise ValueError(problem)
            spec = TenantSpec.model_validate(body.get("spec") or {})
        except (ValidationError, ValueError) as error:
            message = describe_validation_error(error) if isinstance(error, ValidationError) else str(error)
            return await self._write_failed(body, st.Check(st.READY, False, "InvalidSpec", message, True), events)

        try:
            return await self._provision(body, spec, previous, events)
        except (ApiError, StalledError, RuntimeError) as error:
            # Told on the Tenant (Ready=False with the API's own message, and a Warning Event);
            # what a retry may mend is raised again, so kopf retries it with a back-off.
            check = failed_pass(error)
            status = await self._write_failed(body, check, events)
            if check.stalls:
                return status
            raise

    async def _provision(
        self, body: Mapping[str, Any], spec: TenantSpec, previous: TenantStatus, events: EventSink
    ) -> TenantStatus:
        meta = body["metadata"]
        name = meta["name"]
        observed = Observed()
        effective_spec, refusal = self._version_gate(spec, previous)
        if refusal:
            observed.warnings.append(("UpgradeRefused", refusal))

        inp = render.TenantInput(
            name=name,
            uid=meta["uid"],
            spec=effective_spec,
            config=self.config,
            super_apiserver_ips=await self._super_apiserver_ips(),
        )
        # Namespaces and the API server's Service first: the Service claims the tenant's Service
        # range, and the certificates name its address.
        for obj in render.render_tenant(inp):
            if obj["kind"] == "Namespace":
                await self.kube.apply(obj)
        service_range = await self._claim_service_range(inp)
        inp = render.TenantInput(**{**inp.__dict__, "service_range": service_range})
        observed.service_range = service_range
        service = await self.kube.get("v1", "Service", naming.APISERVER, naming.control_plane_namespace(name))
        external = await self._external_endpoint(spec, service)

        bundle, pki_check = await self._ensure_pki(body, inp, effective_spec, service, external, observed)
        observed.checks.append(pki_check)
        checksum = render.checksum(render.pki_secrets(inp, bundle))
        inp = render.TenantInput(**{**inp.__dict__, "pki_checksum": checksum})
        desired = render.render_tenant(inp)
        for obj in desired:
            await self.kube.apply(obj)
        await self._prune(name, desired)

        observed.endpoint = Endpoint(internal=naming.apiserver_url(name), external=external)
        observed.certificates_not_after = st.timestamp(bundle.earliest_expiry())
        observed.checks.append(await self._isolation_check(inp))
        control_plane = await self._control_plane_check(inp, service, bundle)
        observed.checks.append(control_plane)
        if control_plane.ok:
            observed.running_version = effective_spec.kubernetes.version
        if inp.service_range is not None:  # a Tenant from before the pool has no DNS of its own
            observed.checks.append(await self._dns_check(inp))
        if refusal:
            observed.checks.append(st.Check("VersionAccepted", False, "UpgradeRefused", refusal, stalls=True))
        return await self._write_status(body, spec, observed, events)

    async def _prune(self, name: str, desired: list[dict[str, Any]]) -> None:
        """Delete the tenant's objects of the kinds that come and go (`PRUNABLE_KINDS`) that the
        desired set no longer has: e.g. the internet-egress NetworkPolicy once the spec drops it,
        or the Deployments of the earlier control-plane layout once a tenant has migrated."""
        wanted = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in desired}
        selector = f"{naming.LABEL_TENANT}={name},{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
        control_plane = naming.control_plane_namespace(name)
        for api_version, kind, scope in PRUNABLE_KINDS:
            namespaces = [control_plane] + ([naming.workloads_namespace(name)] if scope == "both" else [])
            for namespace in namespaces:
                for obj in await self.kube.list(api_version, kind, namespace, label_selector=selector):
                    meta = obj["metadata"]
                    if (kind, namespace, meta["name"]) not in wanted:
                        log.info(
                            "tenant %s: deleting %s %s/%s, no longer wanted",
                            name,
                            kind,
                            namespace,
                            meta["name"],
                            extra=about(name, kind, namespace, meta["name"]),
                        )
                        await self.kube.delete(api_version, kind, meta["name"], namespace, uid=meta["uid"])

    # -- the tenant's Service range -------------------------------------------------------------

    async def _claim_service_range(self, inp: render.TenantInput) -> str | None:
        """The tenant's own block of the Service pool, claimed by its API server's Service.

        The API server's Service takes the block's first address (the tenant's `kubernetes`
        Service): the super cluster's IP allocator makes that claim atomic, so two passes (or two
        operators) never give one block to two tenants, and the block is freed with the namespace.
        None for a Tenant provisioned before the pool (its API server's Service has an address
        outside it): its API server keeps the range its etcd records (`LEGACY_SERVICE_CIDR`).
        """
        cfg = self.config
        await self._ensure_service_pool()
        namespace = naming.control_plane_namespace(inp.name)
        pool = ipaddress.ip_network(cfg.service_pool)
        current = await self.kube.get_or_none("v1", "Service", naming.APISERVER, namespace)
        if current is not None:
            ip = current["spec"].get("clusterIP") or ""
            if is_ip(ip) and ipaddress.ip_address(ip) in pool:
                return naming.service_range_of(ip, cfg.service_prefix)
            return None
        ours = await self.kube.list("v1", "Service", label_selector=f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}")
        taken = {
            naming.service_range_of(ip, cfg.service_prefix)
            for s in ours
            if s["metadata"]["name"] == naming.APISERVER
            and is_ip(ip := s["spec"].get("clusterIP") or "")
            and ipaddress.ip_address(ip) in pool
        }
        tried = 0
        for block in naming.service_ranges(cfg.service_pool, cfg.service_prefix):
            if block in taken:
                continue
            claim = render.TenantInput(**{**inp.__dict__, "service_range": block})
            wanted = ("Service", naming.APISERVER)
            service = next(o for o in render.render_tenant(claim) if (o["kind"], o["metadata"]["name"]) == wanted)
            try:
                await self.kube.apply(service)
            except ApiError as error:
                # Another tenant's claim, or a super-cluster Service the allocator placed there.
                if error.status != 422 or "already allocated" not in str(error.body) or tried >= SERVICE_RANGE_ATTEMPTS:
                    raise
                tried += 1
                continue
            log.info("tenant %s: Service range %s", inp.name, block, extra=about(inp.name, "Service", namespace))
            return block
        raise StalledError(
            "ServiceRangesExhausted",
            f"no free Service range of /{cfg.service_prefix} left in the pool {cfg.service_pool} "
            f"({len(taken)} taken): widen STOCKADE_TENANT_SERVICE_POOL or lengthen STOCKADE_TENANT_SERVICE_PREFIX",
        )

    async def _ensure_service_pool(self) -> None:
        """The pool's ServiceCIDR, applied on every pass (an unchanged apply writes nothing) and
        waited for once per operator process: the super cluster allocates from a new one only a
        moment after it is created."""
        pool = render.service_pool(self.config)
        await self.kube.apply(pool)
        if self._pool_ready:
            return
        conditions: list[Any] = []
        for _ in range(POOL_READY_POLLS):
            obj = await self.kube.get(pool["apiVersion"], pool["kind"], pool["metadata"]["name"])
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                self._pool_ready = True
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(
            f"ServiceCIDR {naming.SERVICE_POOL} ({self.config.service_pool}) is not Ready after "
            f"{POOL_READY_POLLS * 0.5:.0f} s: {conditions}"
        )

    # -- versions --------------------------------------------------------------------------------

    @staticmethod
    def _version_gate(spec: TenantSpec, previous: TenantStatus) -> tuple[TenantSpec, str | None]:
        """Refuse a jump of more than one minor, or a downgrade, from the *running* version.

        The CRD compares with the previous spec only; this compares with what runs, so two quick
        edits cannot skip a minor. A refused spec keeps the running version.
        """
        running = previous.version
        if not running:
            return spec, None
        running_minor = int(running.split(".")[1])
        wanted = spec.kubernetes.version
        wanted_minor = spec.kubernetes.minor
        problem = None
        if wanted_minor > running_minor + 1:
            problem = (
                f"spec.kubernetes.version: {wanted} skips a minor; {running} runs now, "
                f"upgrade to 1.{running_minor + 1} first"
            )
        elif wanted_minor < running_minor:
            problem = f"spec.kubernetes.version: {wanted} is a downgrade from the running {running}"
        if problem is None:
            return spec, None
        kept = spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update={"version": running})})
        return kept, problem

    # -- PKI -------------------------------------------------------------------------------------

    async def _ensure_pki(
        self,
        body: Mapping[str, Any],
        inp: render.TenantInput,
        spec: TenantSpec,
        service: Mapping[str, Any],
        external: str | None,
        observed: Observed,
    ) -> tuple[certs.ControlPlanePKI, st.Check]:
        name = inp.name
        namespace = naming.control_plane_namespace(name)
        secrets = {
            s["metadata"]["name"]: s
            for s in await self.kube.list("v1", "Secret", namespace, label_selector=f"{naming.LABEL_TENANT}={name}")
        }
        stored = render.pki_from_secrets(secrets)
        cas, leaves = stored.cas, stored.leaves

        annotations = body["metadata"].get("annotations") or {}
        rotation = (TenantStatus.model_validate(body.get("status") or {}).rotation) or None
        want_ca = annotations.get(naming.ANNOTATION_ROTATE_CA)
        want_leaves = annotations.get(naming.ANNOTATION_ROTATE)
        rotate_ca = bool(want_ca) and want_ca != (rotation.ca if rotation else None) and bool(cas)
        rotate_leaves = (
            bool(want_leaves) and want_leaves != (rotation.certificates if rotation else None) and bool(leaves)
        )

        names = self._serving_names(name, spec, service, external, inp.service_range)
        # Key generation is CPU work: keep it off the event loop.
        plan = await asyncio.to_thread(
            certs.plan_pki,
            cas,
            leaves,
            stored.service_account_key,
            names,
            rotate_ca=rotate_ca,
            rotate_leaves=rotate_leaves,
        )
        if want_ca or want_leaves:
            observed.rotation = RotationStatus(ca=want_ca, certificates=want_leaves)
        if plan.changed:
            for secret in render.pki_secrets(inp, plan.bundle):
                await self.kube.apply(secret)
            summary = ", ".join(f"{n} ({why})" for n, why in sorted(plan.reissued.items()))
            log.info("tenant %s: issued %s", name, summary, extra=about(name, "Secret", namespace))
            observed.warnings.append(("CertificatesIssued", f"issued: {summary}"))
            if rotate_ca or rotate_leaves:
                # Recorded at once, not with the pass's final status: a pass that fails later
                # (or is retried) must not rotate a second time.
                patch = {"status": {"rotation": observed.rotation.wire() if observed.rotation else None}}
                await self.kube.patch_merge(API_VERSION, KIND, name, patch, subresource="status")
        for secret in render.kubeconfig_secrets(inp, plan.bundle, external):
            await self.kube.apply(secret)
        expiry = plan.bundle.earliest_expiry()
        return plan.bundle, st.Check(
            st.CERTIFICATES_READY,
            True,
            "Issued",
            f"all certificates valid; the earliest expires {expiry:%Y-%m-%d}",
        )

    def _serving_names(
        self, name: str, spec: TenantSpec, service: Mapping[str, Any], external: str | None, service_range: str | None
    ) -> certs.ServingNames:
        ips = ["127.0.0.1"]
        cluster_ip = service.get("spec", {}).get("clusterIP")  # the tenant's `kubernetes` Service too
        dns = list(naming.apiserver_dns_names(name))
        for extra in [
            *spec.control_plane.service.extra_sans,
            *([external_host(external)] if external else []),
        ]:
            (ips if is_ip(extra) else dns).append(extra)
        if cluster_ip and cluster_ip != "None":
            ips.append(cluster_ip)
        return certs.ServingNames(
            apiserver_dns=tuple(dict.fromkeys(dns)),
            apiserver_ips=tuple(dict.fromkeys(ips)),
            etcd_dns=naming.etcd_dns_names(name, spec.control_plane.replicas),
            etcd_ips=("127.0.0.1",),
            # The virtual node's address (a Tenant from before the pool has no kubelet API), and
            # the name the tenant's aggregation layer checks for metrics.k8s.io.
            kubelet_dns=(naming.virtual_node(name), naming.tenant_kubelet_service_dns()),
            kubelet_ips=(naming.kubelet_ip(service_range),) if service_range else (),
        )

    async def _external_endpoint(self, spec: TenantSpec, service: Mapping[str, Any]) -> str | None:
        service_type = spec.control_plane.service.type
        if service_type == ServiceType.LOAD_BALANCER:
            ingress = (service.get("status", {}).get("loadBalancer", {}) or {}).get("ingress") or []
            if ingress:
                host = ingress[0].get("ip") or ingress[0].get("hostname")
                return f"https://{host}:{naming.APISERVER_PORT}"
        elif service_type == ServiceType.NODE_PORT:
            port = next((p.get("nodePort") for p in service["spec"].get("ports", [])), None)
            nodes = await self.kube.list("v1", "Node")
            for node in nodes:
                for address in node.get("status", {}).get("addresses", []):
                    if address["type"] in ("ExternalIP", "InternalIP") and port:
                        return f"https://{address['address']}:{port}"
        return None

    async def _super_apiserver_ips(self) -> tuple[str, ...]:
        """Where the super cluster's API server listens, so tenant egress can exclude it."""
        try:
            endpoints = await self.kube.get("v1", "Endpoints", "kubernetes", "default")
        except ApiError:
            return ()
        return tuple(
            address["ip"] for subset in endpoints.get("subsets", []) for address in subset.get("addresses", [])
        )

    # -- observations ----------------------------------------------------------------------------

    async def _isolation_check(self, inp: render.TenantInput) -> st.Check:
        _, runtime_class = runtime_classes = inp.spec.runtime_classes(self.config.runtime_class)
        for wanted in dict.fromkeys(runtime_classes):
            if await self.kube.get_or_none("node.k8s.io/v1", "RuntimeClass", wanted) is None:
                return st.Check(
                    st.ISOLATION_READY,
                    False,
                    "RuntimeClassMissing",
                    f"RuntimeClass {wanted!r} does not exist in the super cluster; sandboxed pods cannot start",
                    stalls=True,
                )
        return st.Check(
            st.ISOLATION_READY,
            True,
            "Enforced",
            f"NetworkPolicies default-deny, Pod Security {inp.spec.workloads.pod_security.value}, "
            f"quota and RuntimeClass {runtime_class!r} in place",
        )

    async def _dns_check(self, inp: render.TenantInput) -> st.Check:
        """The tenant's cluster DNS: every replica ready (they answer only once CoreDNS has read
        the tenant's Services: its readiness probe)."""
        if inp.spec.suspended:
            return st.Check(st.DNS_READY, False, "Suspended", "scaled to zero")
        namespace = naming.control_plane_namespace(inp.name)
        wanted = inp.spec.control_plane.replicas
        obj = await self.kube.get_or_none("apps/v1", "Deployment", naming.DNS, namespace)
        status = (obj or {}).get("status", {})
        ready = status.get("readyReplicas", 0)
        address = naming.dns_service_ip(inp.service_range) if inp.service_range else "-"
        if obj is None or ready < wanted or status.get("observedGeneration", 0) < obj["metadata"]["generation"]:
            return st.Check(st.DNS_READY, False, "Starting", f"cluster DNS at {address}: {ready}/{wanted} ready")
        return st.Check(st.DNS_READY, True, "Ready", f"cluster DNS at {address}: {ready} replica(s) ready")

    async def _control_plane_check(
        self, inp: render.TenantInput, service: Mapping[str, Any], bundle: certs.ControlPlanePKI
    ) -> st.Check:
        namespace = naming.control_plane_namespace(inp.name)
        if inp.spec.suspended:
            return st.Check(st.CONTROL_PLANE_READY, False, "Suspended", "scaled to zero")
        wanted = inp.spec.control_plane.replicas
        obj = await self.kube.get_or_none("apps/v1", "StatefulSet", naming.CONTROL_PLANE, namespace)
        status = (obj or {}).get("status", {})
        ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
        if (
            obj is None
            or ready < wanted
            or updated < wanted
            or status.get("observedGeneration", 0) < obj["metadata"]["generation"]
        ):
            return st.Check(
                st.CONTROL_PLANE_READY,
                False,
                "Starting",
                f"control-plane replicas: {ready}/{wanted} ready, {updated}/{wanted} updated",
            )
        ok, detail = await self._probe_tenant(inp, service, bundle)
        if not ok:
            return st.Check(st.CONTROL_PLANE_READY, False, "APIServerNotReady", detail)
        return st.Check(
            st.CONTROL_PLANE_READY, True, "Ready", f"{wanted} control-plane replica(s) ready; /readyz answers ok"
        )

    def tenant_credentials(self, service: Mapping[str, Any], bundle: certs.ControlPlanePKI) -> Credentials:
        """How the operator reaches a tenant API server: its Service's ClusterIP (no cluster DNS
        needed, so an operator running on a node works too) with a short-lived bootstrap client."""
        cluster_ip = service["spec"]["clusterIP"]
        boot = certs.issue_bootstrap_client(bundle.cas[certs.CLUSTER_CA])
        return Credentials(
            server=f"https://{cluster_ip}:{naming.APISERVER_PORT}",
            ca_pem=bundle.cas[certs.CLUSTER_CA].cert_pem,
            cert_pem=boot.cert_pem,
            key_pem=boot.key_pem,
        )

    async def _probe_tenant(
        self, inp: render.TenantInput, service: Mapping[str, Any], bundle: certs.ControlPlanePKI
    ) -> tuple[bool, str]:
        credentials = self.tenant_credentials(service, bundle)
        try:
            async with self._tenant_client(credentials) as tenant:
                status, text = await tenant.get_raw("/readyz", timeout=10)
                if status != 200:
                    return False, f"/readyz answered {status}: {text[:200]}"
                ca = bundle.cas[certs.CLUSTER_CA].cert_pem
                pooled = tenant_rbac.pooled_objects(inp.service_range, ca) if inp.service_range else []
                for obj in [*tenant_rbac.objects(inp.spec), *tenant_rbac.node_name_policy(inp.name), *pooled]:
                    await tenant.apply(obj)
        except (OSError, TimeoutError, ApiError) as error:
            return False, f"tenant API server unreachable: {error}"
        return True, "ok"

    # -- status ----------------------------------------------------------------------------------

    async def _write_failed(self, body: Mapping[str, Any], ready: st.Check, events: EventSink) -> TenantStatus:
        """A pass that could not finish: `ready` says why (Ready=False), with a Warning Event."""
        metrics.RECONCILE_ERRORS.labels(ready.reason).inc()
        generation = body["metadata"].get("generation")
        checks = [ready, *st.progress_checks(ready, suspended=False)]
        before = TenantStatus.model_validate(body.get("status") or {}).conditions
        if not st.transitions(before, st.merge_conditions(before, [ready], generation)):
            # A repeated failure: no condition changes (which would post it), so post it here;
            # identical Events are counted on one (see events.post).
            await events("Warning", ready.reason, f"{ready.type}={ready.status}: {ready.message}")

        def failed(previous: TenantStatus) -> TenantStatus:
            phase = st.phase(
                ready=False,
                suspended=False,
                deleting=False,
                ever_ready=previous.version is not None,
                spec_changed=previous.observed_generation != generation,
                stalled=ready.stalls,
            )
            return previous.model_copy(
                update={
                    "phase": phase,
                    "observed_generation": generation,
                    "conditions": _keep_others(previous, st.merge_conditions(previous.conditions, checks, generation)),
                }
            )

        return await self._update_status(body, failed, events)

    async def _write_status(
        self,
        body: Mapping[str, Any],
        spec: TenantSpec,
        observed: Observed,
        events: EventSink,
    ) -> TenantStatus:
        meta = body["metadata"]
        name, generation = meta["name"], meta.get("generation")  # what this pass acted on
        ready = st.ready_check(observed.checks, spec.suspended)
        for reason, message in observed.warnings:
            await events("Normal" if reason == "CertificatesIssued" else "Warning", reason, message)

        def observed_status(previous: TenantStatus) -> TenantStatus:
            # Conditions owned by others (the syncer's WorkloadSyncReady) are kept as they are.
            checks = [ready, *st.progress_checks(ready, spec.suspended), *observed.checks]
            conditions = _keep_others(previous, st.merge_conditions(previous.conditions, checks, generation))
            phase = st.phase(
                ready=ready.ok is True,
                suspended=spec.suspended,
                deleting=False,
                ever_ready=previous.version is not None,
                spec_changed=previous.observed_generation != generation,
                stalled=ready.stalls,
            )
            return TenantStatus(
                phase=phase,
                observed_generation=generation,
                version=observed.running_version or previous.version,
                endpoint=observed.endpoint,
                kubeconfig_secret_ref=SecretReference(
                    namespace=naming.control_plane_namespace(name),
                    name=naming.kubeconfig_secret(certs.ADMIN),
                    key="kubeconfig-external" if observed.endpoint and observed.endpoint.external else "kubeconfig",
                ),
                namespaces=TenantNamespaces(
                    control_plane=naming.control_plane_namespace(name), workloads=naming.workloads_namespace(name)
                ),
                certificates_not_after=observed.certificates_not_after,
                rotation=observed.rotation,
                service_range=observed.service_range or previous.service_range,
                conditions=conditions,
                kopf=previous.kopf,
            )

        return await self._update_status(body, observed_status, events)

    async def _update_status(
        self, body: Mapping[str, Any], compute: Callable[[TenantStatus], TenantStatus], events: EventSink
    ) -> TenantStatus:
        """Write the status `compute` makes of the Tenant's current one, only over the version
        read (a resourceVersion precondition): when someone else wrote meanwhile (the syncer's
        health, another operator process), read again and compute again, so no writer's
        conditions are lost to another's stale copy."""
        attempts = 1
        while True:
            previous = TenantStatus.model_validate(body.get("status") or {})
            new = compute(previous)
            try:
                await self._patch_status(body, previous, new, events)
                metrics.observe_status(body["metadata"]["name"], new)
                return new
            except ApiError as error:
                if error.status != 409 or attempts == STATUS_WRITE_ATTEMPTS:
                    raise
            attempts += 1
            fresh = await self.kube.get_or_none(API_VERSION, KIND, body["metadata"]["name"])
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return new
            body = fresh

    async def _patch_status(
        self, body: Mapping[str, Any], previous: TenantStatus, new: TenantStatus, events: EventSink
    ) -> None:
        old_wire = previous.wire()
        new_wire = new.wire()
        old_wire.pop("kopf", None)
        new_wire.pop("kopf", None)
        if old_wire == new_wire:
            return  # an unchanged Tenant causes no writes
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {k: new_wire.get(k) for k in set(old_wire) | set(new_wire)},
        }
        await self.kube.patch_merge(API_VERSION, KIND, body["metadata"]["name"], patch, subresource="status")
        for condition in st.transitions(previous.conditions, new.conditions):
            if condition.type in (st.RECONCILING, st.STALLED):
                continue  # Ready tells the same story
            kind = "Normal" if condition.status == "True" else "Warning"
            await events(kind, condition.reason, f"{condition.type}={condition.status}: {condition.message}")

    async def set_condition(self, name: str, check: st.Check, events: EventSink) -> None:
        """Set one condition owned by someone else than the pass (e.g. the syncer's health)."""
        async with self.lock(name):
            body = await self.kube.get_or_none(API_VERSION, KIND, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            generation = body["metadata"].get("generation")

            def with_condition(previous: TenantStatus) -> TenantStatus:
                updated = st.merge_conditions(previous.conditions, [check], generation)
                return previous.model_copy(update={"conditions": _keep_others(previous, updated)})

            await self._update_status(body, with_condition, events)

    # -- deletion --------------------------------------------------------------------------------

    async def cleanup(self, name: str) -> str | None:
        """Delete what Stockade created for a tenant, workloads first. None when all is gone,
        else what is still being removed."""
        async with self.lock(name):
            for namespace in (naming.workloads_namespace(name), naming.control_plane_namespace(name)):
                existing = await self.kube.get_or_none("v1", "Namespace", namespace)
                if existing is None:
                    continue
                if not existing["metadata"].get("deletionTimestamp"):
                    await self.kube.delete("v1", "Namespace", namespace, uid=existing["metadata"]["uid"])
                return f"waiting for namespace {namespace} to be deleted"
        self._locks.pop(name, None)
        metrics.forget(name)
        return None


def _keep_others(previous: TenantStatus, updated: list[Any]) -> list[Any]:
    """Conditions of `updated`, plus previous ones of other types (kept as they were)."""
    types = {c.type for c in updated}
    return updated + [c for c in previous.conditions if c.type not in types]


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def external_host(url: str) -> str:
    host = url.split("://", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]")
