"""A real etcd + kube-apiserver (+ kube-controller-manager) on random loopback ports."""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from stockade import certificates as certs
from stockade import components, naming, pki
from stockade.kubeconfig import build_kubeconfig
from stockade_dev.testbed.binaries import find_binary
from stockade_dev.testbed.process import ManagedProcess

SERVICE_CIDR = "10.0.0.0/24"
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ControlPlaneStartError(RuntimeError):
    pass


class LocalControlPlane:
    """One independent control plane. Use as a context manager, or call start()/stop().

    Pass `pki` to run it with certificates issued elsewhere (e.g. by the operator); by default
    it issues its own. Files live in a temporary folder removed by stop().
    """

    def __init__(
        self,
        name: str = "testbed",
        *,
        owner: str | None = None,
        controller_manager: bool = False,
        scheduler: bool = False,
        control_plane_pki: certs.ControlPlanePKI | None = None,
        extra_apiserver_args: list[str] | None = None,
        allow_privileged: bool = False,
        root: Path | None = None,
        host_ip: str | None = None,
        service_cidr: str = SERVICE_CIDR,
        extra_controller_manager_args: list[str] | None = None,
        apiserver_port: int | None = None,
    ):
        """`host_ip`: serve the API server on all addresses and advertise this one, so pods on a
        real node reach it through the `kubernetes` Service (the default is loopback only).
        `apiserver_port`: its port (default: a free one)."""
        self.name = name
        self.owner = owner or uuid.uuid4().hex
        self.with_controller_manager = controller_manager
        self.with_scheduler = scheduler
        self.extra_apiserver_args = extra_apiserver_args or []
        self.allow_privileged = allow_privileged
        self.host_ip = host_ip
        self.service_cidr = service_cidr
        self.extra_controller_manager_args = extra_controller_manager_args or []
        self.dir = Path(tempfile.mkdtemp(prefix=f"stockade-{name}-", dir=root))
        apiserver_ips = ("127.0.0.1", naming.service_cidr_first_ip(service_cidr), *([host_ip] if host_ip else []))
        self.pki = control_plane_pki or certs.create_control_plane_pki(
            certs.ServingNames(
                apiserver_dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
                apiserver_ips=apiserver_ips,
                etcd_dns=("localhost",),
                etcd_ips=("127.0.0.1",),
            )
        )
        # The test bed's owner is the cluster's superuser, the one identity allowed system:masters.
        self.superuser = pki.issue_certificate(
            self.pki.cas[certs.CLUSTER_CA],
            pki.CertificateRequest("stockade-testbed-superuser", organizations=(certs.MASTERS_GROUP,), client=True),
        )
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = apiserver_port or free_port()
        self.processes: list[ManagedProcess] = []

    # -- files ------------------------------------------------------------------------------

    def _write(self, relative: str, data: bytes) -> Path:
        path = self.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _write_pki(self) -> None:
        for name, ck in self.pki.cas.items():
            self._write(f"pki/{name}.crt", ck.cert_pem)
        for name, ck in self.pki.leaves.items():
            self._write(f"pki/{name}.crt", ck.cert_pem)
            self._write(f"pki/{name}.key", ck.key_pem)
        self._write("pki/sa.key", pki.private_key_pem(self.pki.service_account_key))
        self._write("pki/sa.pub", pki.public_key_pem(self.pki.service_account_key))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_pem(self) -> bytes:
        return self.pki.cas[certs.CLUSTER_CA].cert_pem

    def kubeconfig_for(self, ck: pki.CertKey, user: str) -> dict[str, Any]:
        return build_kubeconfig(
            cluster=self.name,
            server=self.server,
            ca_pem=self.ca_pem,
            user=user,
            cert_pem=ck.cert_pem,
            key_pem=ck.key_pem,
        )

    def write_kubeconfig(self, filename: str, kubeconfig: dict[str, Any]) -> Path:
        return self._write(filename, yaml.safe_dump(kubeconfig).encode())

    @property
    def kubeconfig_path(self) -> Path:
        """The superuser's kubeconfig."""
        return self.dir / "superuser.kubeconfig"

    @property
    def kubeconfig(self) -> dict[str, Any]:
        return self.kubeconfig_for(self.superuser, "superuser")

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        """Start a process that belongs to this cluster: stopped with it, its log beside the others."""
        process = ManagedProcess(component, argv, self.dir / f"{component}.log", self.owner, env=env)
        self.processes.append(process)
        process.start()
        return process

    def _etcd_args(self) -> list[str]:
        client_url = f"https://127.0.0.1:{self.etcd_port}"
        peer_url = f"https://127.0.0.1:{self.etcd_peer_port}"
        flags = components.EtcdFlags(
            pki_dir=str(self.dir / "pki"),
            data_dir=str(self.dir / "etcd"),
            name="default",
            client_urls=(client_url, client_url),
            peer_urls=(peer_url, peer_url),
            initial_cluster=f"default={peer_url}",
        )
        return [str(find_binary("etcd")), *components.etcd_args(flags)]

    def _apiserver_args(self) -> list[str]:
        auth_config = self._write("authentication.yaml", yaml.safe_dump(components.authentication_config()).encode())
        flags = components.ApiServerFlags(
            pki_dir=str(self.dir / "pki"),
            etcd_servers=(f"https://127.0.0.1:{self.etcd_port}",),
            secure_port=self.apiserver_port,
            service_cidr=self.service_cidr,
            authentication_config_file=str(auth_config),
            bind_address="0.0.0.0" if self.host_ip else "127.0.0.1",
            advertise_address=self.host_ip or "127.0.0.1",
            allow_privileged=self.allow_privileged,
            extra=tuple(self.extra_apiserver_args),
        )
        return [str(find_binary("kube-apiserver")), *components.apiserver_args(flags)]

    def _controller_manager_args(self) -> list[str]:
        kubeconfig = self.write_kubeconfig(
            "controller-manager.kubeconfig",
            self.kubeconfig_for(self.pki.leaves[certs.CONTROLLER_MANAGER], "system:kube-controller-manager"),
        )
        args = components.controller_manager_args(
            kubeconfig=str(kubeconfig),
            pki_dir=str(self.dir / "pki"),
            secure_port=free_port(),
            leader_elect=False,
            bind_address="127.0.0.1",
        )
        return [str(find_binary("kube-controller-manager")), *args, *self.extra_controller_manager_args]

    def _scheduler_args(self) -> list[str]:
        kubeconfig = self.write_kubeconfig(
            "scheduler.kubeconfig", self.kubeconfig_for(self.pki.leaves[certs.SCHEDULER], "system:kube-scheduler")
        )
        args = components.scheduler_args(
            kubeconfig=str(kubeconfig), secure_port=free_port(), leader_elect=False, bind_address="127.0.0.1"
        )
        return [str(find_binary("kube-scheduler")), *args]

    def start(self) -> LocalControlPlane:
        try:
            self._write_pki()
            self.write_kubeconfig(self.kubeconfig_path.name, self.kubeconfig)
            etcd = self.spawn("etcd", self._etcd_args())
            self._wait_ready(etcd, f"https://127.0.0.1:{self.etcd_port}/health", etcd_client=True)
            apiserver = self.spawn("kube-apiserver", self._apiserver_args())
            self._wait_ready(apiserver, f"{self.server}/readyz")
            if self.with_controller_manager:
                self.spawn("kube-controller-manager", self._controller_manager_args())
            if self.with_scheduler:
                self.spawn("kube-scheduler", self._scheduler_args())
        except BaseException:
            self.stop()
            raise
        return self

    def _ssl_context(self, *, etcd_client: bool) -> ssl.SSLContext:
        p = self.dir / "pki"
        if etcd_client:
            context = ssl.create_default_context(cafile=str(p / "etcd-ca.crt"))
            context.load_cert_chain(str(p / "apiserver-etcd-client.crt"), str(p / "apiserver-etcd-client.key"))
        else:
            context = ssl.create_default_context(cafile=str(p / "ca.crt"))
            cert = self._write("pki/superuser.crt", self.superuser.cert_pem)
            key = self._write("pki/superuser.key", self.superuser.key_pem)
            context.load_cert_chain(str(cert), str(key))
        return context

    def _wait_ready(self, process: ManagedProcess, url: str, *, etcd_client: bool = False) -> None:
        context = self._ssl_context(etcd_client=etcd_client)
        deadline = time.monotonic() + START_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            if not process.running():
                raise ControlPlaneStartError(
                    f"{process.name} exited with code {process.exit_code()} while starting:\n{process.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.25)
        raise ControlPlaneStartError(
            f"{process.name} not ready at {url} after {START_TIMEOUT:.0f}s ({last_error}):\n{process.log_tail()}"
        )

    def restart_apiserver(self) -> None:
        """Stop and start the API server on the same port and data (e.g. to test reconnection)."""
        apiserver = next(p for p in self.processes if p.name == "kube-apiserver")
        apiserver.stop()
        apiserver.start()
        self._wait_ready(apiserver, f"{self.server}/readyz")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> dict[str, str]:
        return {p.name: p.log_tail() for p in self.processes}

    def __enter__(self) -> LocalControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
