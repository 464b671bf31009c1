"""The upstream Kubernetes conformance suite, run here: against a tenant cluster and, as the
baseline, against the super cluster itself (`make conformance`, and a selection in the e2e tier).

The suite is upstream's `e2e.test` of the tenant's Kubernetes version, run by `ginkgo`, both built
from the Kubernetes module (`hack/testbin/build.sh conformance`), never modified. The images its
tests use are the ones that can be built here (agnhost from the Kubernetes module, busybox from
Debian's busybox-static, pause from its C source), served by the local registry under the names the
suite's own image configuration (`KUBE_TEST_REPO_LIST`) points it at. A test whose image is not
built here fails on both sides, and is counted, not hidden.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from stockade_dev.localcluster import images, registry
from stockade_dev.localcluster.cluster import BUSYBOX, PAUSE_SOURCE, static_binary
from stockade_dev.testbed.binaries import cache_root, kubernetes_version, testbin_dir

# Where the suite's registries point (its KUBE_TEST_REPO_LIST): the local open registry.
E2E_REGISTRY = f"{registry.OPEN_HOST}/e2e-test-images"
GC_REGISTRY = registry.OPEN_HOST
# The suite's names and tags in Kubernetes 1.34 (test/utils/image/manifest.go).
AGNHOST, BUSYBOX_TAG, PAUSE_TAG = "2.56", "1.37.0-1", "3.10.1"
IMAGES_BUILT_HERE = (f"{E2E_REGISTRY}/agnhost:{AGNHOST}", f"{E2E_REGISTRY}/busybox:{BUSYBOX_TAG}",
                     f"{GC_REGISTRY}/pause:{PAUSE_TAG}")  # fmt: skip
# Upstream images not built here (their tests fail on both sides, ErrImagePull): Debian-based
# images (jessie-dnsutils for the DNS tests, httpd and nginx for Deployments and kubectl tests) need
# a Debian root filesystem assembled without Docker, and sample-apiserver its own module.
NOT_BUILT_HERE = ("jessie-dnsutils", "httpd", "nginx", "sample-apiserver", "nonroot", "kitten", "nautilus")
# Where the images built here differ from upstream's, so a test fails on both sides: agnhost's
# userland is busybox's applets, not Alpine's netcat-openbsd, bash, curl and dig (e.g. `nc -t` of the
# Service reachability checks); Debian's busybox 1.35 `sh` drops environment variables whose names are
# not shell identifiers (`data-1`, the ConfigMap/Secret envFrom tests).
IMAGE_GAPS = (
    "agnhost: busybox applets instead of Alpine's netcat-openbsd, bash, curl, dig",
    "busybox: Debian's 1.35 sh drops environment variables whose names are not identifiers",
)

# The CI selection: Services, pods, ConfigMaps, Secrets, projected and downward-API volumes, Jobs,
# ServiceAccounts, RBAC-guarded API machinery; only tests whose images are built here.
CI_FOCUS = "|".join(
    [
        r"\[sig-network\] Services should (find a service from listing|provide secure master|"
        r"test the lifecycle of an Endpoint|delete a collection of services)",
        r"\[sig-node\] Pods should (get a host IP|be submitted and removed|be updated)",
        r"\[sig-node\] ConfigMap should be consumable via environment variable",
        r"\[sig-storage\] ConfigMap should be consumable from pods in volume \[NodeConformance\]",
        r"\[sig-node\] Secrets should be consumable from pods in env vars",
        r"\[sig-storage\] Secrets should be consumable from pods in volume \[NodeConformance\]",
        r"\[sig-storage\] Projected (configMap|secret|downwardAPI) should "
        r"(be consumable from pods in volume \[|provide container's cpu limit)",
        r"\[sig-storage\] Downward API volume should provide podname only",
        r"\[sig-node\] Downward API should provide pod name, namespace and IP address as env vars",
        r"\[sig-apps\] Job should (run a job to completion when tasks sometimes fail|delete a job)",
        r"\[sig-auth\] ServiceAccounts should (mount an API token into pods|allow opting out|"
        r"guarantee kube-root-ca.crt exist)",
        r"\[sig-auth\] SubjectReview should support SubjectReview API operations",
        r"\[sig-api-machinery\] (Namespaces \[Serial\] should ensure that all pods are removed|"
        r"ResourceQuota should create a ResourceQuota and capture the life of a configMap|"
        r"CustomResourceDefinition resources \[Privileged:ClusterAdmin\] Simple CustomResourceDefinition "
        r"creating/deleting|Garbage collector should delete pods created by rc when not orphaning|"
        r"Watchers should be able to restart watching from the last resource version|"
        r"server version should find the server version)",
    ]
)

# Tenant failures with a known cause and the issue each waits for: a regex that must match the
# failure's message or the test's own output. The suite reads a test pod's output through
# `pods/log` and runs commands (`kubectl exec`) through `pods/exec`; the tenant's API server forwards
# both to the virtual node's kubelet API (port 10250), which does not exist yet.
KNOWN_TENANT_FAILURES: tuple[tuple[str, str], ...] = (
    (r'failed to get logs from .*an error on the server \("unknown"\)',
     "reads the pod's output (pods/log): the virtual node has no kubelet API yet (issue 12)"),
    (r":10250/(exec|attach|portForward|containerLogs)/",
     "runs a command in a pod (pods/exec): the virtual node has no kubelet API yet (issue 12)"),
)  # fmt: skip


def suite_binaries() -> tuple[Path, Path]:
    bin_dir = testbin_dir()
    e2e, ginkgo = bin_dir / "e2e.test", bin_dir / "ginkgo"
    if not e2e.exists() or not ginkgo.exists():
        raise FileNotFoundError(
            f"the conformance suite is not built in {bin_dir}: run `hack/testbin/build.sh conformance`"
        )
    return e2e, ginkgo


def push_images(out: Any = print) -> None:
    """The suite's images into the local open registry, under the names `repo_list` gives."""
    bin_dir, cache = testbin_dir(), cache_root() / "images"
    pause = static_binary(PAUSE_SOURCE, cache / "pause")
    agnhost, busybox, pause_ref = IMAGES_BUILT_HERE
    specs = [
        images.agnhost_image(agnhost, bin_dir / "agnhost", BUSYBOX, bin_dir / "agnhost-porter"),
        images.full_busybox_image(busybox, BUSYBOX),
        images.ImageSpec(pause_ref, {"/pause": pause}, entrypoint=("/pause",)),
    ]
    for spec in specs:
        name, tag = spec.reference.removeprefix(f"{registry.OPEN_HOST}/").rsplit(":", 1)
        registry.push(images.cached_archive(spec, cache), registry.OPEN, name, tag)
        out(f"image {spec.reference} pushed")


