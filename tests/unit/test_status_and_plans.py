from __future__ import annotations

import datetime

import pytest
from pydantic import ValidationError

from stockade import certificates as certs
from stockade import pki
from stockade import status as st
from stockade.kube import KINDS, ApiError, Credentials
from stockade.kubeconfig import build_kubeconfig
from stockade.model import Condition, Phase, TenantSpec, TenantStatus
from stockade.reconciler import StalledError, TenantReconciler, describe_validation_error, failed_pass

NAMES = certs.ServingNames(apiserver_dns=("kubernetes",), apiserver_ips=("10.0.0.1",))


def test_condition_transition_time_kept_while_status_unchanged() -> None:
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    first = st.merge_conditions([], [st.Check("Ready", False, "Starting")], 1, t0)
    second = st.merge_conditions(first, [st.Check("Ready", False, "StillStarting")], 2, t0 + datetime.timedelta(1))
    assert second[0].last_transition_time == first[0].last_transition_time
    assert second[0].observed_generation == 2
    third = st.merge_conditions(second, [st.Check("Ready", True, "Ready")], 2, t0 + datetime.timedelta(2))
    assert third[0].last_transition_time == "2026-01-03T00:00:00Z"
    assert [c.reason for c in st.transitions(second, third)] == ["Ready"]
    assert st.transitions(third, third) == []


def test_ready_summarises_the_first_failing_check() -> None:
    checks = [st.Check("CertificatesReady", True, "Issued"), st.Check("ControlPlaneReady", False, "Starting", "etcd")]
    ready = st.ready_check(checks, suspended=False)
    assert (ready.status, ready.reason, ready.message) == ("False", "Starting", "ControlPlaneReady: etcd")
    assert st.ready_check(checks[:1], suspended=False).status == "True"
    assert st.ready_check(checks[:1], suspended=True).reason == "Suspended"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"ready": True, "suspended": False, "deleting": False, "ever_ready": True, "spec_changed": False},
            Phase.READY,
        ),
        (
            {"ready": False, "suspended": False, "deleting": False, "ever_ready": False, "spec_changed": False},
            Phase.PROVISIONING,
        ),
        (
            {"ready": False, "suspended": False, "deleting": False, "ever_ready": True, "spec_changed": True},
            Phase.UPDATING,
        ),
        (
            {"ready": False, "suspended": False, "deleting": False, "ever_ready": True, "spec_changed": False},
            Phase.DEGRADED,
        ),
        (
            {"ready": False, "suspended": True, "deleting": False, "ever_ready": True, "spec_changed": False},
            Phase.SUSPENDED,
        ),
        (
            {"ready": True, "suspended": False, "deleting": True, "ever_ready": True, "spec_changed": False},
            Phase.DELETING,
        ),
    ],
)
def test_phase(kwargs: dict[str, bool], expected: Phase) -> None:
    assert st.phase(**kwargs) == expected


def test_version_gate_compares_with_the_running_version() -> None:
    running = TenantStatus(version="v1.33.5", conditions=[])
    ok, refusal = TenantReconciler._version_gate(
        TenantSpec.model_validate({"kubernetes": {"version": "v1.34.4"}}), running
    )
    assert refusal is None and ok.kubernetes.version == "v1.34.4"
    older = TenantStatus(version="v1.34.4", conditions=[])
    kept, refusal = TenantReconciler._version_gate(
        TenantSpec.model_validate({"kubernetes": {"version": "v1.33.0"}}), older
    )
    assert refusal and "downgrade" in refusal and kept.kubernetes.version == "v1.34.4"


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        TenantSpec.model_validate({"workloads": {"quota": {"pods": "many"}}})
    assert describe_validation_error(error.value).startswith("spec.workloads.quota.pods: ")
    # A validator's own message, without pydantic's prefix.
    with pytest.raises(ValidationError) as error:
        TenantSpec.model_validate({"kubernetes": {"version": "v1.35.0"}})
    assert describe_validation_error(error.value) == (
        "spec.kubernetes.version: Kubernetes v1.35.0 is not supported by this operator (supported: 1.33, 1.34)"
    )


