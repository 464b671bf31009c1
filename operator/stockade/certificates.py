"""The certificate set of one Kubernetes control plane: three CAs, the leaves, the SA key.

Pure: given the names the servers answer to, it computes certificates. The operator stores the
result in Secrets (`stockade.render`), and the test bed writes it to files (`stockade_dev.testbed`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stockade import pki

# The three signers. Separate CAs keep the blast radius small: an etcd client certificate can never
# authenticate to the API server, and a front-proxy client can never reach etcd.
CLUSTER_CA = "ca"
ETCD_CA = "etcd-ca"
FRONT_PROXY_CA = "front-proxy-ca"
CA_NAMES = (CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA)

# Leaf certificates, by the stable name they are stored under.
APISERVER = "apiserver"
APISERVER_KUBELET_CLIENT = "apiserver-kubelet-client"
APISERVER_ETCD_CLIENT = "apiserver-etcd-client"
ETCD_SERVER = "etcd-server"
ETCD_PEER = "etcd-peer"
FRONT_PROXY_CLIENT = "front-proxy-client"
CONTROLLER_MANAGER = "controller-manager"
SCHEDULER = "scheduler"
ADMIN = "admin"
SYNCER = "syncer"
DNS = "dns"
KUBELET = "kubelet"  # the virtual node's kubelet API: serving only
KUBELET_TENANT = "kubelet-tenant"  # the kubelet API's own identity in its tenant (metrics.k8s.io)

# Identities of the kubeconfig users. The tenant admin is *not* in system:masters: its rights come
# from a ClusterRoleBinding in the tenant cluster, so they can be revoked.
ADMIN_USER = "stockade:tenant-admin"
ADMIN_GROUP = "stockade:tenant-admins"
SYNCER_USER = "stockade:syncer"
DNS_USER = "stockade:dns"  # the tenant's cluster DNS: reads Services, EndpointSlices, Namespaces
KUBELET_USER = "stockade:kubelet"  # the kubelet API: asks whether a user may read metrics, lists pods
BOOTSTRAP_USER = "stockade:bootstrap"
MASTERS_GROUP = "system:masters"

KUBECONFIG_USERS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, SYNCER, DNS)


@dataclass(frozen=True)
class ServingNames:
    """The DNS names and IP addresses the API server and etcd answer to."""

    apiserver_dns: tuple[str, ...] = ()
    apiserver_ips: tuple[str, ...] = ()
    etcd_dns: tuple[str, ...] = ()
    etcd_ips: tuple[str, ...] = ()
    kubelet_dns: tuple[str, ...] = ()
    kubelet_ips: tuple[str, ...] = ()


def leaf_requests(
    names: ServingNames, validity: datetime.timedelta = pki.LEAF_VALIDITY
) -> dict[str, tuple[str, pki.CertificateRequest]]:
    """Every leaf certificate of a control plane, as (signing CA, request)."""

    def client(common_name: str, *organizations: str) -> pki.CertificateRequest:
        return pki.CertificateRequest(common_name, organizations, client=True, validity=validity)

    def server(
        common_name: str, dns: tuple[str, ...], ips: tuple[str, ...], *, also_client: bool = False
    ) -> pki.CertificateRequest:
        return pki.CertificateRequest(
            common_name, server=True, client=also_client, dns_names=dns, ip_addresses=ips, validity=validity
        )

    return {
        APISERVER: (CLUSTER_CA, server("kube-apiserver", names.apiserver_dns, names.apiserver_ips)),
        APISERVER_KUBELET_CLIENT: (CLUSTER_CA, client("kube-apiserver-kubelet-client", "system:kubelet-api-admins")),
        APISERVER_ETCD_CLIENT: (ETCD_CA, client("kube-apiserver-etcd-client")),
        # etcd members are clients of each other too.
        ETCD_SERVER: (ETCD_CA, server("etcd-server", names.etcd_dns, names.etcd_ips, also_client=True)),
        ETCD_PEER: (ETCD_CA, server("etcd-peer", names.etcd_dns, names.etcd_ips, also_client=True)),
        FRONT_PROXY_CLIENT: (FRONT_PROXY_CA, client("front-proxy-client")),
        CONTROLLER_MANAGER: (CLUSTER_CA, client("system:kube-controller-manager")),
        SCHEDULER: (CLUSTER_CA, client("system:kube-scheduler")),
        ADMIN: (CLUSTER_CA, client(ADMIN_USER, ADMIN_GROUP)),
        SYNCER: (CLUSTER_CA, client(SYNCER_USER)),
        DNS: (CLUSTER_CA, client(DNS_USER)),
        # What the API server's --kubelet-certificate-authority checks at the virtual node's address.
        KUBELET: (CLUSTER_CA, server("stockade-kubelet", names.kubelet_dns, names.kubelet_ips)),
        KUBELET_TENANT: (CLUSTER_CA, client(KUBELET_USER)),
    }


@dataclass(frozen=True)
class ControlPlanePKI:
    cas: Mapping[str, pki.CertKey]
    leaves: Mapping[str, pki.CertKey]
    service_account_key: ec.EllipticCurvePrivateKey
    names: ServingNames = field(default_factory=ServingNames)

    def earliest_expiry(self) -> datetime.datetime:
        return min(ck.not_after for ck in [*self.cas.values(), *self.leaves.values()])


def create_cas(now: datetime.datetime | None = None) -> dict[str, pki.CertKey]:
    return {name: pki.create_ca(f"stockade-{name}", now=now) for name in CA_NAMES}


def issue_leaves(
    cas: Mapping[str, pki.CertKey],
    names: ServingNames,
    *,
    only: set[str] | None = None,
    validity: datetime.timedelta = pki.LEAF_VALIDITY,
    now: datetime.datetime | None = None,
) -> dict[str, pki.CertKey]:
    """Issue the leaves named in `only` (all of them by default) from `cas`."""
    return {
        name: pki.issue_certificate(cas[ca_name], request, now=now)
        for name, (ca_name, request) in leaf_requests(names, validity).items()
        if only is None or name in only
    }


def create_control_plane_pki(
    names: ServingNames,
    *,
    validity: datetime.timedelta = pki.LEAF_VALIDITY,
    now: datetime.datetime | None = None,
) -> ControlPlanePKI:
    cas = create_cas(now)
    return ControlPlanePKI(
        cas=cas,
        leaves=issue_leaves(cas, names, validity=validity, now=now),
        service_account_key=pki.new_private_key(),
        names=names,
    )


def issue_bootstrap_client(
    cluster_ca: pki.CertKey, validity: datetime.timedelta = datetime.timedelta(minutes=15)
) -> pki.CertKey:
    """A short-lived system:masters client, held only in memory by whoever holds the CA key.

    Used to apply the first RBAC objects of a fresh control plane; never stored, never handed out.
    """
    request = pki.CertificateRequest(
        common_name=BOOTSTRAP_USER, organizations=(MASTERS_GROUP,), client=True, validity=validity
    )
    return pki.issue_certificate(cluster_ca, request)


# -- renewal and rotation -----------------------------------------------------------------------


def _names_of(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def leaf_problem(
    leaf: pki.CertKey, ca: pki.CertKey, request: pki.CertificateRequest, now: datetime.datetime
) -> str | None:
    """Why `leaf` must be re-issued, or None if it is still good."""
    if not pki.is_signed_by(leaf.certificate, ca.certificate):
        return "not signed by the current CA"
    if pki.needs_renewal(leaf.certificate, now):
        return f"expires {leaf.not_after:%Y-%m-%d}, renewal due"
    if _names_of(leaf.certificate) != (set(request.dns_names), set(request.ip_addresses)):
        return "its DNS names or IP addresses changed"
    subject = leaf.certificate.subject
    common_names = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    organizations = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if common_names != [request.common_name] or organizations != list(request.organizations):
        return "its subject changed"
    return None


@dataclass(frozen=True)
class PKIPlan:
    bundle: ControlPlanePKI
    reissued: dict[str, str]  # name -> why

    @property
    def changed(self) -> bool:
        return bool(self.reissued)


def plan_pki(
    existing_cas: Mapping[str, pki.CertKey],
    existing_leaves: Mapping[str, pki.CertKey],
    service_account_key: ec.EllipticCurvePrivateKey | None,
    names: ServingNames,
    *,
    rotate_ca: bool = False,
    rotate_leaves: bool = False,
    validity: datetime.timedelta = pki.LEAF_VALIDITY,
    now: datetime.datetime | None = None,
) -> PKIPlan:
    """The certificate set a control plane should have now, given what it has.

    Missing CAs are created; a CA rotation re-issues every leaf (so every kubeconfig gets the new
    CA); leaves that are missing, due for renewal, signed by another CA or issued for other names
    are re-issued. The service-account key survives a CA rotation, so tokens stay valid.
    """
    now = now or pki.utcnow()
    reissued: dict[str, str] = {}
    cas = dict(existing_cas)
    for name in CA_NAMES:
        if rotate_ca or name not in cas or pki.needs_renewal(cas[name].certificate, now):
            reissued[name] = "CA rotation requested" if rotate_ca and name in cas else "created"
            cas[name] = pki.create_ca(f"stockade-{name}", now=now)
    leaves: dict[str, pki.CertKey] = {}
    for name, (ca_name, request) in leaf_requests(names, validity).items():
        current = existing_leaves.get(name)
        if current is None:
            why: str | None = "created"
        elif rotate_leaves:
            why = "rotation requested"
        else:
            why = leaf_problem(current, cas[ca_name], request, now)
        if why is None and current is not None:
            leaves[name] = current
        else:
            leaves[name] = pki.issue_certificate(cas[ca_name], request, now=now)
            reissued[name] = why or "created"
    if service_account_key is None:
        service_account_key = pki.new_private_key()
        reissued["sa"] = "created"
    return PKIPlan(
        ControlPlanePKI(cas=cas, leaves=leaves, service_account_key=service_account_key, names=names),
        reissued,
    )
