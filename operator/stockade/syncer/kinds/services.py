"""Services, and the Endpoints and EndpointSlices a tenant writes for selector-less Services:
ClusterIP only, pointing only at the tenant's own pods. A tenant Service has the same ClusterIP in
the super cluster (the tenant's Service range is its block of the super cluster's pool), so the
super cluster's Service proxy routes the address the tenant sees."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from typing import Any

from stockade import naming
from stockade.naming import LABEL_NAMESPACE
from stockade.syncer import metrics
from stockade.syncer.context import TenantContext
from stockade.syncer.kinds import base
from stockade.syncer.kinds.base import Kind
from stockade.syncer.translate import carried_label, super_metadata, super_name


def cluster_ips(service: Mapping[str, Any]) -> list[str]:
    """The Service's ClusterIPs (none for a headless Service)."""
    spec = service.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip != "None"]


def service_refusal(service: Mapping[str, Any], service_range: str) -> str | None:
    spec = service.get("spec") or {}
    if spec.get("externalIPs"):
        return "spec.externalIPs: not allowed (CVE-2020-8554)"
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        return f"spec.type: {spec['type']} services would open ports on the super cluster's nodes; use ClusterIP"
    if not service_range:  # a Tenant from before the pool: the super cluster picks the address
        return None
    network = ipaddress.ip_network(service_range)
    for ip in cluster_ips(service):
        if ipaddress.ip_address(ip) not in network:
            return (
                f"spec.clusterIP: {ip} is outside this cluster's Service range {service_range} "
                "(a Service created before the range was assigned): delete and re-create it"
            )
    return None


def endpoints_refusal(endpoints: Mapping[str, Any], tenant_pod_ips: set[str]) -> str | None:
    """Selector-less Services may point only at the tenant's own pods (CVE-2021-25740)."""
    for subset in endpoints.get("subsets") or []:
        for address in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
            if address.get("ip") not in tenant_pod_ips:
                return f"subsets.addresses: {address.get('ip')} is not an IP of one of this tenant's pods"
    return None


def endpoint_slice_refusal(slice_: Mapping[str, Any], tenant_pod_ips: set[str]) -> str | None:
    """As `endpoints_refusal`, for an EndpointSlice: addresses of the tenant's own pods only."""
    if slice_.get("addressType") not in ("IPv4", "IPv6"):
        return f"addressType: {slice_.get('addressType')!r}: only IPv4 and IPv6 slices are routed"
    for i, endpoint in enumerate(slice_.get("endpoints") or []):
        for address in endpoint.get("addresses") or []:
            if address not in tenant_pod_ips:
                return f"endpoints[{i}].addresses: {address} is not an IP of one of this tenant's pods"
    return None


