"""Tenant objects ⇄ super-cluster objects (pure). The one place that maps names and specs.

Every tenant object lands in the tenant's single workloads namespace, under a name built from
its own name, its namespace and a hash of both: deterministic, at most 63 characters, and never
colliding (two tenant objects with different (namespace, name) get different hashes).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade import naming

# Annotations on super objects naming the tenant object they mirror.
ANNOTATION_NAMESPACE = "stockade.dev/tenant-namespace"
ANNOTATION_NAME = "stockade.dev/tenant-name"
ANNOTATION_UID = "stockade.dev/tenant-uid"
# On a tenant Service: the ClusterIP of its super-cluster counterpart.
ANNOTATION_SUPER_CLUSTER_IP = "stockade.dev/super-cluster-ip"
# Labels on super objects: ownership, and the tenant namespace (Service selectors use it).
LABEL_SYNCED = "stockade.dev/synced"
LABEL_NAMESPACE = "stockade.dev/tenant-namespace"
PROTECTED_PREFIX = "stockade.dev/"

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "stockade-tenant-token"
REJECTED_REASON = "StockadeRejected"

# Sysctls Pod Security "baseline" allows; any other is refused.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# Volume types Pod Security "restricted" allows.
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


def super_name(namespace: str, name: str) -> str:
    """`<name>-<namespace>-<hash>`, cut to 63 characters, starting with a letter (Service names must)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[: naming.HASH_LENGTH]
    head = f"{name}-{namespace}"[: naming.MAX_NAME - naming.HASH_LENGTH - 1].rstrip("-.")
    if not head[:1].isalpha():
        head = f"x{head}"[: naming.MAX_NAME - naming.HASH_LENGTH - 1].rstrip("-.")
    return f"{head}-{digest}"


@dataclass(frozen=True)
class TenantContext:
    """What translation needs to know about the tenant."""

    tenant: str
    runtime_class: str
    pod_security: str  # "restricted" or "baseline"
    apiserver_host: str  # the tenant API server, as reachable from tenant pods (its Service ClusterIP)
    apiserver_port: int
    default_requests: Mapping[str, str]
    default_limits: Mapping[str, str]
    virtual_node: str

    @property
    def namespace(self) -> str:
        return naming.workloads_namespace(self.tenant)


def tenant_key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the tenant object a super object mirrors, from its annotations."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if ANNOTATION_NAMESPACE in annotations and ANNOTATION_NAME in annotations:
        return annotations[ANNOTATION_NAMESPACE], annotations[ANNOTATION_NAME]
    return None


def _user_metadata(values: Mapping[str, str] | None) -> dict[str, str]:
    """A tenant's labels or annotations, minus Stockade's own (protected from the tenant)."""
    return {k: v for k, v in (values or {}).items() if not k.startswith(PROTECTED_PREFIX)}


