"""A tenant pod as the super cluster runs it (pure): the refusal policy, the translation of its
spec (names, volumes, env, DNS, resources, the network gate, the service-account token), and
what of the super pod's status the tenant is shown."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stockade import naming
from stockade.naming import (
    ANNOTATION_NAME,
    ANNOTATION_NAMESPACE,
    ANNOTATION_TENANT_ANNOTATIONS,
    ANNOTATION_TENANT_LABELS,
    ANNOTATION_UID,
    TOKEN_EXPIRES_ANNOTATION,
)
from stockade.syncer.context import HOSTS_FILE, HOSTS_VOLUME, NETGATE_CONTAINER, RESERVED_PREFIX, TenantContext
from stockade.syncer.translate import carried_annotation, carried_label, super_metadata, super_name

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "stockade-tenant-token"
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
# SELinux types Pod Security "baseline" allows.
SAFE_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HANDLERS = ("postStart", "preStop")
NO_NAMESERVER = "127.0.0.1"
# The token lifetime asked for when a projected token names none (the API's default).
TOKEN_SECONDS = 3600
# The tenant's CA bundle its controller-manager puts in every namespace: not mirrored, read from
# the pod's token Secret instead.
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


# -- refusals --


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    return [(kind, i, c) for kind in CONTAINER_KINDS for i, c in enumerate(spec.get(kind) or [])]


def pod_refusal(pod: Mapping[str, Any], ctx: TenantContext) -> str | None:
    """Why a tenant pod may not run in the super cluster, naming the field; None if it may.

    Refused, never silently stripped: host access, privilege, added capabilities, unsafe sysctls,
    another runtime class, unmasked /proc, SELinux/AppArmor/seccomp opt-outs, probe and lifecycle
    hosts, volume types outside the Tenant's allowlist, claims on super-cluster resources — in every
    container kind — and, at level restricted, the rest of Pod Security "restricted".
    """
    spec = pod.get("spec") or {}
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            return f"spec.{field_name}: host namespaces are not allowed"
    if spec.get("runtimeClassName") not in (None, "", ctx.runtime_class):
        return f"spec.runtimeClassName: {spec['runtimeClassName']!r} is not allowed; pods run in {ctx.runtime_class!r}"
    if spec.get("resourceClaims"):
        return "spec.resourceClaims: dynamic resource claims are not supported for tenant pods"
    if spec.get("setHostnameAsFQDN") and spec.get("subdomain"):
        return (
            "spec.setHostnameAsFQDN: not supported: a pod's fully qualified name is the tenant's only in "
            "its hosts file, not as its hostname"
        )
    for i, volume in enumerate(spec.get("volumes") or []):
        if str(volume.get("name", "")).startswith(RESERVED_PREFIX):
            return f"spec.volumes[{i}].name: {volume['name']!r}: names starting with {RESERVED_PREFIX!r} are reserved"
        kinds = sorted(set(volume) - {"name"})
        if "hostPath" in kinds:
            return f"spec.volumes[{i}].hostPath: host paths are not allowed"
        if not set(kinds) <= ctx.volume_types:
            allowed = ", ".join(sorted(ctx.volume_types))
            return f"spec.volumes[{i}].{kinds[0] if kinds else 'name'}: volume type not allowed (allowed: {allowed})"
    pod_context = spec.get("securityContext") or {}
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            return f"spec.securityContext.sysctls: {sysctl.get('name')!r} is not a safe sysctl"
    if refusal := _opt_out_refusal("spec.securityContext", pod_context):
        return refusal
    for kind, i, container in _containers(spec):
        path = f"spec.{kind}[{i}]"
        if str(container.get("name", "")).startswith(RESERVED_PREFIX):
            return f"{path}.name: {container['name']!r}: names starting with {RESERVED_PREFIX!r} are reserved"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            return f"{path}.securityContext.privileged: privileged containers are not allowed"
        added = (sc.get("capabilities") or {}).get("add") or []
        if [cap for cap in added if cap != "NET_BIND_SERVICE"]:
            return f"{path}.securityContext.capabilities.add: {added} may not be added"
        if sc.get("procMount") not in (None, "Default"):
            return f"{path}.securityContext.procMount: only Default is allowed"
        if refusal := _opt_out_refusal(f"{path}.securityContext", sc):
            return refusal
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                return f"{path}.ports.hostPort: host ports are not allowed"
        if refusal := _handler_host_refusal(path, container):
            return refusal
    if ctx.pod_security == "restricted":
        return _restricted_refusal(spec)
    return None


def _opt_out_refusal(path: str, sc: Mapping[str, Any]) -> str | None:
    """SELinux, AppArmor and seccomp settings that would switch the node's confinement off."""
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SAFE_SELINUX_TYPES:
        return f"{path}.seLinuxOptions.type: {selinux['type']!r} is not allowed"
    for key in ("user", "role"):
        if selinux.get(key):
            return f"{path}.seLinuxOptions.{key}: may not be set"
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        return f"{path}.appArmorProfile.type: Unconfined is not allowed"
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        return f"{path}.seccompProfile.type: Unconfined is not allowed"
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        return f"{path}.windowsOptions.hostProcess: host processes are not allowed"
    return None


