"""The virtual node's kubelet API (images/kubelet), with real kubectl against a tenant: logs (and -f),
exec with stdin and an exit code, cp both ways, port-forward carrying HTTP; and its refusals: only
the tenant API server's kubelet-client certificate is served, and a tenant reaches only its own pods,
whatever names it chooses."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import certificates as certs
from stockade import naming
from stockade.syncer import translate as tr
from stockade_dev.testbed.kubectl import Kubectl
from tests.e2e.conftest import Operator, Tenant, create_tenant
from tests.e2e.workloads import APP_NAMESPACE, WEB, apply, pod, pods
from tests.helpers import eventually

TICKER = "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 1; done"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubelet")


@pytest.fixture(scope="module")
def gamma(stockade: Operator, super_kubectl: Kubectl, folder: Path) -> Iterator[Tenant]:
    tenant = create_tenant(super_kubectl, folder, "gamma", {"controlPlane": {"service": {"type": "NodePort"}}})
    tenant.wait_ready()
    tenant.fetch_kubeconfig()
    k = tenant.kubectl
    apply(k, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}})
    eventually(lambda: k("get", "serviceaccount", "default", "-n", APP_NAMESPACE, check=False), timeout=60,
               what="the tenant namespace's default ServiceAccount")  # fmt: skip
    apply(k, pod("ticker", TICKER), pod("web", WEB))
    for name in ("ticker", "web"):
        k("wait", "--for=condition=Ready", f"pod/{name}", "-n", APP_NAMESPACE, "--timeout=180s", timeout=200)
    yield tenant
    super_kubectl("delete", "tenant", tenant.name, "--ignore-not-found", "--wait=false")


def test_logs_show_the_containers_output_and_follow_streams_new_lines(gamma: Tenant) -> None:
    k = gamma.kubectl
    eventually(lambda: "tick 1" in k("logs", "ticker", "-n", APP_NAMESPACE), timeout=60, what="ticker's first lines")
    assert k("logs", "ticker", "-n", APP_NAMESPACE, "--tail=1").count("\n") == 1
    before = int(k("logs", "ticker", "-n", APP_NAMESPACE, "--tail=1").split()[-1])
    # A follow stream never ends by itself: read it for a few seconds, then stop it.
    process = subprocess.Popen(
        [k.binary, "--kubeconfig", str(k.kubeconfig), "logs", "-f", "ticker", "-n", APP_NAMESPACE, "--tail=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(5)
    finally:
        process.terminate()
    out, err = process.communicate(timeout=10)
    ticks = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("tick ")]
    assert len(ticks) >= 3 and ticks[-1] > before, (out, err)  # new lines arrived while following


def test_exec_carries_stdin_and_the_exit_code(gamma: Tenant) -> None:
    k = gamma.kubectl
    result = subprocess.run(
        [k.binary, "--kubeconfig", str(k.kubeconfig), "exec", "-i", "ticker", "-n", APP_NAMESPACE, "--",
         "sh", "-c", "cat; echo from-$(hostname); exit 3"],
        input="hello through stdin\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hello through stdin\nfrom-ticker\n"
    # Positive control of the exit code: a command that succeeds exits 0.
    assert k("exec", "ticker", "-n", APP_NAMESPACE, "--", "true") == ""


def test_cp_copies_both_ways(gamma: Tenant, folder: Path) -> None:
    k = gamma.kubectl
    source = folder / "to-pod.txt"
    source.write_text("into the pod\n")
    k("cp", str(source), f"{APP_NAMESPACE}/ticker:/tmp/in.txt")
    assert k("exec", "ticker", "-n", APP_NAMESPACE, "--", "cat", "/tmp/in.txt") == "into the pod\n"
    k("exec", "ticker", "-n", APP_NAMESPACE, "--", "sh", "-c", "echo out of the pod > /tmp/out.txt")
    target = folder / "from-pod.txt"
    k("cp", f"{APP_NAMESPACE}/ticker:/tmp/out.txt", str(target))
    assert target.read_text() == "out of the pod\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forward_and_fetch(kubectl: Kubectl, namespace: str, pod_name: str) -> tuple[str | None, str]:
    """`kubectl port-forward` to the pod's port 8080 and a GET through it: the page (None if none
    came within 30 s) and what kubectl said."""
    port = free_port()
    process = subprocess.Popen(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "port-forward", "-n", namespace,
         f"pod/{pod_name}", f"{port}:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def page() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    try:
        got: str | None = eventually(page, timeout=30, interval=1, what="a page through port-forward")
    except AssertionError:
        got = None
    finally:
        process.terminate()
    out, err = process.communicate(timeout=10)
    return got, out + err


def test_port_forward_reaches_the_pod_as_on_the_super_cluster(gamma: Tenant, super_kubectl: Kubectl) -> None:
    """The tenant's port-forward goes through its kubelet API to the super cluster's, and ends as the
    same port-forward done directly on the super cluster does (the fair baseline): the page, or —
    on this machine, where containerd 1.6 forwards into the host's network namespace of a gVisor
    pod, whose network lives inside the sandbox — the runtime's same refusal."""
    tenant_page, tenant_said = forward_and_fetch(gamma.kubectl, APP_NAMESPACE, "web")
    (super_pod,) = [
        p["metadata"]["name"] for p in pods(super_kubectl, gamma.workloads_namespace, f"{tr.carried_label('app')}=web")
    ]
    super_page, super_said = forward_and_fetch(super_kubectl, gamma.workloads_namespace, super_pod)
    assert "Handling connection" in tenant_said, tenant_said  # the stream was set up end to end
    assert tenant_page == super_page, (tenant_said, super_said)
    if super_page is None:
        assert "failed to execute portforward" in super_said and "failed to execute portforward" in tenant_said
    else:
        assert tenant_page == "hello\n"