def repo_list(folder: Path) -> Path:
    path = folder / "repo-list.yaml"
    path.write_text(yaml.safe_dump({"promoterE2eRegistry": E2E_REGISTRY, "gcRegistry": GC_REGISTRY}))
    return path


def tenant_spec() -> dict[str, Any]:
    """A Tenant sized for the suite: Pod Security baseline (its test pods run as their image's
    user), room for its objects, small default requests (the local node has 2 CPUs), and its API
    server on a NodePort (the suite runs on this host)."""
    return {
        "kubernetes": {"version": kubernetes_version()},
        "controlPlane": {"service": {"type": "NodePort"}},
        "workloads": {
            "podSecurity": "baseline",
            "quota": {"cpu": "64", "memory": "64Gi", "pods": 400, "services": 200, "configMaps": 1000,
                      "secrets": 1000, "serviceAccounts": 500, "limits": {"cpu": "128", "memory": "128Gi"}},
            "containerDefaults": {"requests": {"cpu": "5m", "memory": "16Mi"}},
        },
    }  # fmt: skip


def spec_name(spec: dict[str, Any]) -> str:
    return " ".join([*spec.get("ContainerHierarchyTexts", []), spec.get("LeafNodeText", "")]).strip()


def conformance_specs(report: Path) -> list[dict[str, Any]]:
    """The [Conformance] tests of a ginkgo JSON report."""
    suites = json.loads(report.read_text())
    return [
        s for suite in suites for s in suite.get("SpecReports") or []
        if s.get("LeafNodeType") == "It" and "[Conformance]" in spec_name(s)
    ]  # fmt: skip