def _handler_host_refusal(path: str, container: Mapping[str, Any]) -> str | None:
    """Probes and lifecycle handlers are run by the node's kubelet, from the node: a `host` would
    let a tenant make the node connect anywhere (its own ports, the metadata service, other pods)."""
    handlers = [(probe, container.get(probe)) for probe in PROBES]
    handlers += [(f"lifecycle.{h}", (container.get("lifecycle") or {}).get(h)) for h in LIFECYCLE_HANDLERS]
    for where, handler in handlers:
        for action in ("httpGet", "tcpSocket"):
            host = ((handler or {}).get(action) or {}).get("host")
            if host:
                return f"{path}.{where}.{action}.host: {host!r} is not allowed; probes go to the pod's own address"
    return None


def _restricted_refusal(spec: Mapping[str, Any]) -> str | None:
    pod_context = spec.get("securityContext") or {}
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


# -- down: tenant → super --


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


_ITEM_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
# Whole maps of the tenant pod, each read from the annotation that holds it as its kubelet writes it.
WHOLE_MAPS = {"metadata.labels": ("labels", ANNOTATION_TENANT_LABELS),
              "metadata.annotations": ("annotations", ANNOTATION_TENANT_ANNOTATIONS)}  # fmt: skip


def _rewrite_field_ref(ref: dict[str, Any]) -> None:
    """In a downward-API volume the super pod is read: its own name, namespace and uid differ, so
    read the tenant's from annotations; single labels and annotations from their carried keys; all
    of them from the annotation that holds the tenant pod's map (`kubelet_map_text`)."""
    mapping = {
        "metadata.name": f"metadata.annotations['{ANNOTATION_NAME}']",
        "metadata.namespace": f"metadata.annotations['{ANNOTATION_NAMESPACE}']",
        "metadata.uid": f"metadata.annotations['{ANNOTATION_UID}']",
        **{path: f"metadata.annotations['{key}']" for path, (_, key) in WHOLE_MAPS.items()},
    }
    path = ref.get("fieldPath", "")
    if path in mapping:
        ref["fieldPath"] = mapping[path]
    elif match := _ITEM_KEY.match(path):
        carry = carried_label if match[1] == "labels" else carried_annotation
        ref["fieldPath"] = f"metadata.{match[1]}['{carry(match[2])}']"
    ref.pop("apiVersion", None)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}  # fmt: skip


def _go_quote(text: str) -> str:
    """`text` as Go's `%q` writes it (strconv.Quote): printable characters as they are."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return f'"{"".join(out)}"'


def kubelet_map_text(values: Mapping[str, str]) -> str:
    """Labels or annotations as the kubelet writes them into a downward-API file: `key="value"`
    lines in key order (Go's %q quoting), no newline at the end."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def _whole_map_annotations(pod: Mapping[str, Any], volumes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The annotations holding the tenant pod's whole labels/annotations, for the (translated)
    downward-API volumes that read them; none if no volume does (they would only weigh)."""
    paths: set[str] = set()
    for volume in volumes:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        for source in sources:
            for item in (source.get("downwardAPI") or {}).get("items") or []:
                paths.add((item.get("fieldRef") or {}).get("fieldPath", ""))
    return {
        key: kubelet_map_text(pod["metadata"].get(field) or {})
        for field, key in WHOLE_MAPS.values()
        if f"metadata.annotations['{key}']" in paths
    }


def _env_field_value(path: str, pod: Mapping[str, Any], ctx: TenantContext) -> str | None:
    """Downward-API env values that are fixed for the pod's life, as the tenant sees them: never the
    super pod's name, its node, its host address or its service account."""
    meta, spec = pod["metadata"], pod["spec"]
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": ctx.virtual_node,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": ctx.virtual_node_ip,
        "status.hostIPs": ctx.virtual_node_ip,
    }
    return values.get(path)


