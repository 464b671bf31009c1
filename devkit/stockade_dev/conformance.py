"""The upstream Kubernetes conformance suite, run here: against a tenant cluster and, as the
baseline, against the super cluster itself (`make conformance`, and a selection in the e2e tier).

The suite is upstream's `e2e.test` of the tenant's Kubernetes version, run by `ginkgo`, both built
from the Kubernetes module (`hack/testbin/build.sh conformance`), never modified. The images its
tests use are the ones that can be built here (agnhost from the Kubernetes module over a Debian
layer with the tools upstream's image adds, busybox from Debian's busybox-static, pause from its
C source, httpd and nginx stand-ins, jessie-dnsutils, nonroot, kitten, nautilus), served by the
local registry under the names the suite's own image configuration (`KUBE_TEST_REPO_LIST`) points
it at. A test whose image is not built here fails on both sides, and is counted, not hidden.
"""

from __future__ import annotations

import copy
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
HTTPD_TAGS, NGINX_TAGS = ("2.4.38-4", "2.4.39-4"), ("1.14-4", "1.15-4")
JESSIE_DNSUTILS_TAG, KITTEN_TAG, NAUTILUS_TAG, NONROOT_TAG = "1.7", "1.7", "1.7", "1.5"
IMAGES_BUILT_HERE = (
    f"{E2E_REGISTRY}/agnhost:{AGNHOST}", f"{E2E_REGISTRY}/busybox:{BUSYBOX_TAG}", f"{GC_REGISTRY}/pause:{PAUSE_TAG}",
    *(f"{E2E_REGISTRY}/httpd:{tag}" for tag in HTTPD_TAGS), *(f"{E2E_REGISTRY}/nginx:{tag}" for tag in NGINX_TAGS),
    f"{E2E_REGISTRY}/jessie-dnsutils:{JESSIE_DNSUTILS_TAG}", f"{E2E_REGISTRY}/kitten:{KITTEN_TAG}",
    f"{E2E_REGISTRY}/nautilus:{NAUTILUS_TAG}", f"{E2E_REGISTRY}/nonroot:{NONROOT_TAG}",
)  # fmt: skip
# Upstream images not built here (their tests fail on both sides, ErrImagePull): sample-apiserver
# needs its own module built and an image of its own; nonewprivs (the AllowPrivilegeEscalation
# test's) needs a setuid-root binary in its layer.
NOT_BUILT_HERE = ("sample-apiserver", "nonewprivs")
# Where the images built here differ from upstream's, so a test may fail on both sides.
IMAGE_GAPS = (
    "agnhost, jessie-dnsutils, nonroot: Debian bookworm's userland (dash as sh, coreutils, bind9-dnsutils, "
    "netcat-openbsd, curl, iproute2, iperf, wget, procps) instead of Alpine's busybox with those tools, "
    "Debian jessie's and debian-base's",
    "httpd, nginx: busybox's httpd serving upstream's document root on port 80, not Apache or nginx",
    "busybox: Debian's 1.35 sh drops environment variables whose names are not identifiers",
)

