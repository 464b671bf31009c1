from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockade import certificates as certs
from stockade import pki

NAMES = certs.ServingNames(
    apiserver_dns=("kubernetes", "api.example.com"),
    apiserver_ips=("10.0.0.1",),
    etcd_dns=("etcd-0.etcd",),
    etcd_ips=("127.0.0.1",),
)


@pytest.fixture(scope="module")
def bundle() -> certs.ControlPlanePKI:
    return certs.create_control_plane_pki(NAMES)


def test_cas_are_self_signed_ten_year_ecdsa(bundle: certs.ControlPlanePKI) -> None:
    assert set(bundle.cas) == {"ca", "etcd-ca", "front-proxy-ca"}
    for ca in bundle.cas.values():
        assert pki.is_signed_by(ca.certificate, ca.certificate)
        assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        lifetime = ca.not_after - ca.certificate.not_valid_before_utc
        assert lifetime >= datetime.timedelta(days=3650)
        assert ca.private_key.curve.name == "secp256r1"


def test_leaves_are_signed_by_their_own_ca(bundle: certs.ControlPlanePKI) -> None:
    expected_ca = {name: ca for name, (ca, _) in certs.leaf_requests(NAMES).items()}
    for name, leaf in bundle.leaves.items():
        ca = bundle.cas[expected_ca[name]].certificate
        assert pki.is_signed_by(leaf.certificate, ca), name
        others = [c.certificate for n, c in bundle.cas.items() if n != expected_ca[name]]
        assert not any(pki.is_signed_by(leaf.certificate, other) for other in others), name


def test_apiserver_serving_names(bundle: certs.ControlPlanePKI) -> None:
    cert = bundle.leaves[certs.APISERVER].certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes", "api.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_admin_is_not_system_masters(bundle: certs.ControlPlanePKI) -> None:
    subject = bundle.leaves[certs.ADMIN].certificate.subject
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == [certs.ADMIN_GROUP]
    assert certs.MASTERS_GROUP not in orgs


def test_bootstrap_client_is_short_lived() -> None:
    ca = pki.create_ca("test")
    boot = certs.issue_bootstrap_client(ca)
    assert boot.not_after - boot.certificate.not_valid_before_utc <= datetime.timedelta(minutes=21)


def test_leaf_never_outlives_its_ca() -> None:
    ca = pki.create_ca("short", validity=datetime.timedelta(days=10))
    leaf = pki.issue_certificate(ca, pki.CertificateRequest("x", client=True))
    assert leaf.not_after == ca.not_after


def test_renewal_when_a_third_remains() -> None:
    ca = pki.create_ca("ca")
    now = pki.utcnow()
    leaf = pki.issue_certificate(
        ca, pki.CertificateRequest("x", client=True, validity=datetime.timedelta(days=300)), now=now
    )
    assert not pki.needs_renewal(leaf.certificate, now + datetime.timedelta(days=190))
    assert pki.needs_renewal(leaf.certificate, now + datetime.timedelta(days=205))


def test_pem_round_trip() -> None:
    ca = pki.create_ca("ca")
    again = pki.CertKey.from_pem(ca.cert_pem, ca.key_pem)
    assert again.certificate == ca.certificate
    assert pki.public_key_pem(again.private_key) == pki.public_key_pem(ca.private_key)


def test_certificate_must_have_a_use() -> None:
    with pytest.raises(ValueError, match="server, a client or both"):
        pki.issue_certificate(pki.create_ca("ca"), pki.CertificateRequest("nothing"))
