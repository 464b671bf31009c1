"""Every example the project ships is accepted, strictly, by a real API server with Stockade's CRD:
a field the schema does not know is an error here (kubectl's strict field validation), not data
that silently disappears."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade_dev.testbed import LocalControlPlane
from tests.integration.conftest import REPO, kubectl

pytestmark = pytest.mark.integration
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(REPO / "examples")))
def test_every_example_applies_strictly(super_cluster: LocalControlPlane, example: Path) -> None:
    out = kubectl(super_cluster, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", str(example))
    assert "serverside-applied (server dry run)" in out


def test_the_gitops_example_applies_as_a_kustomization(super_cluster: LocalControlPlane) -> None:
    out = kubectl(super_cluster, "apply", "--server-side", "--dry-run=server", "--validate=strict",
                  "-k", str(REPO / "examples" / "gitops"))  # fmt: skip
    assert out.count("serverside-applied (server dry run)") >= 2


def test_the_argocd_health_check_applies_as_a_kustomization(super_cluster: LocalControlPlane) -> None:
    kubectl(super_cluster, "apply", "--server-side", "-f", "-",
            stdin="apiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n")  # fmt: skip
    out = kubectl(super_cluster, "apply", "--server-side", "--dry-run=server", "--validate=strict",
                  "-k", str(REPO / "examples" / "argocd"))  # fmt: skip
    assert "configmap/argocd-cm serverside-applied (server dry run)" in out


def test_an_unknown_field_is_refused(super_cluster: LocalControlPlane) -> None:
    """Positive control: the same strict apply refuses a field the schema does not have."""
    wrong = "apiVersion: stockade.dev/v1alpha1\nkind: Tenant\nmetadata: {name: wrong}\n"
    wrong += "spec: {controlPlane: {service: {extraSANs: [a.example.com]}}}\n"
    with pytest.raises(AssertionError, match=r"service.extraSANs: field not declared in schema"):
        kubectl(super_cluster, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                stdin=wrong)  # fmt: skip