def super_metadata(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    meta = obj["metadata"]
    labels = _user_metadata(meta.get("labels"))
    labels.update({naming.LABEL_TENANT: ctx.tenant, LABEL_SYNCED: "true", LABEL_NAMESPACE: meta["namespace"]})
    annotations = _user_metadata(meta.get("annotations"))
    annotations.update(
        {ANNOTATION_NAMESPACE: meta["namespace"], ANNOTATION_NAME: meta["name"], ANNOTATION_UID: meta["uid"]}
    )
    # Client-side bookkeeping of the tenant's tools must not leak into the super object.
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return {
        "name": super_name(meta["namespace"], meta["name"]),
        "namespace": ctx.namespace,
        "labels": labels,
        "annotations": annotations,
    }


# -- refusals ----------------------------------------------------------------------------------


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    return [(kind, i, c) for kind in CONTAINER_KINDS for i, c in enumerate(spec.get(kind) or [])]


def pod_refusal(pod: Mapping[str, Any], ctx: TenantContext) -> str | None:
    """Why a tenant pod may not run in the super cluster, naming the field; None if it may.

    Refused, never silently stripped: host access, privilege, added capabilities, unsafe sysctls,
    another runtime class, unmasked /proc — in every container kind — and, at level restricted,
    the rest of Pod Security "restricted".
    """
    spec = pod.get("spec") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            return f"spec.{field}: host namespaces are not allowed"
    if spec.get("runtimeClassName") not in (None, "", ctx.runtime_class):
        return f"spec.runtimeClassName: {spec['runtimeClassName']!r} is not allowed; pods run in {ctx.runtime_class!r}"
    for i, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume:
            return f"spec.volumes[{i}].hostPath: host paths are not allowed"
    pod_context = spec.get("securityContext") or {}
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            return f"spec.securityContext.sysctls: {sysctl.get('name')!r} is not a safe sysctl"
    for kind, i, container in _containers(spec):
        path = f"spec.{kind}[{i}]"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            return f"{path}.securityContext.privileged: privileged containers are not allowed"
        added = (sc.get("capabilities") or {}).get("add") or []
        if [cap for cap in added if cap != "NET_BIND_SERVICE"]:
            return f"{path}.securityContext.capabilities.add: {added} may not be added"
        if sc.get("procMount") not in (None, "Default"):
            return f"{path}.securityContext.procMount: only Default is allowed"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                return f"{path}.ports.hostPort: host ports are not allowed"
    if ctx.pod_security == "restricted":
        return _restricted_refusal(spec)
    return None


def _restricted_refusal(spec: Mapping[str, Any]) -> str | None:
    pod_context = spec.get("securityContext") or {}
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            return f"spec.volumes[{i}]: volume type {sorted(kinds)} is not allowed by Pod Security restricted"
    for kind, i, container in _containers(spec):
        path = f"spec.{kind}[{i}].securityContext"
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            return f"{path}.allowPrivilegeEscalation: must be false (Pod Security restricted)"
        if sc.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            return f"{path}.runAsNonRoot: must be true (Pod Security restricted)"
        if sc.get("runAsUser", pod_context.get("runAsUser")) == 0:
            return f"{path}.runAsUser: must not be 0 (Pod Security restricted)"
        seccomp = (sc.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            return f"{path}.seccompProfile.type: must be RuntimeDefault or Localhost (Pod Security restricted)"
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            return f"{path}.capabilities.drop: must include ALL (Pod Security restricted)"
    return None


def service_refusal(service: Mapping[str, Any]) -> str | None:
    spec = service.get("spec") or {}
    if spec.get("externalIPs"):
        return "spec.externalIPs: not allowed (CVE-2020-8554)"
    if spec.get("type") == "NodePort":
        return "spec.type: NodePort services would open ports on the super cluster's nodes"
    return None


def endpoints_refusal(endpoints: Mapping[str, Any], tenant_pod_ips: set[str]) -> str | None:
    """Selector-less Services may point only at the tenant's own pods (CVE-2021-25740)."""
    for subset in endpoints.get("subsets") or []:
        for address in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
            if address.get("ip") not in tenant_pod_ips:
                return f"subsets.addresses: {address.get('ip')} is not an IP of one of this tenant's pods"
    return None


# -- down: tenant → super ----------------------------------------------------------------------


def _fill_resources(container: dict[str, Any], ctx: TenantContext) -> None:
    """Every container gets requests and limits: a VM sandbox is sized from them.

    As Kubernetes does: a missing request takes the container's own limit if it has one, else
    the tenant's default; a missing limit takes the container's own request if it has one (a
    limit below the request would be invalid), else the default.
    """
    resources = container.setdefault("resources", {})
    own_limits = dict(resources.get("limits") or {})
    own_requests = dict(resources.get("requests") or {})
    requests = resources["requests"] = dict(own_requests)
    limits = resources["limits"] = dict(own_limits)
    for resource, amount in ctx.default_requests.items():
        requests.setdefault(resource, own_limits.get(resource, amount))
    for resource, amount in ctx.default_limits.items():
        limits.setdefault(resource, own_requests.get(resource, amount))


def _rewrite_field_ref(ref: dict[str, Any]) -> None:
    """The super pod's own name and namespace differ: read the tenant's from annotations."""
    mapping = {
        "metadata.name": f"metadata.annotations['{ANNOTATION_NAME}']",
        "metadata.namespace": f"metadata.annotations['{ANNOTATION_NAMESPACE}']",
        "metadata.uid": f"metadata.annotations['{ANNOTATION_UID}']",
    }
    if ref.get("fieldPath") in mapping:
        ref["fieldPath"] = mapping[ref["fieldPath"]]
    ref.pop("apiVersion", None)


def _is_service_account_volume(volume: Mapping[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in source for source in sources)


def translate_pod(pod: Mapping[str, Any], ctx: TenantContext, token_secret: str | None) -> dict[str, Any]:
    """The super pod for a tenant pod (which must already have passed `pod_refusal`)."""
    namespace = pod["metadata"]["namespace"]
    spec = copy.deepcopy(dict(pod["spec"]))

    def ref(name: str) -> str:
        return super_name(namespace, name)

    for field in (
        "nodeName",
        "overhead",
        "nodeSelector",
        "affinity",
        "priority",
        "priorityClassName",
        "schedulerName",
        "preemptionPolicy",
        "serviceAccount",
        "ephemeralContainers",
    ):
        spec.pop(field, None)
    spec["runtimeClassName"] = ctx.runtime_class
    spec["automountServiceAccountToken"] = False  # no super-cluster credential in a tenant pod
    spec["enableServiceLinks"] = False  # the super cluster's Services stay invisible
    spec["serviceAccountName"] = ref(pod["spec"].get("serviceAccountName") or "default")
    spec["hostAliases"] = [
        *(spec.get("hostAliases") or []),
        {"ip": ctx.apiserver_host, "hostnames": ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]},
    ]
    spec["imagePullSecrets"] = [{"name": ref(s["name"])} for s in spec.get("imagePullSecrets") or []]

    volumes = []
    for volume in spec.get("volumes") or []:
        volume = dict(volume)
        if _is_service_account_volume(volume):
            if token_secret is None:
                continue
            volume = {"name": volume["name"], "secret": {"secretName": token_secret, "defaultMode": 0o644}}
        elif "configMap" in volume:
            volume["configMap"] = {**volume["configMap"], "name": ref(volume["configMap"]["name"])}
        elif "secret" in volume:
            volume["secret"] = {**volume["secret"], "secretName": ref(volume["secret"]["secretName"])}
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            volume["persistentVolumeClaim"] = {**claim, "claimName": ref(claim["claimName"])}
        elif "projected" in volume:
            sources = []
            for source in volume["projected"].get("sources") or []:
                source = copy.deepcopy(source)
                if "configMap" in source:
                    source["configMap"]["name"] = ref(source["configMap"]["name"])
                if "secret" in source:
                    source["secret"]["name"] = ref(source["secret"]["name"])
                for item in (source.get("downwardAPI") or {}).get("items") or []:
                    if "fieldRef" in item:
                        _rewrite_field_ref(item["fieldRef"])
                sources.append(source)
            volume["projected"] = {**volume["projected"], "sources": sources}
        elif "downwardAPI" in volume:
            volume["downwardAPI"] = copy.deepcopy(volume["downwardAPI"])
            for item in volume["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    _rewrite_field_ref(item["fieldRef"])
        volumes.append(volume)
    spec["volumes"] = volumes

    api_env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": ctx.apiserver_host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(ctx.apiserver_port)},
        {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": str(ctx.apiserver_port)},
    ]
    for kind in ("initContainers", "containers"):
        containers = []
        for container in spec.get(kind) or []:
            container = copy.deepcopy(container)
            env = [e for e in container.get("env") or [] if not e["name"].startswith("KUBERNETES_SERVICE_")]
            for var in env:
                source = var.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    source["configMapKeyRef"]["name"] = ref(source["configMapKeyRef"]["name"])
                if "secretKeyRef" in source:
                    source["secretKeyRef"]["name"] = ref(source["secretKeyRef"]["name"])
                if "fieldRef" in source:
                    _rewrite_field_ref(source["fieldRef"])
            container["env"] = env + api_env
            for env_from in container.get("envFrom") or []:
                for key in ("configMapRef", "secretRef"):
                    if key in env_from:
                        env_from[key]["name"] = ref(env_from[key]["name"])
            _fill_resources(container, ctx)
            containers.append(container)
        if containers:
            spec[kind] = containers

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": super_metadata(pod, ctx),
        "spec": spec,
    }


def translate_config(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    """ConfigMaps and Secrets: same data under the super name."""
    out: dict[str, Any] = {"apiVersion": "v1", "kind": obj["kind"], "metadata": super_metadata(obj, ctx)}
    for field in ("data", "binaryData", "stringData", "type", "immutable"):
        if field in obj:
            out[field] = obj[field]
    return out


def translate_service_account(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": super_metadata(obj, ctx),
        "automountServiceAccountToken": False,
    }


def translate_pvc(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    spec = {k: v for k, v in obj["spec"].items() if k in ("accessModes", "resources", "storageClassName", "volumeMode")}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": super_metadata(obj, ctx), "spec": spec}


def translate_service(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    spec = obj["spec"]
    out_spec: dict[str, Any] = {
        "type": spec.get("type", "ClusterIP") if spec.get("type") != "ExternalName" else "ClusterIP",
        "ports": [{k: v for k, v in p.items() if k != "nodePort"} for p in spec.get("ports") or []],
    }
    if spec.get("selector"):
        out_spec["selector"] = {
            **spec["selector"],
            LABEL_NAMESPACE: obj["metadata"]["namespace"],
            naming.LABEL_TENANT: ctx.tenant,
        }
    for field in ("sessionAffinity", "publishNotReadyAddresses", "ipFamilyPolicy"):
        if field in spec:
            out_spec[field] = spec[field]
    return {"apiVersion": "v1", "kind": "Service", "metadata": super_metadata(obj, ctx), "spec": out_spec}


def translate_endpoints(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    subsets = copy.deepcopy(obj.get("subsets") or [])
    for subset in subsets:
        for address in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
            address.pop("targetRef", None)
            address.pop("nodeName", None)
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": super_metadata(obj, ctx), "subsets": subsets}


def token_secret(pod: Mapping[str, Any], ctx: TenantContext, token: str, ca_pem: bytes, expires: str) -> dict[str, Any]:
    """The tenant-issued service-account token, mounted where Kubernetes clients look for it."""
    import base64

    meta = super_metadata(pod, ctx)
    meta["name"] = naming.fit(f"{meta['name']}-token")
    meta["annotations"]["stockade.dev/token-expires"] = expires
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {
            "token": base64.b64encode(token.encode()).decode(),
            "ca.crt": base64.b64encode(ca_pem).decode(),
            "namespace": base64.b64encode(pod["metadata"]["namespace"].encode()).decode(),
        },
    }


def token_secret_name(pod: Mapping[str, Any]) -> str:
    return naming.fit(f"{super_name(pod['metadata']['namespace'], pod['metadata']['name'])}-token")


# -- up: super → tenant ------------------------------------------------------------------------

POD_STATUS_FIELDS = (
    "phase",
    "conditions",
    "podIP",
    "podIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
    "reason",
    "message",
    # not qosClass: the tenant computes its own from its pod, and it is immutable
)


def tenant_pod_status(super_pod: Mapping[str, Any], virtual_node_ip: str) -> dict[str, Any]:
    """The tenant pod's status from the super pod's; the super node's address stays hidden."""
    status = super_pod.get("status") or {}
    out = {field: copy.deepcopy(status[field]) for field in POD_STATUS_FIELDS if field in status}
    if status.get("hostIP"):
        out["hostIP"] = virtual_node_ip
        out["hostIPs"] = [{"ip": virtual_node_ip}]
    return out


VOLUME_DRIVER = "volumes.stockade.dev"


def tenant_volume_name(namespace: str, name: str) -> str:
    return naming.fit(f"pv-{super_name(namespace, name)}")


def tenant_volume(claim: Mapping[str, Any], super_claim: Mapping[str, Any]) -> dict[str, Any]:
    """A tenant PersistentVolume standing for the super cluster's volume of a bound claim, pre-bound
    to the tenant claim. Its source names a driver no tenant node has: it is a record, never mounted."""
    meta = claim["metadata"]
    status = super_claim.get("status") or {}
    spec: dict[str, Any] = {
        "capacity": status.get("capacity") or claim["spec"].get("resources", {}).get("requests", {}),
        "accessModes": status.get("accessModes") or claim["spec"].get("accessModes") or ["ReadWriteOnce"],
        # The syncer deletes it with its claim; the tenant's controllers must not try to.
        "persistentVolumeReclaimPolicy": "Retain",
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                     "name": meta["name"], "uid": meta["uid"]},
        "csi": {"driver": VOLUME_DRIVER, "volumeHandle": super_claim["metadata"]["name"]},
    }  # fmt: skip
    if claim["spec"].get("storageClassName"):
        spec["storageClassName"] = claim["spec"]["storageClassName"]
    if claim["spec"].get("volumeMode"):
        spec["volumeMode"] = claim["spec"]["volumeMode"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": tenant_volume_name(meta["namespace"], meta["name"]),
                     "labels": {LABEL_SYNCED: "true", LABEL_NAMESPACE: meta["namespace"]}},
        "spec": spec,
    }  # fmt: skip


def rejected_condition(message: str, now: str) -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": REJECTED_REASON,
        "message": message,
        "lastTransitionTime": now,
    }


def virtual_node(ctx: TenantContext, capacity: Mapping[str, str], now: str, node_ip: str) -> dict[str, Any]:
    """The tenant's one virtual node: its capacity is the tenant's quota; pods bound to it run
    in the super cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": ctx.virtual_node,
            "labels": {
                "kubernetes.io/hostname": ctx.virtual_node,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "stockade-virtual",
                "type": "virtual-kubelet",
            },
        },
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "StockadeSyncerReady",
                    "message": "pods bound here run sandboxed in the super cluster",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": ctx.virtual_node},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "stockade",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": f"sandbox://{ctx.runtime_class}",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
