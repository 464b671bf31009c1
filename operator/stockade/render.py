"""What a Tenant becomes in the super cluster, computed as plain objects (pure).

`render_tenant` fills the jinja2 templates in `stockade/templates/` (package data) and stamps every object with the
tenant's labels and an ownerReference to the Tenant; `pki_secrets` and `kubeconfig_secrets` turn
a `ControlPlanePKI` into Secrets. Nothing here talks to a cluster.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import yaml

from stockade import certificates as certs
from stockade import components, naming, pki
from stockade.config import COREDNS_VERSION, ETCD_IMAGE_TAGS, LEGACY_SERVICE_CIDR, OperatorConfig
from stockade.kubeconfig import build_kubeconfig, dump
from stockade.model import API_VERSION, KIND, ServiceType, TenantSpec

# Shipped as package data, beside this module (in a wheel, an image and a checkout alike).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATES = ("namespaces", "control-plane", "dns", "kubelet", "network-policies", "workloads")
PKI_DIR = "/etc/kubernetes/pki"
AUTH_CONFIG = "/etc/kubernetes/config/authentication.yaml"
KUBECONFIG_PATH = f"{PKI_DIR}/kubeconfig"
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    # Read once: a running operator never mixes templates changed on disk with the code it loaded.
    auto_reload=False,
)

# (secret, [(key, file)]) entries of a projected volume, one per container (by its name).
PkiSources = list[tuple[str, list[tuple[str, str]]]]


def _ca_source(ca: str) -> tuple[str, list[tuple[str, str]]]:
    """Only the CA's certificate: no pod ever mounts a CA's private key."""
    return naming.pki_secret(ca), [("tls.crt", f"{ca}.crt")]


def _leaf_source(leaf: str) -> tuple[str, list[tuple[str, str]]]:
    return naming.pki_secret(leaf), [("tls.crt", f"{leaf}.crt"), ("tls.key", f"{leaf}.key")]


def _kubeconfig_source(user: str) -> tuple[str, list[tuple[str, str]]]:
    return naming.kubeconfig_secret(user), [("kubeconfig", "kubeconfig")]


SERVICE_ACCOUNT_SECRET = naming.pki_secret("sa")
# Users whose kubeconfig is mounted in a control-plane pod: they reach its API server on loopback.
IN_POD_USERS = (certs.CONTROLLER_MANAGER, certs.SCHEDULER)
PKI_SOURCES: dict[str, PkiSources] = {
    naming.ETCD: [_ca_source(certs.ETCD_CA), _leaf_source(certs.ETCD_SERVER), _leaf_source(certs.ETCD_PEER)],
    naming.APISERVER: [
        _ca_source(certs.CLUSTER_CA),
        _ca_source(certs.ETCD_CA),
        _ca_source(certs.FRONT_PROXY_CA),
        _leaf_source(certs.APISERVER),
        _leaf_source(certs.APISERVER_KUBELET_CLIENT),
        _leaf_source(certs.APISERVER_ETCD_CLIENT),
        _leaf_source(certs.FRONT_PROXY_CLIENT),
        (SERVICE_ACCOUNT_SECRET, [("sa.key", "sa.key"), ("sa.pub", "sa.pub")]),
    ],
    naming.CONTROLLER_MANAGER: [
        _ca_source(certs.CLUSTER_CA),
        (SERVICE_ACCOUNT_SECRET, [("sa.key", "sa.key")]),
        _kubeconfig_source(certs.CONTROLLER_MANAGER),
    ],
    naming.SCHEDULER: [_kubeconfig_source(certs.SCHEDULER)],
    naming.DNS: [_kubeconfig_source(certs.DNS)],
    # The tenant's CA (the API server's kubelet client has a certificate of it, and so has the
    # kubelet API's own identity in the tenant), the front-proxy CA (the API server's aggregation
    # layer forwards metrics.k8s.io with a certificate of it), its serving certificate.
    naming.KUBELET: [
        _ca_source(certs.CLUSTER_CA),
        _ca_source(certs.FRONT_PROXY_CA),
        _leaf_source(certs.KUBELET),
        _leaf_source(certs.KUBELET_TENANT),
    ],
}
# The tenant DNS's requests and limits: CoreDNS with a cache of a few thousand names.
DNS_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "96Mi"}}
# The kubelet API's: a proxy that streams (logs, exec) and holds nothing.
KUBELET_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}


@dataclass(frozen=True)
class TenantInput:
    """Everything the rendering depends on."""

    name: str
    uid: str
    spec: TenantSpec
    config: OperatorConfig
    pki_checksum: str = ""
    super_apiserver_ips: tuple[str, ...] = ()
    # The tenant's block of the Service pool (the reconciler claims it); the pool's first by default.
    # None: a Tenant provisioned before the pool, which keeps `LEGACY_SERVICE_CIDR`, unpinned
    # Service addresses and no DNS of its own (see ARCHITECTURE.md, "A tenant's network").
    service_range: str | None = ""


class _Context:
    """The `t` of the templates: the tenant input plus values derived from it."""

    def __init__(self, inp: TenantInput):
        self.inp = inp
        self.name = inp.name
        self.spec = inp.spec
        self.config = inp.config
        self.pki_checksum = inp.pki_checksum
        self.names = naming
        self.certs = certs
        self.virtual_node = naming.virtual_node(inp.name)
        self.control_plane_namespace = naming.control_plane_namespace(inp.name)
        self.workloads_namespace = naming.workloads_namespace(inp.name)
        self.pki_sources = PKI_SOURCES  # by container name
        self.resources = SimpleNamespace(
            **{field: getattr(inp.spec.control_plane.resources, field).wire() for field in ("etcd", "api_server")}
        )

    @property
    def pooled(self) -> bool:
        return self.inp.service_range is not None

    @property
    def service_range(self) -> str:
        if self.inp.service_range is None:
            return LEGACY_SERVICE_CIDR
        return self.inp.service_range or naming.service_ranges(self.config.service_pool, self.config.service_prefix)[0]

    @property
    def apiserver_ip(self) -> str:
        """The API server's ClusterIP in the super cluster, and the tenant's `kubernetes` Service's."""
        return naming.service_cidr_first_ip(self.service_range)

    @property
    def dns_ip(self) -> str:
        return naming.dns_service_ip(self.service_range)

    @property
    def dns_replicas(self) -> int:
        """As many as the control plane has: an HA tenant gets an HA DNS."""
        return self.running_replicas

    @property
    def dns_resources(self) -> dict[str, Any]:
        return DNS_RESOURCES

    @property
    def kubelet_ip(self) -> str:
        return naming.kubelet_ip(self.service_range)

    @property
    def kubelet_resources(self) -> dict[str, Any]:
        return KUBELET_RESOURCES

    @property
    def corefile(self) -> str:
        """Authoritative for the cluster domain and reverse zones, from the tenant's API server only
        (its kubeconfig). Other names go upstream (the super cluster's DNS, which only forwards
        them) only when the tenant may reach the internet; otherwise they are refused."""
        domain = self.config.cluster_domain
        upstream = "    forward . /etc/resolv.conf\n    loop\n" if self.spec.workloads.egress.internet else ""
        return (
            f".:{naming.DNS_PORT} {{\n"
            "    errors\n"
            "    health :8080\n"
            "    ready :8181\n"
            f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
            "        kubeconfig /etc/coredns-kubeconfig/kubeconfig\n"
            "        pods insecure\n"
            "        ttl 30\n"
            "    }\n"
            f"{upstream}"
            "    cache 30\n"
            "}\n"
        )

    @property
    def control_plane_runtime_class(self) -> str:
        return self.spec.runtime_classes(self.config.runtime_class)[0]

    @property
    def workloads_runtime_class(self) -> str:
        return self.spec.runtime_classes(self.config.runtime_class)[1]

    @property
    def running_replicas(self) -> int:
        return 0 if self.spec.suspended else self.spec.control_plane.replicas

    @property
    def exposed(self) -> bool:
        return self.spec.control_plane.service.type != ServiceType.CLUSTER_IP

    @property
    def persistent_etcd(self) -> bool:
        return self.spec.control_plane.etcd.storage.type.value == "PersistentVolume"

    @property
    def egress_except(self) -> list[str]:
        return list(self.config.never_egress) + [f"{ip}/32" for ip in self.inp.super_apiserver_ips if ":" not in ip]

    @cached_property
    def images(self) -> SimpleNamespace:
        registry = self.spec.control_plane.image_registry.rstrip("/")
        version = self.spec.kubernetes.version
        return SimpleNamespace(
            etcd=f"{registry}/etcd:{ETCD_IMAGE_TAGS[self.spec.kubernetes.minor]}",
            apiserver=f"{registry}/kube-apiserver:{version}",
            controller_manager=f"{registry}/kube-controller-manager:{version}",
            scheduler=f"{registry}/kube-scheduler:{version}",
            coredns=f"{registry}/coredns/coredns:{COREDNS_VERSION}",
            kubelet=self.config.kubelet_image,
        )

    @property
    def authentication_config(self) -> str:
        return yaml.safe_dump(components.authentication_config(), sort_keys=False)

    @property
    def etcd_args(self) -> list[str]:
        """Clients on the pod's loopback only (its own API server); peers by their stable names."""
        member = f"https://$(POD_NAME).{naming.ETCD_PEERS}.{self.control_plane_namespace}.svc"
        initial = ",".join(
            f"{naming.CONTROL_PLANE}-{i}=https://{naming.etcd_member(self.name, i)}:{naming.ETCD_PEER_PORT}"
            for i in range(self.spec.control_plane.replicas)
        )
        local = naming.local_url(naming.ETCD_CLIENT_PORT)
        return components.etcd_args(
            components.EtcdFlags(
                pki_dir=PKI_DIR,
                data_dir="/var/lib/etcd/data",
                name="$(POD_NAME)",
                client_urls=(local, local),
                peer_urls=(f"https://0.0.0.0:{naming.ETCD_PEER_PORT}", f"{member}:{naming.ETCD_PEER_PORT}"),
                initial_cluster=initial,
                metrics_url=f"http://0.0.0.0:{naming.ETCD_METRICS_PORT}",
            )
        )

    @property
    def apiserver_args(self) -> list[str]:
        """Stacked etcd, as kubeadm does: each API server uses the member of its own pod."""
        return components.apiserver_args(
            components.ApiServerFlags(
                pki_dir=PKI_DIR,
                etcd_servers=(naming.local_url(naming.ETCD_CLIENT_PORT),),
                secure_port=naming.APISERVER_PORT,
                service_cidr=self.service_range,
                authentication_config_file=AUTH_CONFIG,
            )
        )

    @property
    def controllers(self) -> list[dict[str, Any]]:
        leader_elect = self.spec.control_plane.replicas > 1
        resources = self.spec.control_plane.resources
        return [
            {
                "name": naming.CONTROLLER_MANAGER,
                "port_name": "kcm-https",
                "image": self.images.controller_manager,
                "port": CONTROLLER_MANAGER_PORT,
                "resources": resources.controller_manager.wire(),
                "pki_sources": PKI_SOURCES[naming.CONTROLLER_MANAGER],
                "args": components.controller_manager_args(
                    kubeconfig=KUBECONFIG_PATH,
                    pki_dir=PKI_DIR,
                    secure_port=CONTROLLER_MANAGER_PORT,
                    leader_elect=leader_elect,
                ),
            },
            {
                "name": naming.SCHEDULER,
                "port_name": "sched-https",
                "image": self.images.scheduler,
                "port": SCHEDULER_PORT,
                "resources": resources.scheduler.wire(),
                "pki_sources": PKI_SOURCES[naming.SCHEDULER],
                "args": components.scheduler_args(
                    kubeconfig=KUBECONFIG_PATH, secure_port=SCHEDULER_PORT, leader_elect=leader_elect
                ),
            },
        ]


