"""The virtual node's kubelet API (images/kubelet), with real kubectl against a tenant: logs (and -f,
--previous), exec with stdin and an exit code, exec -it with a terminal of the client's size, attach,
cp both ways, port-forward carrying HTTP, top (metrics.k8s.io); and its refusals: only
the tenant API server's kubelet-client certificate is served, and a tenant reaches only its own pods,
whatever names it chooses."""

from __future__ import annotations

import base64
import fcntl
import os
import pty
import select
import socket
import ssl
import struct
import subprocess
import tempfile
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import certificates as certs
from stockade import naming
from stockade.syncer import translate as tr
from stockade_dev.testbed.kubectl import Kubectl, KubectlError
from tests.e2e.conftest import Operator, Tenant, create_tenant
from tests.e2e.workloads import APP_NAMESPACE, WEB, apply, pod, pods
from tests.helpers import eventually

TICKER = "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 1; done"
# Fails once, then runs: its previous container said "run 1", its current one "run 2".
TWICE = "if [ -f /state/ran ]; then echo run 2; sleep 600; else touch /state/ran; echo run 1; exit 1; fi"
# Answers each line on its stdin (what `kubectl attach -i` sends it).
LISTENER = "echo listening; while read -r line; do echo got $line; done"


def restarted_once() -> dict[str, Any]:
    twice = pod("twice", TWICE, restartPolicy="Always", volumes=[{"name": "state", "emptyDir": {}}])
    twice["spec"]["containers"][0]["volumeMounts"] = [{"name": "state", "mountPath": "/state"}]
    return twice


def listener() -> dict[str, Any]:
    obj = pod("listener", LISTENER)
    obj["spec"]["containers"][0]["stdin"] = True
    return obj


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
    apply(k, pod("ticker", TICKER), pod("web", WEB), restarted_once(), listener())
    for name in ("ticker", "web", "listener"):
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


def test_logs_previous_shows_the_container_before_its_restart(gamma: Tenant) -> None:
    k = gamma.kubectl

    def restarted() -> bool:
        obj = k.json("get", "pod", "twice", "-n", APP_NAMESPACE)
        (status,) = obj.get("status", {}).get("containerStatuses") or [{}]
        return bool(status.get("restartCount", 0) >= 1 and status.get("ready"))

    eventually(restarted, timeout=120, interval=2, what="pod twice restarted once and ready")
    assert k("logs", "twice", "-n", APP_NAMESPACE, "--previous") == "run 1\n"
    assert k("logs", "twice", "-n", APP_NAMESPACE) == "run 2\n"  # positive control: the current one


def in_terminal(
    argv: list[str], rows: int, columns: int, timeout: float = 60, resize: tuple[bytes, int, int] | None = None
) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of `rows` x `columns` as its stdin/stdout (as a user's
    shell would): its exit code and everything it wrote to the terminal. `resize` (seen, rows,
    columns): once `seen` is written, the terminal is resized (kubectl gets SIGWINCH, as when a
    user resizes the window)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of the given size, then kubectl
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.execv(argv[0], argv)
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if resize and resize[0] in output:
                    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", resize[1], resize[2], 0, 0))
                    resize = None
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_exec_it_gives_a_terminal_of_the_clients_size(gamma: Tenant) -> None:
    k = gamma.kubectl
    base = [k.binary, "--kubeconfig", str(k.kubeconfig), "exec"]
    # (`tty` cannot name a gVisor sandbox's terminal device; `test -t` and `stty` use it.)
    # The client's size travels on the resize stream, from the start and at every SIGWINCH. The
    # first one can be lost in the super node's runtime (seen here under load: a 0x0 terminal that
    # stays so), as with any kubelet; a resize after the command runs must arrive: the command
    # waits for it, 6 s at most.
    script = ["--", "sh", "-c", "if [ -t 0 ]; then echo on-a-terminal; else echo no-terminal; fi; "
              "for i in $(seq 20); do s=$(stty size 2>/dev/null); [ \"$s\" = '34 102' ] && break; sleep 0.3; done; "
              "echo \"size: $s\"; exit 4"]  # fmt: skip
    command = [*base, "-it", "ticker", "-n", APP_NAMESPACE, *script]
    code, said = in_terminal(command, rows=33, columns=101, resize=(b"on-a-terminal", 34, 102))
    assert code == 4, said
    assert "on-a-terminal" in said and "size: 34 102" in said, said  # a terminal, resized with the client's
    # Positive control: without -t, the same command has no terminal and no size.
    command = [*base, "-i", "ticker", "-n", APP_NAMESPACE, *script]
    code, said = in_terminal(command, rows=33, columns=101, resize=(b"no-terminal", 34, 102))
    assert code == 4 and "no-terminal" in said and "size: 34 102" not in said, said