def kubelet_get(address: str, path: str, cert: tuple[bytes, bytes] | None, ca: bytes) -> int:
    """The HTTP status of GET `path` at the kubelet API, presenting `cert` (PEM pair) if given."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.check_hostname = False
    with tempfile.TemporaryDirectory() as tmp:
        if cert:
            crt, key = Path(tmp, "c.crt"), Path(tmp, "c.key")
            crt.write_bytes(cert[0])
            key.write_bytes(cert[1])
            context.load_cert_chain(crt, key)
        try:
            with urllib.request.urlopen(f"https://{address}{path}", context=context, timeout=10) as response:
                response.read(100)
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


def test_only_the_api_servers_kubelet_client_is_served(gamma: Tenant, super_kubectl: Kubectl) -> None:
    namespace = gamma.control_plane_namespace

    def pair(leaf: str) -> tuple[bytes, bytes]:
        data = super_kubectl.json("get", "secret", naming.pki_secret(leaf), "-n", namespace)["data"]
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])

    ca = pair(certs.CLUSTER_CA)[0]
    address = f"{super_kubectl.json('get', 'service', naming.KUBELET, '-n', namespace)['spec']['clusterIP']}:10250"
    path = f"/containerLogs/{APP_NAMESPACE}/ticker/main?tailLines=1"
    # The tenant's kubelet API is at the address the virtual node publishes.
    node = gamma.kubectl.json("get", "node", naming.virtual_node(gamma.name))
    assert {"type": "InternalIP", "address": address.split(":")[0]} in node["status"]["addresses"]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    # Positive control: the API server's own kubelet-client certificate is served.
    assert kubelet_get(address, path, pair(certs.APISERVER_KUBELET_CLIENT), ca) == 200
    # Refused: no certificate, and a certificate of the same CA for another identity (the tenant admin).
    assert kubelet_get(address, path, None, ca) == 401
    assert kubelet_get(address, path, pair(certs.ADMIN), ca) == 401


def test_a_tenant_reaches_only_its_own_pods_whatever_names_it_chooses(gamma: Tenant, super_kubectl: Kubectl) -> None:
    k = gamma.kubectl
    # A tenant namespace and pod named like the control plane's in the super cluster: its logs are
    # its own pod's, never the control plane's.
    impostor_ns = gamma.control_plane_namespace
    apply(k, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": impostor_ns}})
    eventually(lambda: k("get", "serviceaccount", "default", "-n", impostor_ns, check=False), timeout=60,
               what="the impostor namespace's default ServiceAccount")  # fmt: skip
    impostor = pod("etcd-0", "echo own etcd-0 of the tenant; sleep 600")
    impostor["metadata"]["namespace"] = impostor_ns
    apply(k, impostor)
    k("wait", "--for=condition=Ready", "pod/etcd-0", "-n", impostor_ns, "--timeout=180s", timeout=200)
    assert k("logs", "etcd-0", "-n", impostor_ns) == "own etcd-0 of the tenant\n"
    # The kubelet API's identity in the super cluster reaches no control-plane pod, by any name.
    sa = f"system:serviceaccount:{gamma.control_plane_namespace}:{naming.KUBELET}"

    def can(verb: str, subresource: str, namespace: str) -> str:
        extra = [f"--subresource={subresource}"] if subresource else []
        args = ("auth", "can-i", verb, "pods", *extra, "-n", namespace, "--as", sa)
        return super_kubectl(*args, check=False).strip()

    for namespace in (gamma.control_plane_namespace, "kube-system", "default"):
        for verb, subresource in (("get", "log"), ("create", "exec"), ("create", "portforward"), ("list", "")):
            assert can(verb, subresource, namespace) == "no", (namespace, verb, subresource)
    # Positive control: in its own tenant's workloads namespace it may, and nothing more there.
    for verb, subresource in (("get", "log"), ("create", "exec"), ("create", "portforward"), ("list", "")):
        assert can(verb, subresource, gamma.workloads_namespace) == "yes", (verb, subresource)
    assert can("delete", "", gamma.workloads_namespace) == "no"