def service_pool(config: OperatorConfig) -> dict[str, Any]:
    """The super cluster's ServiceCIDR holding every tenant's Service range (shared, not owned)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": naming.SERVICE_POOL, "labels": {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}},
        "spec": {"cidrs": [config.service_pool]},
    }


def owner_reference(inp: TenantInput) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": inp.name,
        "uid": inp.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stamp(obj: dict[str, Any], inp: TenantInput) -> dict[str, Any]:
    """Label `obj` as the tenant's and make the Tenant its owner (garbage-collected with it)."""
    metadata = obj.setdefault("metadata", {})
    role = metadata.get("labels", {}).get(naming.LABEL_ROLE)
    if role is None:
        namespace = metadata.get("namespace")
        role = naming.ROLE_WORKLOADS if namespace == naming.workloads_namespace(inp.name) else naming.ROLE_CONTROL_PLANE
    metadata["labels"] = {**metadata.get("labels", {}), **naming.tenant_labels(inp.name, role)}
    metadata["ownerReferences"] = [owner_reference(inp)]
    return obj


def render_tenant(inp: TenantInput) -> list[dict[str, Any]]:
    """Every super-cluster object of a tenant except its Secrets, in the order they are applied."""
    context = _Context(inp)
    objects: list[dict[str, Any]] = []
    for template in TEMPLATES:
        text = _environment.get_template(f"{template}.yaml.j2").render(t=context)
        objects += [stamp(doc, inp) for doc in yaml.safe_load_all(text) if doc]
    return objects


