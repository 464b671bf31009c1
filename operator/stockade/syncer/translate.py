"""Names across the wall (pure): the one place that maps a tenant object's name and metadata to
the super cluster's, and the super cluster's words back to what a tenant may read.

Every tenant object lands in the tenant's single workloads namespace, under a name built from
its own name, its namespace and a hash of both: deterministic, at most 63 characters, and never
colliding (two tenant objects with different (namespace, name) get different hashes). Each kind's
own translation lives in `stockade.syncer.kinds`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from stockade import naming
from stockade.naming import (
    ANNOTATION_NAME,
    ANNOTATION_NAMESPACE,
    ANNOTATION_UID,
    CARRIED_ANNOTATION_PREFIX,
    CARRIED_LABEL_PREFIX,
    LABEL_NAMESPACE,
    LABEL_SYNCED,
)
from stockade.syncer.context import TenantContext

Key = tuple[str, str]  # (namespace, name) of a tenant object


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


# Tenant-side bookkeeping that is not carried at all.
DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def super_name(namespace: str, name: str) -> str:
    """`<name>-<namespace>-<hash>`, cut to 63 characters, starting with a letter (Service names must)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[: naming.HASH_LENGTH]
    head = f"{name}-{namespace}"[: naming.MAX_NAME - naming.HASH_LENGTH - 1].rstrip("-.")
    if not head[:1].isalpha():
        head = f"x{head}"[: naming.MAX_NAME - naming.HASH_LENGTH - 1].rstrip("-.")
    return f"{head}-{digest}"


def tenant_key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the tenant object a super object mirrors, from its annotations."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if ANNOTATION_NAMESPACE in annotations and ANNOTATION_NAME in annotations:
        return annotations[ANNOTATION_NAMESPACE], annotations[ANNOTATION_NAME]
    return None


def _carried(prefix: str, key: str) -> str:
    """The super-side key that carries tenant key `key`: Stockade's prefix, the readable end of the
    key, and a hash of the whole key (so `a/x` and `b/x` stay apart)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[: naming.HASH_LENGTH]
    head = re.sub(r"[^A-Za-z0-9_.-]", "", key.rsplit("/", 1)[-1])[: naming.MAX_NAME - naming.HASH_LENGTH - 1]
    head = head.strip("-_.")
    return f"{prefix}{head}-{digest}" if head else f"{prefix}{digest}"


def carried_label(key: str) -> str:
    return _carried(CARRIED_LABEL_PREFIX, key)


def carried_annotation(key: str) -> str:
    return _carried(CARRIED_ANNOTATION_PREFIX, key)


def super_metadata(obj: Mapping[str, Any], ctx: TenantContext) -> dict[str, Any]:
    meta = obj["metadata"]
    labels = {carried_label(k): v for k, v in (meta.get("labels") or {}).items()}
    labels.update({naming.LABEL_TENANT: ctx.tenant, LABEL_SYNCED: "true", LABEL_NAMESPACE: meta["namespace"]})
    annotations = {
        carried_annotation(k): v for k, v in (meta.get("annotations") or {}).items() if k not in DROPPED_ANNOTATIONS
    }
    annotations.update(
        {ANNOTATION_NAMESPACE: meta["namespace"], ANNOTATION_NAME: meta["name"], ANNOTATION_UID: meta["uid"]}
    )
    return {
        "name": super_name(meta["namespace"], meta["name"]),
        "namespace": ctx.namespace,
        "labels": labels,
        "annotations": annotations,
    }


# -- what the tenant may read of the super cluster's words --

_SUPER_NAME = re.compile(rf"\b[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?-[0-9a-f]{{{naming.HASH_LENGTH}}}\b")
_NODE_PATH = re.compile(r"(?:/var/lib|/var/run|/var/log|/run|/etc/kubernetes|/tmp|/proc|/sys)/[^\s\"',;)\]]*")
_POLICY_PREFIX = re.compile(r"ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request: ")


def scrub(text: str, rename: Callable[[str], str | None], hidden: Mapping[str, str]) -> str:
    """A super-cluster message made fit for the tenant: super object names become the tenant's
    (`rename`; unknown ones are redacted), each `hidden` string (super namespace, node name, host
    address) its replacement, node paths and admission-policy names are cut out."""
    text = _POLICY_PREFIX.sub("", text)
    for secret, shown in sorted(hidden.items(), key=lambda item: -len(item[0])):
        if secret:
            text = text.replace(secret, shown)
    text = _SUPER_NAME.sub(lambda match: rename(match[0]) or "<super-object>", text)
    return _NODE_PATH.sub("<node-path>", text)