def test_stalled_and_reconciling_follow_kstatus() -> None:
    starting = st.ready_check([st.Check("ControlPlaneReady", False, "Starting", "0/1 ready")], suspended=False)
    stalled, reconciling = st.progress_checks(starting, suspended=False)
    assert (stalled.status, reconciling.status, reconciling.reason) == ("False", "True", "Starting")
    # A failure that no retry mends wins over one still in progress, and stops the reconciling.
    checks = [
        st.Check("ControlPlaneReady", False, "Starting", "0/1 ready"),
        st.Check("IsolationReady", False, "RuntimeClassMissing", "no kata", stalls=True),
    ]
    ready = st.ready_check(checks, suspended=False)
    assert (ready.reason, ready.stalls) == ("RuntimeClassMissing", True)
    stalled, reconciling = st.progress_checks(ready, suspended=False)
    assert (stalled.status, stalled.reason, stalled.message) == (
        "True",
        "RuntimeClassMissing",
        "IsolationReady: no kata",
    )
    assert reconciling.status == "False"
    done = st.progress_checks(st.ready_check([], suspended=False), suspended=False)
    assert [c.status for c in done] == ["False", "False"]
    suspended = st.progress_checks(st.ready_check([], suspended=True), suspended=True)
    assert [(c.status, c.reason) for c in suspended] == [("False", "Progressing"), ("False", "Suspended")]
    assert st.phase(ready=False, suspended=False, deleting=False, ever_ready=True, spec_changed=False,
                    stalled=True) == Phase.FAILED  # fmt: skip


@pytest.mark.parametrize(
    ("error", "reason", "stalls"),
    [
        (ApiError(422, {"message": "spec.x: Invalid value"}, "PATCH", "/apis/apps/v1/x"), "ApplyRefused", True),
        (ApiError(403, {"message": "forbidden"}, "PATCH", "/api/v1/x"), "ApplyRefused", True),
        (ApiError(409, {"message": "conflict"}, "PATCH", "/api/v1/x"), "ApplyFailed", False),
        (ApiError(503, "unavailable", "PATCH", "/api/v1/x"), "ApplyFailed", False),
        (StalledError("ServiceRangesExhausted", "no free range"), "ServiceRangesExhausted", True),
        (RuntimeError("ServiceCIDR not Ready"), "ReconcileFailed", False),
    ],
)
def test_a_failed_pass_says_why_and_whether_a_retry_can_mend_it(error: Exception, reason: str, stalls: bool) -> None:
    check = failed_pass(error)
    assert (check.type, check.status, check.reason, check.stalls) == ("Ready", "False", reason, stalls)
    assert str(error) in check.message  # the API's own message


def test_plan_pki_keeps_good_certificates_and_reissues_for_reasons() -> None:
    first = certs.plan_pki({}, {}, None, NAMES)
    assert set(first.reissued) == {*certs.CA_NAMES, *certs.leaf_requests(NAMES), "sa"}
    b = first.bundle
    again = certs.plan_pki(b.cas, b.leaves, b.service_account_key, NAMES)
    assert not again.changed
    moved = certs.plan_pki(
        b.cas,
        b.leaves,
        b.service_account_key,
        certs.ServingNames(apiserver_dns=("kubernetes", "new.example.com"), apiserver_ips=("10.0.0.1",)),
    )
    assert moved.reissued == {certs.APISERVER: "its DNS names or IP addresses changed"}
    later = certs.plan_pki(
        b.cas, b.leaves, b.service_account_key, NAMES, now=pki.utcnow() + datetime.timedelta(days=250)
    )
    assert set(later.reissued) == set(certs.leaf_requests(NAMES))
    rotated = certs.plan_pki(b.cas, b.leaves, b.service_account_key, NAMES, rotate_ca=True)
    assert set(rotated.reissued) == {*certs.CA_NAMES, *certs.leaf_requests(NAMES)}  # not the SA key
    assert rotated.bundle.service_account_key is b.service_account_key
    leaves_only = certs.plan_pki(b.cas, b.leaves, b.service_account_key, NAMES, rotate_leaves=True)
    assert set(leaves_only.reissued) == set(certs.leaf_requests(NAMES))


def test_kind_paths() -> None:
    assert KINDS[("v1", "Secret")].path("ns", "s") == "/api/v1/namespaces/ns/secrets/s"
    assert KINDS[("apps/v1", "Deployment")].path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert KINDS[("stockade.dev/v1alpha1", "Tenant")].path(None, "t") == "/apis/stockade.dev/v1alpha1/tenants/t"


def test_credentials_from_kubeconfig() -> None:
    ca = pki.create_ca("ca")
    leaf = pki.issue_certificate(ca, pki.CertificateRequest("me", client=True))
    kubeconfig = build_kubeconfig(
        cluster="c", server="https://h:1", ca_pem=ca.cert_pem, user="u", cert_pem=leaf.cert_pem, key_pem=leaf.key_pem
    )
    credentials = Credentials.from_kubeconfig(kubeconfig)
    assert credentials.server == "https://h:1" and credentials.cert_pem == leaf.cert_pem
    credentials.ssl_context()  # the key loads
    token = Credentials.from_kubeconfig(
        build_kubeconfig(cluster="c", server="https://h:1", ca_pem=ca.cert_pem, user="u", token="t0k")
    )
    assert token.bearer() == "t0k"


def test_condition_model_shape() -> None:
    condition = Condition(type="Ready", status="True", reason="Ready", last_transition_time="2026-01-01T00:00:00Z")
    assert set(condition.wire()) == {"type", "status", "reason", "message", "lastTransitionTime"}
