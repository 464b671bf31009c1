"""The upstream Kubernetes conformance suite against a tenant cluster and, as the baseline, against
the super cluster itself, in one run (`make conformance` brings up a fresh local super cluster;
KUBECONFIG names it):

    KUBECONFIG=/var/lib/stockade-local/admin.kubeconfig .venv/bin/python bench/conformance.py \\
        [--selection full|ci] [--focus REGEX] [--skip REGEX] [--procs N] [--targets tenant,super]

Writes a JSON summary (`bench/results/conformance.json` for the full selection,
`conformance-ci.json` otherwise): the [Conformance] tests in the suite and the selection, the images
built here and those that are not, for the tenant and for the super cluster the counts by state and
each failure with its message and known cause, and the tests that pass on the super cluster but not
on the tenant. See stockade_dev.conformance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from stockade import naming
from stockade_dev import conformance as suite
from stockade_dev.localcluster.cluster import KUBELET_IMAGE, NETGATE_IMAGE
from stockade_dev.testbed.binaries import kubernetes_version
from stockade_dev.testbed.kubectl import Kubectl
from stockade_dev.testbed.kubectl import wait_until as wait
from stockade_dev.testbed.operator_process import operator_process
from stockade_dev.up import fetch_tenant_kubeconfig, follow, install_for_benchmark

REPO = Path(__file__).resolve().parents[1]
TENANT = "conformance"


def tenant_kubeconfig(super_kubectl: Kubectl, folder: Path) -> Path:
    manifest = {"apiVersion": "stockade.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": TENANT},
                "spec": suite.tenant_spec()}  # fmt: skip
    super_kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))
    follow(super_kubectl, TENANT, 600)  # Ready for this very spec, with its progress shown
    kubeconfig = fetch_tenant_kubeconfig(super_kubectl, TENANT, folder / f"{TENANT}.kubeconfig")
    tenant = Kubectl(kubeconfig)
    wait(lambda: bool(tenant("get", "serviceaccount", "default", check=False)), 120, "tenant default ServiceAccount")
    return kubeconfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--selection", choices=("full", "ci"), default="full")
    parser.add_argument("--focus", default="", help="a further ginkgo focus (regex), within [Conformance]")
    parser.add_argument("--skip", default="", help="a ginkgo skip (regex)")
    parser.add_argument("--procs", type=int, default=3, help="ginkgo's parallel processes (per target)")
    parser.add_argument("--targets", default="tenant,super", help="tenant, super, or both in that order")
    parser.add_argument("--minutes", type=int, default=240, help="bound of each target's run")
    parser.add_argument("--out", type=Path, help="default: bench/results/conformance[-ci].json")
    parser.add_argument(
        "--explain-again",
        type=Path,
        metavar="SUMMARY",
        help="run nothing: re-read a recorded summary's tenant failures with today's known causes",
    )
    parser.add_argument("--report", type=Path, help="with --explain-again: the tenant run's ginkgo report.json")
    args = parser.parse_args()
    if args.explain_again:
        result = suite.explain_again(json.loads(args.explain_again.read_text()), args.report)
        args.explain_again.write_text(json.dumps(result, indent=2) + "\n")
        print(f"rewritten {args.explain_again}: {json.dumps(result['comparison'])[:400]}", flush=True)
        return 0
    focus = "|".join(f for f in (suite.CI_FOCUS if args.selection == "ci" else "", args.focus) if f)
    full = args.selection == "full" and not args.focus and not args.skip
    out = args.out or REPO / "bench" / "results" / ("conformance.json" if full else "conformance-ci.json")

    super_kubectl, folder, op_kubeconfig = install_for_benchmark("conformance")
    everything, selected = suite.dry_run(folder), suite.dry_run(folder, focus, args.skip)
    print(f"{len(everything)} [Conformance] tests in the suite, {len(selected)} selected", flush=True)
    suite.push_images(lambda line: print(line, flush=True))
    operator = operator_process(op_kubeconfig, folder / "operator.log", "conformance", resync_seconds=5,
                                runtime_class="gvisor", netgate_image=NETGATE_IMAGE,
                                kubelet_image=KUBELET_IMAGE)  # fmt: skip
    operator.start()
    targets: dict[str, Any] = {}
    try:
        kubeconfigs = {"tenant": tenant_kubeconfig(super_kubectl, folder), "super": super_kubectl.kubeconfig}
        for target in args.targets.split(","):
            targets[target] = suite.run_suite(
                target, kubeconfigs[target], folder, focus=focus, skip=args.skip, procs=args.procs,
                timeout_seconds=args.minutes * 60, out=lambda line: print(line, flush=True),
            )  # fmt: skip
    finally:
        super_kubectl("delete", "tenant", TENANT, "--ignore-not-found", "--timeout=300s", timeout=320, check=False)
        operator.stop()
    result = {
        "what": "upstream [Conformance] tests against a Stockade tenant and, as the baseline, the super cluster",
        "kubernetes_version": kubernetes_version(),
        "tenant_control_plane": naming.control_plane_namespace(TENANT),
        "selection": args.selection, "focus": focus, "skip": args.skip, "procs": args.procs,
        "suite_conformance_tests": len(everything),
        "selected_tests": len(selected),
        "images_built_here": list(suite.IMAGES_BUILT_HERE),
        "images_not_built_here": list(suite.NOT_BUILT_HERE),
        "image_gaps": list(suite.IMAGE_GAPS),
        "targets": targets,
        "comparison": suite.compare(targets),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}: {json.dumps(result['comparison'])[:400]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