def test_attach_carries_stdin_and_the_containers_output(gamma: Tenant) -> None:
    k = gamma.kubectl
    process = subprocess.Popen(
        [k.binary, "--kubeconfig", str(k.kubeconfig), "attach", "-i", "listener", "-n", APP_NAMESPACE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin is not None
    try:
        time.sleep(5)  # the stream is set up
        process.stdin.write("through attach\n")
        process.stdin.flush()
        time.sleep(5)
    finally:
        process.terminate()
    out, err = process.communicate(timeout=10)
    assert "got through attach" in out, (out, err)
    # The line reached the container's own stdin: its log says so too.
    assert "got through attach" in k("logs", "listener", "-n", APP_NAMESPACE)


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


def test_top_shows_the_pods_usage_to_whom_the_tenant_lets_see_it(gamma: Tenant, super_kubectl: Kubectl) -> None:
    k = gamma.kubectl

    def top(*args: str) -> dict[str, list[str]]:
        """`kubectl top` rows by name (metrics-server has figures after its first scrapes)."""
        rows = k("top", *args, "--no-headers").splitlines()
        return {row.split()[0]: row.split()[1:] for row in rows}

    # The tenant's own pods, by their tenant names, with CPU and memory figures (each pod's once
    # metrics-server has scraped it: a pod started late is missing from the first answers).
    def usage_of_every_pod() -> dict[str, list[str]]:
        usage = top("pods", "-n", APP_NAMESPACE)
        assert {"ticker", "web", "listener"} <= set(usage), usage
        return usage

    pods_usage = eventually(usage_of_every_pod, timeout=120, interval=5, what="kubectl top pods of every pod")
    cpu, memory = pods_usage["ticker"]
    assert cpu.endswith("m") and memory.endswith("Mi") and int(memory[:-2]) > 0, pods_usage
    # A label selector means what it means in the tenant; --containers names the tenant's container.
    assert set(top("pods", "-n", APP_NAMESPACE, "-l", "app=web")) == {"web"}
    assert "main" in k("top", "pod", "ticker", "-n", APP_NAMESPACE, "--containers")
    # The virtual node: the sum of its pods.
    assert set(top("node")) == {naming.virtual_node(gamma.name)}
    # Authorized by the tenant: a user with no rights is refused, the same user with `view` in the
    # namespace (which metrics reading is aggregated into) is served.
    with pytest.raises(KubectlError, match=r'User "alice" cannot list resource "pods" in API group "metrics\.k8s\.io"'):
        k("top", "pods", "-n", APP_NAMESPACE, "--as=alice")
    k("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", APP_NAMESPACE)
    assert "ticker" in eventually(
        lambda: k("top", "pods", "-n", APP_NAMESPACE, "--as=alice"), timeout=30, what="alice's kubectl top"
    )
    # Its super identity reads the metrics of its own workloads namespace only.
    sa = f"system:serviceaccount:{gamma.control_plane_namespace}:{naming.KUBELET}"
    for namespace, answer in ((gamma.workloads_namespace, "yes"), (gamma.control_plane_namespace, "no"),
                              ("kube-system", "no")):  # fmt: skip
        assert super_kubectl("auth", "can-i", "list", "pods.metrics.k8s.io", "-n", namespace, "--as", sa,
                             check=False).strip() == answer, namespace  # fmt: skip