def translate_service(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    """A ClusterIP Service (NodePort and LoadBalancer are refused, ExternalName is not synced: it is
    a name, not an address the super cluster routes)."""
    spec = obj["spec"]
    out_spec: dict[str, Any] = {
        "type": "ClusterIP",
        "ports": [{k: v for k, v in p.items() if k != "nodePort"} for p in spec.get("ports") or []],
    }
    headless = spec.get("clusterIP") == "None"
    if ctx.service_range or headless:
        # The same address as in the tenant (headless stays headless): see `service_refusal`.
        out_spec["clusterIP"] = spec.get("clusterIP") or "None"
    if spec.get("selector"):
        out_spec["selector"] = {
            **{carried_label(k): v for k, v in spec["selector"].items()},
            LABEL_NAMESPACE: obj["metadata"]["namespace"],
            naming.LABEL_TENANT: ctx.tenant,
        }
    for key in (
        "sessionAffinity",
        "sessionAffinityConfig",
        "publishNotReadyAddresses",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
    ):
        if key in spec:
            out_spec[key] = spec[key]
    return {"apiVersion": "v1", "kind": "Service", "metadata": super_metadata(obj, ctx), "spec": out_spec}


def translate_endpoints(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    subsets = copy.deepcopy(obj.get("subsets") or [])
    for subset in subsets:
        for address in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
            address.pop("targetRef", None)
            address.pop("nodeName", None)
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": super_metadata(obj, ctx), "subsets": subsets}


# Slices the tenant's own controllers make: those of Services with a selector are computed in the
# super cluster, those mirrored from Endpoints come there from the mirrored Endpoints.
TENANT_CONTROLLERS = frozenset({"endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io"})


def translate_endpoint_slice(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    """A tenant-written EndpointSlice for its super Service, managed by Stockade (the super cluster's
    controllers leave it alone); the addresses and ports only, no node or pod names."""
    meta = super_metadata(obj, ctx)
    service = (obj["metadata"].get("labels") or {}).get(naming.SLICE_SERVICE_LABEL, "")
    meta["labels"].update(
        {
            naming.SLICE_SERVICE_LABEL: super_name(obj["metadata"]["namespace"], service),
            naming.SLICE_MANAGED_BY_LABEL: naming.SLICE_MANAGER,
        }
    )
    endpoints = [
        {key: copy.deepcopy(endpoint[key]) for key in ("addresses", "conditions") if key in endpoint}
        for endpoint in obj.get("endpoints") or []
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": obj["addressType"],
        "endpoints": endpoints,
        "ports": copy.deepcopy(obj.get("ports") or []),
    }


def _is_api_service(obj: Mapping[str, Any]) -> bool:
    """`default/kubernetes`: the tenant API server's own Service (and its Endpoints)."""
    return (obj["metadata"].get("namespace"), obj["metadata"]["name"]) == ("default", "kubernetes")


class Services(Kind):
    kind = "Service"

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        # ExternalName is a name, not an address: nothing for the super cluster to route (the
        # tenant's DNS answers it).
        return super().mirrored(obj) and not _is_api_service(obj) and obj["spec"].get("type") != "ExternalName"

    def refusal(self, obj: Mapping[str, Any]) -> str | None:
        return service_refusal(obj, self.sides.ctx.service_range)

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_service(obj, self.sides.ctx)

    def replaced(self, desired: Mapping[str, Any], shadow: Mapping[str, Any]) -> bool:
        """A super Service of another address (made before the tenant had its range) is re-created:
        a ClusterIP cannot change."""
        wanted = desired["spec"].get("clusterIP")
        return wanted is not None and wanted != (shadow.get("spec") or {}).get("clusterIP")

    async def up(self, obj: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        status = {"loadBalancer": (shadow.get("status") or {}).get("loadBalancer") or {}}
        if base.subset(status, obj.get("status") or {}) or status == {"loadBalancer": {}}:
            return
        await self.sides.tenant_api.patch_merge(
            "v1", self.kind, meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )
        metrics.SYNCED.labels(self.sides.tenant, self.kind, "up").inc()


class Endpoints(Kind):
    kind = "Endpoints"

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        """Only those of selector-less Services: the others are computed in the super cluster."""
        if not super().mirrored(obj) or _is_api_service(obj):
            return False
        service = self.sides.in_tenant(Services.kind, (obj["metadata"]["namespace"], obj["metadata"]["name"]))
        return service is not None and not service["spec"].get("selector")

    def refusal(self, obj: Mapping[str, Any]) -> str | None:
        return endpoints_refusal(obj, _tenant_pod_ips(self.sides))

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_endpoints(obj, self.sides.ctx)


class EndpointSlices(Kind):
    kind = "EndpointSlice"
    api_version = "discovery.k8s.io/v1"

    def mirrored(self, obj: Mapping[str, Any]) -> bool:
        """Only those the tenant writes itself, for a selector-less Service."""
        labels = obj["metadata"].get("labels") or {}
        if not super().mirrored(obj) or labels.get(naming.SLICE_MANAGED_BY_LABEL) in TENANT_CONTROLLERS:
            return False
        key = (obj["metadata"]["namespace"], labels.get(naming.SLICE_SERVICE_LABEL, ""))
        service = self.sides.in_tenant(Services.kind, key)
        return service is not None and not _is_api_service(service) and not service["spec"].get("selector")

    def refusal(self, obj: Mapping[str, Any]) -> str | None:
        return endpoint_slice_refusal(obj, _tenant_pod_ips(self.sides))

    def translate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return translate_endpoint_slice(obj, self.sides.ctx)


def _tenant_pod_ips(sides: base.Sides) -> set[str]:
    """The addresses of the tenant's running pods: what its Endpoints may point at."""
    return {
        ip["ip"] for _, shadow in sides.super_objects("Pod") for ip in (shadow.get("status") or {}).get("podIPs") or []
    }
