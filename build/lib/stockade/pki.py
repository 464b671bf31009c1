"""Certificates and keys for a Kubernetes control plane, built with `cryptography`.

Pure functions: nothing here talks to a cluster. Key generation is CPU work, so async callers
run these in a thread (see `stockade.reconciler`).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# Certificates are valid from slightly in the past so that a peer whose clock lags accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)
# A leaf certificate is renewed once less than this fraction of its lifetime remains.
RENEW_FRACTION = 1 / 3


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256: accepted by every Kubernetes component, and fast to generate."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.private_key)

    @property
    def not_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertKey:
        return cls(x509.load_pem_x509_certificate(cert_pem), load_private_key(key_pem))


def load_private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("only ECDSA private keys are supported")
    return key


@dataclass(frozen=True)
class CertificateRequest:
    """What a leaf certificate says: its subject, its uses and the names it is valid for."""

    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    validity: datetime.timedelta = LEAF_VALIDITY


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def create_ca(
    common_name: str, *, validity: datetime.timedelta = CA_VALIDITY, now: datetime.datetime | None = None
) -> CertKey:
    now = now or utcnow()
    key = new_private_key()
    subject = _name(common_name)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(certificate, key)


def issue_certificate(ca: CertKey, request: CertificateRequest, *, now: datetime.datetime | None = None) -> CertKey:
    """Issue a leaf certificate signed by `ca`, never outliving the CA."""
    if not (request.server or request.client):
        raise ValueError(f"certificate {request.common_name!r} must be for a server, a client or both")
    now = now or utcnow()
    key = new_private_key()
    not_after = min(now + request.validity, ca.not_after)
    usages = []
    if request.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(request.common_name, request.organizations))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()), critical=False)
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in _unique(request.dns_names)]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _unique(request.ip_addresses)]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return CertKey(builder.sign(ca.private_key, hashes.SHA256()), key)


def _unique(values: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(values))


def public_key_pem(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_key_pem(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_certificate(cert_pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem)


def is_signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def renewal_due(certificate: x509.Certificate) -> datetime.datetime:
    """When a certificate should be renewed: once a third of its lifetime remains."""
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_after_utc - lifetime * RENEW_FRACTION


def needs_renewal(certificate: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    return (now or utcnow()) >= renewal_due(certificate)