def dry_run(folder: Path, focus: str = "", skip: str = "") -> list[str]:
    """The names of the [Conformance] tests `focus`/`skip` select (all of them for an empty focus)."""
    e2e, _ = suite_binaries()
    report = folder / "dry-run.json"
    args = [str(e2e), "--ginkgo.dry-run", "--ginkgo.no-color", f"--ginkgo.json-report={report}",
            "--ginkgo.label-filter=Conformance", "--provider=skeleton",
            *([f"--ginkgo.focus={focus}"] if focus else []), *([f"--ginkgo.skip={skip}"] if skip else [])]  # fmt: skip
    subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300, check=True)
    return sorted(spec_name(s) for s in conformance_specs(report) if s.get("State") == "passed")


def known_cause(message: str, output: str) -> str | None:
    """The known cause of a tenant failure, from its message or else the test's own output."""
    for pattern, why in KNOWN_TENANT_FAILURES:
        if re.search(pattern, message) or re.search(pattern, output):
            return why
    return None


def run_suite(
    target: str,
    kubeconfig: Path,
    folder: Path,
    *,
    focus: str,
    skip: str,
    procs: int,
    timeout_seconds: int,
    out: Any = print,
) -> dict[str, Any]:
    """One ginkgo run of the selected [Conformance] tests against `kubeconfig`'s cluster, summarised."""
    e2e, ginkgo = suite_binaries()
    run_dir = folder / target
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "report.json"
    command = [
        str(ginkgo), f"--procs={procs}", "--no-color", f"--timeout={timeout_seconds}s", "--silence-skips",
        f"--output-dir={run_dir}", "--json-report=report.json", "--label-filter=Conformance",
        *([f"--focus={focus}"] if focus else []), *([f"--skip={skip}"] if skip else []),
        str(e2e), "--", f"--kubeconfig={kubeconfig}", "--provider=local", f"--report-dir={run_dir}",
        f"--kubectl-path={testbin_dir() / 'kubectl'}",
    ]  # fmt: skip
    env = {**os.environ, "KUBE_TEST_REPO_LIST": str(repo_list(folder)), "KUBECONFIG": str(kubeconfig)}
    started = time.monotonic()
    out(f"{target}: ginkgo --procs={procs}, at most {timeout_seconds}s (log: {run_dir / 'ginkgo.log'})")
    with (run_dir / "ginkgo.log").open("w") as log:
        # ginkgo bounds the run itself (--timeout); this bound only catches a hung ginkgo.
        returncode = subprocess.run(
            command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_seconds + 600
        ).returncode
    specs = conformance_specs(report) if report.exists() else []
    states: dict[str, list[dict[str, Any]]] = {}
    for s in specs:
        states.setdefault(str(s.get("State")), []).append(s)
    failures = []
    for state, found in sorted(states.items()):
        if state in ("passed", "skipped"):
            continue
        for s in found:
            message = str((s.get("Failure") or {}).get("Message", ""))
            cause = known_cause(message, str(s.get("CapturedGinkgoWriterOutput", "")))
            failures.append({"test": spec_name(s), "state": state, "message": message[:1200], "known_cause": cause})
    summary: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "ginkgo_exit_code": returncode,
        "counts": {state: len(found) for state, found in sorted(states.items())},
        "passed_tests": sorted(spec_name(s) for s in states.get("passed", [])),
        "failures": sorted(failures, key=lambda f: f["test"]),
    }
    out(f"{target}: {summary['counts']} in {summary['seconds']}s")
    return summary


def compare(targets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the tenant lacks: tests that pass on the super cluster and fail on the tenant, split into
    those with a known cause (and the issue it waits for) and the unexplained ones; and, apart, the
    tests that passed on the super cluster and did not run on the tenant (a run cut by its bound)."""
    tenant, super_ = targets.get("tenant", {}), targets.get("super", {})
    passed_on_super = set(super_.get("passed_tests", [])) - set(tenant.get("passed_tests", []))
    causes = {f["test"]: f.get("known_cause") for f in tenant.get("failures", [])}
    failed = sorted(passed_on_super & set(causes))
    return {
        "pass_on_super_not_on_tenant": len(failed),
        "explained": {test: causes[test] for test in failed if causes[test]},
        "unexplained": [test for test in failed if not causes[test]],
        "not_run_on_tenant": sorted(passed_on_super - set(causes)),
    }
