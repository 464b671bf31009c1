"""The conformance runner's pure logic: reading ginkgo's report, the known causes, the comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stockade_dev import conformance as suite


def spec(text: str, state: str, message: str = "", output: str = "", kind: str = "It") -> dict[str, Any]:
    return {
        "ContainerHierarchyTexts": ["[sig-node] Pods"], "LeafNodeText": text, "LeafNodeType": kind,
        "State": state, "Failure": {"Message": message}, "CapturedGinkgoWriterOutput": output,
    }  # fmt: skip


def test_only_conformance_its_are_read_from_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    specs = [
        spec("a [Conformance]", "passed"),
        spec("b", "passed"),
        spec("c [Conformance]", "passed", kind="BeforeSuite"),
    ]
    report.write_text(json.dumps([{"SpecReports": specs}]))
    assert [suite.spec_name(s) for s in suite.conformance_specs(report)] == ["[sig-node] Pods a [Conformance]"]


def test_a_failure_is_explained_only_by_its_evidence() -> None:
    known = ((r'failed to get logs from .*an error on the server \("unknown"\)', "pods/log"),
             (r":10250/(exec|attach)/", "pods/exec"))  # fmt: skip
    logs = 'failed to get logs from pod-x for c: an error on the server ("unknown") has prevented the request'
    exec_output = 'error sending request: Post "https://node:10250/exec/ns/pod/c?command=cat": dial tcp'
    assert suite.known_cause(logs, "", known) == "pods/log"
    assert suite.known_cause("exit status 1", exec_output, known) == "pods/exec"
    # Positive control of the negative: an unrelated failure stays unexplained.
    assert suite.known_cause("service is not reachable within 2m0s", "nc: timed out", known) is None
    assert suite.known_cause("failed to get logs from pod-x: context deadline exceeded", "", known) is None
    # The known causes today: the syncer's refusals by design and the sandbox, each by its evidence.
    assert suite.known_cause(logs, exec_output) is None  # pods/log and pods/exec are served (issue 12)
    refused = (
        "dump.go:53] event for nodeport-test: {stockade-syncer } StockadeRejected: not synced to the super "
        "cluster: spec.type: NodePort services would open ports on the super cluster's nodes; use ClusterIP"
    )
    assert (suite.known_cause("service is not reachable within 2m0s", refused) or "").startswith(suite.BY_DESIGN)
    tmpfs = 'mount type of "/test-volume": 16914839\ncontent of file "/test-volume/test-file": mount-tester new file'
    assert "gVisor" in (suite.known_cause(f"Expected {tmpfs} to contain substring", "") or "")
    host = "PodScheduled False StockadeRejected spec.containers[0].ports.hostPort: host ports are not allowed"
    assert "hostPort" in (suite.known_cause("timed out", host) or "")
    privileged = 'Job.batch "j" is invalid: spec.template.spec.containers[0].securityContext.privileged: Forbidden: '
    assert "--allow-privileged=false" in (suite.known_cause(privileged + "disallowed by cluster policy", "") or "")
    # Positive control of the negative: an unrelated failure stays unexplained.
    assert suite.known_cause("service is not reachable within 2m0s", "nc: timed out") is None
    assert suite.known_cause('mount type of "/test-volume": tmpfs', "") is None


def test_the_comparison_lists_what_passes_on_the_super_cluster_only() -> None:
    targets = {
        "super": {"passed_tests": ["a", "b", "c", "d"], "failures": []},
        "tenant": {"passed_tests": ["a"], "failures": [
            {"test": "b", "known_cause": "issue 12"}, {"test": "c", "known_cause": None}]},
    }  # fmt: skip
    assert suite.compare(targets) == {"pass_on_super_not_on_tenant": 2, "explained": {"b": "issue 12"},
                                      "unexplained": ["c"], "not_run_on_tenant": ["d"]}  # fmt: skip


def test_the_ci_selection_is_one_regex_per_area() -> None:
    for area in ("Services", "DNS", "Deployment", "Pods", "ConfigMap", "Secrets", "Projected", "Downward API", "Job",
                 "ServiceAccounts", "SubjectReview", "Namespaces", "CustomResourceDefinition"):  # fmt: skip
        assert area in suite.CI_FOCUS, area


def test_a_recorded_summary_is_explained_again_by_todays_causes() -> None:
    refused = "spec.template.spec.containers[0].securityContext.privileged: Forbidden: disallowed by cluster policy"
    recorded = {"targets": {
        "super": {"passed_tests": ["a", "b", "c"], "failures": []},
        "tenant": {"passed_tests": [], "failures": [
            {"test": "a", "message": refused, "known_cause": None},
            {"test": "b", "message": "timed out", "known_cause": None},
            {"test": "c", "message": "timed out", "known_cause": "found before"}]},
    }}  # fmt: skip
    again = suite.explain_again(recorded)
    assert again["comparison"]["explained"] == {"a": suite.known_cause(refused, ""), "c": "found before"}
    assert again["comparison"]["unexplained"] == ["b"]
    assert recorded["targets"]["tenant"]["failures"][0]["known_cause"] is None  # the input is left as it was


def test_a_recorded_summary_is_explained_again_from_its_runs_full_report(tmp_path: Path) -> None:
    refusal = "StockadeRejected spec.containers[0].ports.hostPort: host ports are not allowed"
    report = tmp_path / "report.json"
    report.write_text(json.dumps([{"SpecReports": [spec("a [Conformance]", "failed", "timed out", refusal)]}]))
    recorded = {"targets": {
        "super": {"passed_tests": ["[sig-node] Pods a [Conformance]"], "failures": []},
        "tenant": {"passed_tests": [], "failures": [
            {"test": "[sig-node] Pods a [Conformance]", "message": "timed out", "known_cause": None}]},
    }}  # fmt: skip
    assert suite.explain_again(recorded)["comparison"]["explained"] == {}  # the message alone shows no cause
    explained = suite.explain_again(recorded, report)["comparison"]["explained"]
    assert "hostPort" in explained["[sig-node] Pods a [Conformance]"]
