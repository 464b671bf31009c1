"""Command lines of the control-plane components (pure).

One source for the flags: the pod templates use them with in-cluster paths, the test bed with
local paths, so the integration tests run exactly the configuration the tenant pods get.
Certificate files follow one layout in a `pki_dir`: `<name>.crt`/`<name>.key` for every name in
`stockade.certificates`, plus `sa.key` and `sa.pub`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stockade import certificates as certs

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Anonymous requests may reach the health endpoints (for kubelet probes) and nothing else.
ANONYMOUS_HEALTH_PATHS = ("/livez", "/readyz", "/healthz")


def authentication_config() -> dict[str, object]:
    return {
        "apiVersion": "apiserver.config.k8s.io/v1beta1",
        "kind": "AuthenticationConfiguration",
        "anonymous": {"enabled": True, "conditions": [{"path": p} for p in ANONYMOUS_HEALTH_PATHS]},
    }


@dataclass(frozen=True)
class ApiServerFlags:
    pki_dir: str
    etcd_servers: tuple[str, ...]
    secure_port: int
    service_cidr: str
    authentication_config_file: str
    bind_address: str = "0.0.0.0"
    advertise_address: str | None = None
    allow_privileged: bool = False
    extra: tuple[str, ...] = field(default_factory=tuple)


def apiserver_args(f: ApiServerFlags) -> list[str]:
    p = f.pki_dir
    args = [
        f"--etcd-servers={','.join(f.etcd_servers)}",
        f"--etcd-cafile={p}/{certs.ETCD_CA}.crt",
        f"--etcd-certfile={p}/{certs.APISERVER_ETCD_CLIENT}.crt",
        f"--etcd-keyfile={p}/{certs.APISERVER_ETCD_CLIENT}.key",
        f"--bind-address={f.bind_address}",
        f"--secure-port={f.secure_port}",
        f"--tls-cert-file={p}/{certs.APISERVER}.crt",
        f"--tls-private-key-file={p}/{certs.APISERVER}.key",
        "--tls-min-version=VersionTLS12",
        f"--client-ca-file={p}/{certs.CLUSTER_CA}.crt",
        f"--kubelet-client-certificate={p}/{certs.APISERVER_KUBELET_CLIENT}.crt",
        f"--kubelet-client-key={p}/{certs.APISERVER_KUBELET_CLIENT}.key",
        # The virtual node's kubelet API, at the address it publishes, with a certificate of this CA.
        f"--kubelet-certificate-authority={p}/{certs.CLUSTER_CA}.crt",
        "--kubelet-preferred-address-types=InternalIP",
        f"--requestheader-client-ca-file={p}/{certs.FRONT_PROXY_CA}.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p}/{certs.FRONT_PROXY_CLIENT}.crt",
        f"--proxy-client-key-file={p}/{certs.FRONT_PROXY_CLIENT}.key",
        f"--authentication-config={f.authentication_config_file}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        # Where the issuer's discovery document says its keys are: by default the API server's own
        # address, a pod IP its certificate does not name; this name it does, and tenant pods reach
        # it through the tenant's DNS and `kubernetes` Service.
        f"--service-account-jwks-uri={SERVICE_ACCOUNT_ISSUER}/openid/v1/jwks",
        f"--service-account-key-file={p}/sa.pub",
        f"--service-account-signing-key-file={p}/sa.key",
        f"--service-cluster-ip-range={f.service_cidr}",
        f"--allow-privileged={'true' if f.allow_privileged else 'false'}",
        "--profiling=false",
        "--v=1",
    ]
    if f.advertise_address:
        args.append(f"--advertise-address={f.advertise_address}")
    return args + list(f.extra)


@dataclass(frozen=True)
class EtcdFlags:
    pki_dir: str
    data_dir: str
    name: str
    client_urls: tuple[str, str]  # (listen, advertise)
    peer_urls: tuple[str, str]  # (listen, advertise)
    initial_cluster: str
    metrics_url: str | None = None


def etcd_args(f: EtcdFlags) -> list[str]:
    p = f.pki_dir
    args = [
        f"--name={f.name}",
        f"--data-dir={f.data_dir}",
        f"--listen-client-urls={f.client_urls[0]}",
        f"--advertise-client-urls={f.client_urls[1]}",
        f"--listen-peer-urls={f.peer_urls[0]}",
        f"--initial-advertise-peer-urls={f.peer_urls[1]}",
        f"--initial-cluster={f.initial_cluster}",
        "--initial-cluster-state=new",
        f"--cert-file={p}/{certs.ETCD_SERVER}.crt",
        f"--key-file={p}/{certs.ETCD_SERVER}.key",
        f"--trusted-ca-file={p}/{certs.ETCD_CA}.crt",
        "--client-cert-auth=true",
        f"--peer-cert-file={p}/{certs.ETCD_PEER}.crt",
        f"--peer-key-file={p}/{certs.ETCD_PEER}.key",
        f"--peer-trusted-ca-file={p}/{certs.ETCD_CA}.crt",
        "--peer-client-cert-auth=true",
        "--snapshot-count=10000",
        "--log-level=warn",
    ]
    if f.metrics_url:
        args.append(f"--listen-metrics-urls={f.metrics_url}")
    return args


def _controller_args(kubeconfig: str, secure_port: int, leader_elect: bool, bind_address: str) -> list[str]:
    """What the controller-manager and the scheduler share: one kubeconfig for everything."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={bind_address}",
        f"--secure-port={secure_port}",
        f"--leader-elect={'true' if leader_elect else 'false'}",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(
    *, kubeconfig: str, pki_dir: str, secure_port: int, leader_elect: bool, bind_address: str = "0.0.0.0"
) -> list[str]:
    return [
        *_controller_args(kubeconfig, secure_port, leader_elect, bind_address),
        f"--service-account-private-key-file={pki_dir}/sa.key",
        f"--root-ca-file={pki_dir}/{certs.CLUSTER_CA}.crt",
        "--use-service-account-credentials=true",
        # No CSR signing: the cluster CA's key never leaves the operator.
        "--controllers=*,-csrsigning",
    ]


def scheduler_args(
    *, kubeconfig: str, secure_port: int, leader_elect: bool, bind_address: str = "0.0.0.0"
) -> list[str]:
    return _controller_args(kubeconfig, secure_port, leader_elect, bind_address)