# The CI selection: Services, DNS, pods, ConfigMaps, Secrets, projected and downward-API volumes,
# Jobs, Deployments, ServiceAccounts, RBAC-guarded API machinery.
CI_FOCUS = "|".join(
    [
        r"\[sig-network\] Services should (find a service from listing|provide secure master|"
        r"test the lifecycle of an Endpoint|delete a collection of services)",
        r"\[sig-network\] DNS should provide (DNS for the cluster|/etc/hosts entries for the cluster)",
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
        r"\[sig-apps\] Deployment RollingUpdateDeployment should delete old pods and create new ones",
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

# Tenant failures with a known cause: (a regex that must match the failure's message or the test's
# own output — the refusal the syncer posted, what the test printed — the cause). Only evidence
# explains a failure, never a test's name: anything else that fails is a regression or a new gap.
BY_DESIGN = "refused by Stockade's policy, by design: "
KNOWN_TENANT_FAILURES: tuple[tuple[str, str], ...] = (
    (r"spec\.type: (NodePort|LoadBalancer) services would open ports",
     BY_DESIGN + "NodePort and LoadBalancer Services would open ports on the super cluster's nodes "
     "(no Tenant field grants them yet)"),
    (r"ports\.hostPort: host ports are not allowed",
     BY_DESIGN + "hostPort would open a port on a super cluster node"),
    (r"spec\.host(Network|PID|IPC): host namespaces are not allowed",
     BY_DESIGN + "host namespaces (hostNetwork, hostPID, hostIPC) are the super cluster node's"),
    (r"hostPath: host paths are not allowed", BY_DESIGN + "hostPath volumes are the super cluster node's files"),
    (r"securityContext\.privileged: Forbidden: disallowed by cluster policy",
     BY_DESIGN + "the tenant's API server admits no privileged container (--allow-privileged=false)"),
    (r"host: '[^']*' is not allowed; probes go to the pod's own address",
     BY_DESIGN + "a probe or lifecycle handler with a host would make the super node's kubelet connect there"),
    (r'mount type of "[^"]*": 16914839',
     "the gVisor sandbox: a memory-backed emptyDir is gVisor's own file system, whose statfs reports "
     "9p's magic (16914839), not tmpfs (contents and modes are right)"),
)  # fmt: skip


def suite_binaries() -> tuple[Path, Path]:
    bin_dir = testbin_dir()
    e2e, ginkgo = bin_dir / "e2e.test", bin_dir / "ginkgo"
    if not e2e.exists() or not ginkgo.exists():
        raise FileNotFoundError(
            f"the conformance suite is not built in {bin_dir}: run `hack/testbin/build.sh conformance`"
        )
    return e2e, ginkgo


def image_specs(cache: Path, out: Any = print) -> list[tuple[images.ImageSpec, tuple[Path, ...]]]:
    """The suite's images built here, each with the layers below its own (`IMAGES_BUILT_HERE`)."""
    bin_dir = testbin_dir()
    pause = static_binary(PAUSE_SOURCE, cache / "pause")
    userland = (images.e2e_userland(cache, out),)
    files, scripts = bin_dir / "test-images", cache / "test-image-scripts"
    agnhost, busybox, pause_ref, httpd, httpd_new, nginx, nginx_new, dnsutils, kitten, nautilus, nonroot = (
        IMAGES_BUILT_HERE
    )

    def agnhost_based(
        reference: str, extra: dict[str, Path] | None = None, cmd: tuple[str, ...] = ("pause",)
    ) -> images.ImageSpec:
        return images.agnhost_image(
            reference, bin_dir / "agnhost", bin_dir / "agnhost-porter", bin_dir / "coredns", extra, cmd
        )

    def picture(name: str) -> dict[str, Path]:
        return {f"/{name}.jpg": files / name / f"{name}.jpg", "/data.json": files / name / "data.json"}

    index = files / "httpd" / "index.html"
    apache = ("/usr/local/apache2/htdocs", "/usr/local/bin/httpd-foreground")
    return [
        (agnhost_based(agnhost), userland),
        (agnhost_based(kitten, picture("kitten"), ("test-webserver",)), userland),
        (agnhost_based(nautilus, picture("nautilus"), ("test-webserver",)), userland),
        (images.ImageSpec(dnsutils, {"/coredns": bin_dir / "coredns"}, cmd=("bash",), own_users=False), userland),
        (images.ImageSpec(nonroot, {}, cmd=("/bin/sh",), own_users=False, user="1234"), userland),
        (images.full_busybox_image(busybox, BUSYBOX), ()),
        (images.ImageSpec(pause_ref, {"/pause": pause}, entrypoint=("/pause",)), ()),
        *((images.web_server_image(ref, BUSYBOX, *apache, index, scripts), ()) for ref in (httpd, httpd_new)),
        *(
            (images.web_server_image(ref, BUSYBOX, "/usr/share/nginx/html", "/usr/sbin/nginx", index, scripts), ())
            for ref in (nginx, nginx_new)
        ),
    ]


def push_images(out: Any = print) -> None:
    """The suite's images into the local open registry, under the names `repo_list` gives."""
    cache = cache_root() / "images"
    for spec, below in image_specs(cache, out):
        name, tag = spec.reference.removeprefix(f"{registry.OPEN_HOST}/").rsplit(":", 1)
        registry.push(images.cached_archive(spec, cache, below), registry.OPEN, name, tag)
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


def known_cause(message: str, output: str, known: tuple[tuple[str, str], ...] = KNOWN_TENANT_FAILURES) -> str | None:
    """The known cause of a tenant failure, from its message or else the test's own output."""
    for pattern, why in known:
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


def explain_again(result: dict[str, Any], report: Path | None = None) -> dict[str, Any]:
    """A recorded summary with its tenant failures explained by today's known causes: from the
    message each failure kept, or, given the tenant run's ginkgo report, from its full message and
    output (the summary keeps neither whole)."""
    evidence = {
        spec_name(s): (str((s.get("Failure") or {}).get("Message", "")), str(s.get("CapturedGinkgoWriterOutput", "")))
        for s in (conformance_specs(report) if report else [])
    }
    out = copy.deepcopy(result)
    for failure in out["targets"].get("tenant", {}).get("failures", []):
        message, output = evidence.get(failure["test"], (failure["message"], ""))
        failure["known_cause"] = failure.get("known_cause") or known_cause(message, output)
    out["comparison"] = compare(out["targets"])
    return out


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
