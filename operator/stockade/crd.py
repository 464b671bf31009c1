"""Generate the Tenant CustomResourceDefinition from the pydantic models.

`python -m stockade.crd` rewrites crds/tenants.stockade.dev.yaml; a unit test fails when the
committed file differs from what the models generate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from stockade import model

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{model.PLURAL}.{model.GROUP}.yaml"
# Keywords of JSON Schema that a structural OpenAPI v3 schema of a CRD accepts.
_KEPT = {
    "type", "properties", "items", "additionalProperties", "description", "default", "enum", "pattern",
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "format", "nullable", "required", "anyOf", "x-kubernetes-validations", "x-kubernetes-int-or-string",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


class _CRDSchema(GenerateJsonSchema):
    """Also emits defaults built by default factories, so the API server fills in whole objects."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return schema.get("default", NoDefault)

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, model.Model):
            return dft.wire()
        if isinstance(dft, list | dict) and not dft:
            return dft
        return super().encode_default(dft)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs, drop titles, and fold Optional[X] into X."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _structural({**options[0], **rest}, defs)
    if "const" in node:  # Literal[x] with one value
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "anyOf") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value, defs)
        elif key in _KEPT and key != "additionalProperties":  # `false` is not structural: the server prunes
            out[key] = value
    if "default" in out and out["default"] is None:  # "no default", not a null default
        del out["default"]
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    return out


def openapi_schema(root: type[BaseModel]) -> dict[str, Any]:
    raw = root.model_json_schema(by_alias=True, schema_generator=_CRDSchema, mode="validation")
    return dict(_structural(raw, raw.get("$defs", {})))


_READY = '.status.conditions[?(@.type=="Ready")]'
# `kubectl get tenants`: what is asked and what runs; `-o wide` adds why it is not Ready yet.
PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Desired", "type": "string", "jsonPath": ".spec.kubernetes.version"},
    {"name": "Running", "type": "string", "jsonPath": ".status.version"},
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": f"{_READY}.message", "priority": 1},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.internal", "priority": 1},
]


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(model.TenantSpec)
    spec_schema["description"] = "What the tenant's cluster should be. Written by its owner; never by Stockade."
    spec_schema["default"] = {}
    status_schema = openapi_schema(model.TenantStatus)
    status_schema["description"] = "What Stockade observed. Written only by the operator."
    # Read before the operator's first write, a Tenant says its generation is not observed yet:
    # kstatus (Flux, `kubectl wait`, cli-utils) then computes InProgress, not Current.
    status_schema["default"] = {"observedGeneration": 0}
    status_schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status_schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{model.PLURAL}.{model.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "stockade"},
        },
        "spec": {
            "group": model.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.KIND.lower(),
                "shortNames": ["tn"],
                "categories": ["stockade"],
            },
            "versions": [
                {
                    "name": model.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A tenant: a Kubernetes control plane of its own, its workloads "
                            "sandboxed in the shared super cluster.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                # A CRD's schema may restrict only metadata.name (and generateName);
                                # the API server's refusal then names the field and the value.
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "maxLength": model.MAX_TENANT_NAME,
                                            "pattern": model.TENANT_NAME_PATTERN,
                                        }
                                    },
                                },
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated from operator/stockade/model.py by `python -m stockade.crd`. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main() -> int:
    CRD_PATH.parent.mkdir(exist_ok=True)
    CRD_PATH.write_text(render())
    print(f"wrote {CRD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