# -- Secrets ------------------------------------------------------------------------------------


def _secret(inp: TenantInput, name: str, data: Mapping[str, bytes], secret_type: str = "Opaque") -> dict[str, Any]:
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": naming.control_plane_namespace(inp.name)},
            "type": secret_type,
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        },
        inp,
    )


def pki_secrets(inp: TenantInput, bundle: certs.ControlPlanePKI) -> list[dict[str, Any]]:
    """One kubernetes.io/tls Secret per CA and leaf (`pki-<name>`), and `pki-sa` for the SA key pair."""
    secrets = []
    for name, ck in bundle.cas.items():
        secrets.append(
            _secret(
                inp,
                naming.pki_secret(name),
                {"tls.crt": ck.cert_pem, "tls.key": ck.key_pem},
                "kubernetes.io/tls",
            )
        )
    requests = certs.leaf_requests(bundle.names)
    for name, ck in bundle.leaves.items():
        issuer = bundle.cas[requests[name][0]]
        data = {"tls.crt": ck.cert_pem, "tls.key": ck.key_pem, "ca.crt": issuer.cert_pem}
        secrets.append(_secret(inp, naming.pki_secret(name), data, "kubernetes.io/tls"))
    sa = bundle.service_account_key
    secrets.append(
        _secret(inp, SERVICE_ACCOUNT_SECRET, {"sa.key": pki.private_key_pem(sa), "sa.pub": pki.public_key_pem(sa)})
    )
    return secrets