def _dns(spec: Mapping[str, Any], namespace: str, ctx: TenantContext) -> tuple[str, dict[str, Any] | None]:
    """dnsPolicy and dnsConfig of the super pod: the tenant's cluster DNS, never the super cluster's."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    own = copy.deepcopy(spec.get("dnsConfig") or {})
    if policy in ("None", "Default"):
        return policy, own or None
    domain = ctx.cluster_domain
    searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
    # Kubernetes needs one nameserver with dnsPolicy None; until the tenant has its own DNS, the
    # pod's own loopback: nothing answers there, so a lookup fails at once and reaches no one.
    nameservers = [*ctx.dns_servers, *own.get("nameservers", [])][:3] or [NO_NAMESERVER]
    config: dict[str, Any] = {
        "nameservers": nameservers,
        "searches": [*searches, *(s for s in own.get("searches", []) if s not in searches)],
        "options": own.get("options") or [{"name": "ndots", "value": "5"}],
    }
    return "None", config


def _is_service_account_volume(volume: Mapping[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in source for source in sources)


def wants_token(pod: Mapping[str, Any]) -> bool:
    """Whether the pod mounts a service-account token (the syncer issues it from the tenant). With
    `automountServiceAccountToken: false` the tenant adds no token volume; one the pod names itself
    is mounted all the same, as Kubernetes does."""
    return bool(token_requests(pod))


def token_key(source: Mapping[str, Any]) -> str:
    """The key in the pod's token Secret of a projected token: `token` for the API server's own
    audience, one per other audience (the path is the pod's; a key is only a name)."""
    audience = source.get("audience") or ""
    return f"token-{hashlib.sha256(audience.encode()).hexdigest()[: naming.HASH_LENGTH]}" if audience else "token"


def token_requests(pod: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """Each token the pod's projected volumes mount, by its key in the token Secret: (audience,
    lifetime in seconds — the shortest any of its sources asks for, at least the API's 600)."""
    requests: dict[str, tuple[str, int]] = {}
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token is None:
                continue
            key, seconds = token_key(token), max(600, int(token.get("expirationSeconds") or TOKEN_SECONDS))
            seconds = min(seconds, requests.get(key, ("", seconds))[1])
            requests[key] = (token.get("audience") or "", seconds)
    return requests


def _projected_source(source: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A projected volume's source as the super pod reads it: mirrored names, the tenant's view of
    the downward API."""
    out = copy.deepcopy(dict(source))
    if "configMap" in out:
        out["configMap"]["name"] = super_name(namespace, out["configMap"]["name"])
    if "secret" in out:
        out["secret"]["name"] = super_name(namespace, out["secret"]["name"])
    for item in (out.get("downwardAPI") or {}).get("items") or []:
        if "fieldRef" in item:
            _rewrite_field_ref(item["fieldRef"])
    return out


def _token_volume_sources(
    sources: Iterable[Mapping[str, Any]], token_secret: str, namespace: str
) -> list[dict[str, Any]]:
    """A projected volume with tokens, as the super pod mounts it: each token, and the tenant's CA
    bundle (`kube-root-ca.crt`, not mirrored), read from the pod's token Secret at the pod's paths."""
    out: list[dict[str, Any]] = []
    for source in sources:
        if "serviceAccountToken" in source:
            item = {"key": token_key(source["serviceAccountToken"]), "path": source["serviceAccountToken"]["path"]}
            out.append({"secret": {"name": token_secret, "items": [item]}})
        elif (source.get("configMap") or {}).get("name") == ROOT_CA_CONFIGMAP:
            items = source["configMap"].get("items") or [{"key": "ca.crt", "path": "ca.crt"}]
            out.append({"secret": {"name": token_secret, "items": [i for i in items if i.get("key") == "ca.crt"]}})
        else:
            out.append(_projected_source(source, namespace))
    return out


def dependencies(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of the objects in the pod's namespace it names, to mirror before the pod: its
    ServiceAccount, and the ConfigMaps and Secrets of its volumes, environment and pull secrets."""
    spec = pod["spec"]
    found = [("ServiceAccount", spec.get("serviceAccountName") or "default")]
    found += [("Secret", ref["name"]) for ref in spec.get("imagePullSecrets") or [] if ref.get("name")]
    for volume in spec.get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        for source in sources:
            found += [("ConfigMap", n) for n in [(source.get("configMap") or {}).get("name")] if n]
            secret = source.get("secret") or {}
            found += [("Secret", n) for n in [secret.get("secretName") or secret.get("name")] if n]
    for _, _, container in _containers(spec):
        for source in container.get("envFrom") or []:
            found += [("ConfigMap", n) for n in [(source.get("configMapRef") or {}).get("name")] if n]
            found += [("Secret", n) for n in [(source.get("secretRef") or {}).get("name")] if n]
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            found += [("ConfigMap", n) for n in [(value_from.get("configMapKeyRef") or {}).get("name")] if n]
            found += [("Secret", n) for n in [(value_from.get("secretKeyRef") or {}).get("name")] if n]
    return list(dict.fromkeys(found))


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def service_env(services: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The variables the kubelet gives a container for each Service it sees (`WEB_SERVICE_HOST`,
    `WEB_PORT_80_TCP`…), the way the kubelet writes them; headless Services give none."""
    env: list[dict[str, str]] = []
    for service in sorted(services, key=lambda svc: str(svc["metadata"]["name"])):
        spec = service.get("spec") or {}
        ip, ports = spec.get("clusterIP"), spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        values = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(first["port"])}
        for port in ports:
            if port.get("name"):
                values[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        values[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            link = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            values[link] = f"{protocol.lower()}://{ip}:{port['port']}"
            values[f"{link}_PROTO"] = protocol.lower()
            values[f"{link}_PORT"] = str(port["port"])
            values[f"{link}_ADDR"] = ip
        env += [{"name": name, "value": value} for name, value in values.items()]
    return env


def translate_pod(
    pod: Mapping[str, Any],
    ctx: TenantContext,
    token_secret: str | None,
    services: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The super pod for a tenant pod (which must already have passed `pod_refusal`). `services`
    are the tenant Services of the pod's namespace: their variables are the tenant's, as its own
    kubelet would give them (the super pod's own Service links are off)."""
    namespace = pod["metadata"]["namespace"]
    spec = copy.deepcopy(dict(pod["spec"]))

    def ref(name: str) -> str:
        return super_name(namespace, name)

    # Placement is the Tenant's (superuser-set), never the tenant pod's.
    for field_name in (
        "nodeName",
        "overhead",
        "nodeSelector",
        "affinity",
        "tolerations",
        "topologySpreadConstraints",
        "schedulingGates",
        "priority",
        "priorityClassName",
        "schedulerName",
        "preemptionPolicy",
        "serviceAccount",
        "ephemeralContainers",
    ):
        spec.pop(field_name, None)
    if ctx.node_selector:
        spec["nodeSelector"] = dict(ctx.node_selector)
    if ctx.tolerations:
        spec["tolerations"] = [dict(t) for t in ctx.tolerations]
    spec["dnsPolicy"], dns_config = _dns(spec, namespace, ctx)
    spec.pop("dnsConfig", None)
    if dns_config is not None:
        spec["dnsConfig"] = dns_config
    spec["runtimeClassName"] = ctx.runtime_class
    # The super pod has another name: the containers keep the tenant pod's (the kubelet's rule; a
    # name that is no DNS label, e.g. with dots, cannot be a pod's hostname field and is left out).
    hostname = spec.get("hostname") or pod["metadata"]["name"][:63].rstrip("-.")
    if DNS_LABEL.fullmatch(hostname):
        spec["hostname"] = hostname
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
            projected = volume["projected"]
            sources = _token_volume_sources(projected["sources"], token_secret, namespace)
            volume["projected"] = {**projected, "sources": sources}
        elif "configMap" in volume:
            volume["configMap"] = {**volume["configMap"], "name": ref(volume["configMap"]["name"])}
        elif "secret" in volume:
            volume["secret"] = {**volume["secret"], "secretName": ref(volume["secret"]["secretName"])}
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            volume["persistentVolumeClaim"] = {**claim, "claimName": ref(claim["claimName"])}
        elif "projected" in volume:
            sources = [_projected_source(source, namespace) for source in volume["projected"].get("sources") or []]
            volume["projected"] = {**volume["projected"], "sources": sources}
        elif "downwardAPI" in volume:
            volume["downwardAPI"] = copy.deepcopy(volume["downwardAPI"])
            for item in volume["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    _rewrite_field_ref(item["fieldRef"])
        elif "ephemeral" in volume:
            # The claim the super cluster makes from it carries no tenant metadata either.
            template = copy.deepcopy(volume["ephemeral"].get("volumeClaimTemplate") or {})
            template.pop("metadata", None)
            volume["ephemeral"] = {"volumeClaimTemplate": template}
        volumes.append(volume)
    spec["volumes"] = volumes

    # A pod with a subdomain gets its tenant name in its hosts file from the gate (`NetGate`).
    metadata = super_metadata(pod, ctx)
    metadata["annotations"].update(_whole_map_annotations(pod, volumes))
    hosts_rename = None
    if spec.get("subdomain") and ctx.netgate is not None:
        hosts_rename = _hosts_rename(spec, metadata["name"], namespace, ctx)
        _mount_hosts_file(spec)

    links = _service_links(pod, ctx, services)
    for kind in ("initContainers", "containers"):
        containers = []
        for container in spec.get(kind) or []:
            container = _container(container, pod, ctx, links)
            _fill_resources(container, ctx)
            containers.append(container)
        if kind == "initContainers" and ctx.netgate is not None:
            containers.insert(0, ctx.netgate.container(hosts_rename))
        if containers:
            spec[kind] = containers

    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def translate_ephemeral_containers(
    pod: Mapping[str, Any], ctx: TenantContext, services: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The tenant pod's ephemeral containers (`kubectl debug`) as the super pod runs them: added
    through the super pod's `ephemeralcontainers` subresource once it exists (never on create),
    translated as its other containers are, but for resources, which they may not have."""
    links = _service_links(pod, ctx, services)
    return [_container(c, pod, ctx, links) for c in pod["spec"].get("ephemeralContainers") or []]


def _service_links(
    pod: Mapping[str, Any], ctx: TenantContext, services: Iterable[Mapping[str, Any]]
) -> list[dict[str, str]]:
    kubernetes = {
        "metadata": {"name": "kubernetes"},
        "spec": {"clusterIP": ctx.apiserver_host, "ports": [{"name": "https", "port": ctx.apiserver_port}]},
    }
    linked = list(services) if pod["spec"].get("enableServiceLinks", True) else []
    return service_env([kubernetes, *(svc for svc in linked if svc["metadata"]["name"] != "kubernetes")])


def _container(
    container: Mapping[str, Any], pod: Mapping[str, Any], ctx: TenantContext, links: list[dict[str, str]]
) -> dict[str, Any]:
    """One container as the super pod runs it: names of what it reads, the tenant's view of the
    downward API, the tenant's Service variables, and pulls with the pod's own credentials."""
    namespace = pod["metadata"]["namespace"]
    out = copy.deepcopy(dict(container))
    env = [e for e in out.get("env") or [] if not e["name"].startswith("KUBERNETES_SERVICE_")]
    own = {e["name"] for e in env}
    for var in env:
        source = var.get("valueFrom") or {}
        for key in ("configMapKeyRef", "secretKeyRef"):
            if key in source:
                source[key]["name"] = super_name(namespace, source[key]["name"])
        if "fieldRef" in source:
            fixed = _env_field_value(source["fieldRef"].get("fieldPath", ""), pod, ctx)
            if fixed is not None:
                var.pop("valueFrom")
                var["value"] = fixed
            else:
                _rewrite_field_ref(source["fieldRef"])
    # Service variables first, so the container's own may refer to them ($(WEB_SERVICE_HOST)) and
    # override them, as with the kubelet.
    out["env"] = [e for e in links if e["name"] not in own] + env
    for env_from in out.get("envFrom") or []:
        for key in ("configMapRef", "secretRef"):
            if key in env_from:
                env_from[key]["name"] = super_name(namespace, env_from[key]["name"])
    # The node asks the registry at every start, with this pod's pull secrets: a tenant runs only
    # images its own credentials can pull, never one another tenant left in the cache.
    out["imagePullPolicy"] = "Always"
    return out


def _hosts_rename(spec: dict[str, Any], super_pod_name: str, namespace: str, ctx: TenantContext) -> tuple[str, str]:
    """The pod's name in its hosts file as the super kubelet writes it, up to the super cluster's
    domain (`<host>.<subdomain>.<super namespace>.svc`), and as the tenant's kubelet would."""
    host = spec.get("hostname") or super_pod_name
    return (f"{host}.{spec['subdomain']}.{ctx.namespace}.svc",
            f"{host}.{spec['subdomain']}.{namespace}.svc.{ctx.cluster_domain}")  # fmt: skip


def _mount_hosts_file(spec: dict[str, Any]) -> None:
    """The hosts file the gate writes, as /etc/hosts of every container of the pod that does not
    mount its own there (the kubelet then leaves that container's /etc/hosts alone)."""
    spec["volumes"].append({"name": HOSTS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            mounts = container.setdefault("volumeMounts", [])
            if all(m.get("mountPath") != "/etc/hosts" for m in mounts):
                mounts.append({"name": HOSTS_VOLUME, "mountPath": "/etc/hosts", "subPath": HOSTS_FILE})


def token_secret(
    pod: Mapping[str, Any],
    ctx: TenantContext,
    tokens: Mapping[str, str],
    ca_pem: bytes,
    expires: str,
    owner: Mapping[str, Any],
) -> dict[str, Any]:
    """The tenant-issued service-account tokens (by `token_key`), the tenant's CA and the pod's
    namespace, mounted where the pod's volumes ask. Owned by its super pod (`owner`) from birth, so
    it never outlives it; `expires` is when its first token expires."""
    meta = super_metadata(pod, ctx)
    meta["name"] = token_secret_name(pod)
    meta["annotations"][TOKEN_EXPIRES_ANNOTATION] = expires
    meta["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {
            **{key: base64.b64encode(token.encode()).decode() for key, token in tokens.items()},
            "ca.crt": base64.b64encode(ca_pem).decode(),
            "namespace": base64.b64encode(pod["metadata"]["namespace"].encode()).decode(),
        },
    }


def token_secret_name(pod: Mapping[str, Any]) -> str:
    return naming.fit(f"{super_name(pod['metadata']['namespace'], pod['metadata']['name'])}-token")


# -- up: super → tenant --

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
# A container status's resources are the super pod's (the Tenant's container defaults filled in):
# kubectl takes them over the tenant pod's own spec (`describe node` panics on a container with
# none in its spec and some in its status), so the tenant is shown its spec's alone.
CONTAINER_STATUS_HIDDEN = ("resources", "allocatedResources")


def tenant_pod_status(
    super_pod: Mapping[str, Any], ctx: TenantContext, clean: Callable[[str], str] = lambda text: text
) -> dict[str, Any]:
    """The tenant pod's status from the super pod's: the super node's address stays hidden, the gate
    is not the tenant's container, and every message goes through `clean` (see `scrub`)."""
    status = super_pod.get("status") or {}
    out = {key: copy.deepcopy(status[key]) for key in POD_STATUS_FIELDS if key in status}
    if "initContainerStatuses" in out:
        out["initContainerStatuses"] = [s for s in out["initContainerStatuses"] if s.get("name") != NETGATE_CONTAINER]
    for kind in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for container_status in out.get(kind) or []:
            for key in CONTAINER_STATUS_HIDDEN:
                container_status.pop(key, None)
    if status.get("hostIP"):
        out["hostIP"] = ctx.virtual_node_ip
        out["hostIPs"] = [{"ip": ctx.virtual_node_ip}]
    _clean_messages(out, clean)
    return out


def _clean_messages(node: Any, clean: Callable[[str], str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "message" and isinstance(value, str):
                node[key] = clean(value)
            else:
                _clean_messages(value, clean)
    elif isinstance(node, list):
        for item in node:
            _clean_messages(item, clean)


def rejected_condition(reason: str, message: str, now: str) -> dict[str, Any]:
    """The PodScheduled condition of a tenant pod that will not run, saying why."""
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
