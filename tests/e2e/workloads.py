"""Tenant workloads for the e2e tests: pods and Deployments of the busybox test image that pass
Pod Security `restricted`, and helpers to wait for them on either side."""

from __future__ import annotations

from typing import Any

import yaml

from stockade_dev.localcluster.cluster import RESTRICTED_SECURITY_CONTEXT as RESTRICTED
from stockade_dev.localcluster.cluster import WORKLOAD_IMAGE
from stockade_dev.testbed.kubectl import Kubectl
from tests.e2e.conftest import RUNTIME_CLASS, SANDBOX_RUNTIME, can_inspect_runtime, containerd_runtime
from tests.helpers import eventually

APP_NAMESPACE = "shop"
WEB = "echo hello > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"


def container(command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "image": WORKLOAD_IMAGE,
        "command": ["sh", "-c", command],
        "securityContext": RESTRICTED,
        **extra,
    }


def pod(name: str, command: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": APP_NAMESPACE, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [container(command)], **spec},
    }


def web_deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APP_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container(WEB, ports=[{"containerPort": 8080}])]},
            },
        },
    }


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))


def pods(kubectl: Kubectl, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", namespace, *(["-l", selector] if selector else [])]
    return list(kubectl.json(*args)["items"])


def running(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p for p in items if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def finished(kubectl: Kubectl, name: str, timeout: float = 180) -> dict[str, Any]:
    """The tenant pod `name` once it Succeeded or Failed (status mirrored up by the syncer)."""

    def done() -> dict[str, Any] | None:
        obj = kubectl.json("get", "pod", name, "-n", APP_NAMESPACE)
        return obj if obj.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return dict(eventually(done, timeout=timeout, interval=2, what=f"tenant pod {name} finished"))


def termination_message(obj: dict[str, Any]) -> str:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    return str(statuses[0].get("state", {}).get("terminated", {}).get("message", "")) if statuses else ""


def assert_sandboxed(items: list[dict[str, Any]]) -> None:
    """Each pod asks for the sandbox RuntimeClass and containerd really runs its containers with it."""
    assert items
    for item in items:
        assert item["spec"].get("runtimeClassName") == RUNTIME_CLASS, item["metadata"]["name"]
        if can_inspect_runtime():
            for status in item["status"].get("containerStatuses") or []:
                assert containerd_runtime(status["containerID"]) == SANDBOX_RUNTIME, (item["metadata"]["name"], status)


def probe_command(targets: dict[str, str]) -> str:
    """Try a TCP connection to each `name: ip:port`; write `name=open|closed (exit code)` lines.
    (busybox nc exits 0 once connected and its stdin ends; a dropped SYN runs into the timeout.)"""
    checks = []
    for name, address in targets.items():
        ip, port = address.rsplit(":", 1)
        checks.append(
            f"timeout 4 nc {ip} {port} </dev/null 2>/dev/null; rc=$?; "
            f'if [ $rc = 0 ]; then echo {name}=open; else echo "{name}=closed ($rc)"; fi'
        )
    # NetworkPolicy engines program a new pod's rules a moment after it starts (kube-router: on the
    # pod's event); wait until this pod's own allowed path works, so the rules are in place.
    own_ip, own_port = targets["own-pod"].rsplit(":", 1)
    settle = f"for i in $(seq 30); do timeout 2 nc {own_ip} {own_port} </dev/null 2>/dev/null && break; sleep 1; done"
    return settle + "; { " + "; ".join(checks) + "; } > /dev/termination-log"