def _decoded(secret: Mapping[str, Any] | None, key: str) -> bytes | None:
    if not secret or key not in (secret.get("data") or {}):
        return None
    return base64.b64decode(secret["data"][key])


@dataclass(frozen=True)
class StoredPKI:
    """What the `pki-*` Secrets hold (any part may be missing)."""

    cas: dict[str, pki.CertKey]
    leaves: dict[str, pki.CertKey]
    service_account_key: Any  # ec.EllipticCurvePrivateKey | None


def pki_from_secrets(secrets: Mapping[str, Mapping[str, Any]]) -> StoredPKI:
    """The inverse of `pki_secrets`: read certificates back from Secrets (by name)."""

    def pair(name: str) -> pki.CertKey | None:
        secret = secrets.get(naming.pki_secret(name))
        cert, key = _decoded(secret, "tls.crt"), _decoded(secret, "tls.key")
        return pki.CertKey.from_pem(cert, key) if cert and key else None

    cas = {name: ck for name in certs.CA_NAMES if (ck := pair(name))}
    leaves = {name: ck for name in certs.leaf_requests(certs.ServingNames()) if (ck := pair(name))}
    sa_pem = _decoded(secrets.get(SERVICE_ACCOUNT_SECRET), "sa.key")
    return StoredPKI(cas, leaves, pki.load_private_key(sa_pem) if sa_pem else None)


def kubeconfig_for(bundle: certs.ControlPlanePKI, user: str, server: str, cluster: str) -> dict[str, Any]:
    leaf = bundle.leaves[user]
    return build_kubeconfig(
        cluster=cluster,
        server=server,
        ca_pem=bundle.cas[certs.CLUSTER_CA].cert_pem,
        user=f"{cluster}-{user}",
        cert_pem=leaf.cert_pem,
        key_pem=leaf.key_pem,
    )


def kubeconfig_secrets(
    inp: TenantInput, bundle: certs.ControlPlanePKI, external_server: str | None = None
) -> list[dict[str, Any]]:
    """`<user>-kubeconfig` Secrets: key `kubeconfig` (in-cluster Service URL) and, for the admin,
    `kubeconfig-external` when the API server is exposed outside the cluster."""
    internal = naming.apiserver_url(inp.name)
    secrets = []
    for user in certs.KUBECONFIG_USERS:
        # The controllers use the API server of their own pod; everyone else the Service.
        server = naming.local_url(naming.APISERVER_PORT) if user in IN_POD_USERS else internal
        data = {"kubeconfig": dump(kubeconfig_for(bundle, user, server, inp.name)).encode()}
        if user == certs.ADMIN and external_server:
            data["kubeconfig-external"] = dump(kubeconfig_for(bundle, user, external_server, inp.name)).encode()
        secrets.append(_secret(inp, naming.kubeconfig_secret(user), data))
    return secrets


def checksum(secrets: list[dict[str, Any]]) -> str:
    """A digest of certificate material; stamped on pod templates so a rotation rolls the pods."""
    digest = hashlib.sha256()
    for secret in sorted(secrets, key=lambda s: s["metadata"]["name"]):
        for key in sorted(secret["data"]):
            digest.update(f"{secret['metadata']['name']}/{key}=".encode() + secret["data"][key].encode())
    return digest.hexdigest()[:16]
