"""The Tenant API (stockade.dev/v1alpha1): the single source of truth.

`crds/` is generated from these models (`python -m stockade.crd`), so defaults, allowed values
and CEL rules written here are what the API server enforces at admission. The operator parses
every Tenant it sees with the same models, so whatever slips past admission is still reported
with the field's path and the reason.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "stockade.dev"
VERSION = "v1alpha1"
KIND = "Tenant"
PLURAL = "tenants"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_KUBERNETES_VERSION = "v1.34.4"
# Control-plane versions this operator can run (it has images and flags for these minors).
SUPPORTED_MINORS = (33, 34)
# Tenant names feed namespace names (`stockade-<name>-workloads` must fit in 63 characters).
MAX_TENANT_NAME = 40
TENANT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

VERSION_PATTERN = r"^v1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"
# Kubernetes' quantity syntax without a sign: every quantity of a Tenant is an amount, never negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
MAX_QUANTITY_LENGTH = 32
EXTENDED_RESOURCE_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"


_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9), ("T", 12),
                                         ("P", 15), ("E", 18))},
}  # fmt: skip


def _quantity(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 500m, 2 or 4Gi, not a boolean")
    text = str(value)
    if len(text) > MAX_QUANTITY_LENGTH:
        raise ValueError(f"{text[:MAX_QUANTITY_LENGTH]!r}… is longer than {MAX_QUANTITY_LENGTH} characters")
    if text.startswith("-"):
        raise ValueError(f"{text!r} is negative; a quantity here is an amount (such as 500m, 2 or 4Gi)")
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 500m, 2 or 4Gi)")
    return text


_AMOUNT_RE = re.compile(
    r"^(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?P<suffix>[KMGTPE]i|[numkMGTPE])?$"
)


def quantity_value(text: str) -> Decimal:
    """The amount a quantity stands for: 500m -> 0.5, 1Ki -> 1024, 1e3 -> 1000, 1E -> 10^18."""
    match = _AMOUNT_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 500m, 2 or 4Gi)")
    suffix = match["suffix"]
    return Decimal(match["number"]) * (_SUFFIXES[suffix] if suffix else 1)


def _quantity_schema() -> dict[str, Any]:
    return {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "maxLength": MAX_QUANTITY_LENGTH,  # bounds the cost of the CEL rules that compare quantities
        "minimum": 0,  # the pattern checks strings only
    }


# A Kubernetes resource quantity; YAML may give it as a number (`cpu: 2`) or a string (`4Gi`).
Quantity = Annotated[str, BeforeValidator(_quantity), WithJsonSchema(_quantity_schema())]


def cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    reason: str | None = None,
    message_expression: str | None = None,
) -> dict[str, JsonValue]:
    """One x-kubernetes-validations entry. `message_expression` (CEL) names the offending value;
    `message` is what the API server says if that expression cannot be evaluated."""
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def _supported_minors() -> str:
    return ", ".join(f"1.{m}" for m in SUPPORTED_MINORS)


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, values checked on assignment too."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _minor(version: str) -> str:
    return f"int({version}.split('.')[1])"


def _patch(version: str) -> str:
    return f"int({version}.split('.')[2])"


class KubernetesSpec(Model):
    version: str = Field(
        DEFAULT_KUBERNETES_VERSION,
        description="Kubernetes version of the tenant's control plane, e.g. v1.34.4. Upgrades go one minor "
        "version at a time; downgrades are refused.",
        pattern=VERSION_PATTERN,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"{_minor('self')} in {list(SUPPORTED_MINORS)}",
                    f"this operator supports Kubernetes {_supported_minors()}",
                    reason="FieldValueInvalid",
                    message_expression=f"'Kubernetes ' + self + ' is not supported by this operator (supported: "
                    f"{_supported_minors()})'",
                ),
                cel(
                    f"{_minor('self')} > {_minor('oldSelf')} || ({_minor('self')} == {_minor('oldSelf')}"
                    f" && {_patch('self')} >= {_patch('oldSelf')})",
                    "downgrades are not allowed: the version may only stay the same or go up",
                    reason="FieldValueForbidden",
                    message_expression="'downgrades are not allowed: ' + oldSelf + ' to ' + self + "
                    "' (the version may only stay the same or go up)'",
                ),
                cel(
                    f"{_minor('self')} <= {_minor('oldSelf')} + 1",
                    "upgrade one minor version at a time (e.g. v1.33.x to v1.34.x)",
                    reason="FieldValueForbidden",
                    message_expression="'upgrade one minor version at a time: ' + oldSelf + ' to ' + self + "
                    "' skips a minor'",
                ),
            ]
        },
    )

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    @field_validator("version")
    @classmethod
    def _supported(cls, version: str) -> str:
        minor = int(version.split(".")[1])
        if minor not in SUPPORTED_MINORS:
            raise ValueError(
                f"Kubernetes {version} is not supported by this operator (supported: {_supported_minors()})"
            )
        return version


class ResourceList(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


def _not_above(low: str, high: str) -> list[Any]:
    """CEL: for cpu and memory, `low` (e.g. requests) is at most `high` (e.g. limits) when both are set."""
    rules: list[Any] = []
    for resource in ("cpu", "memory"):
        a, b = f"self.{low}.{resource}", f"self.{high}.{resource}"
        rules.append(
            cel(
                f"!has({a}) || !has({b}) || quantity(string({a})).compareTo(quantity(string({b}))) <= 0",
                f"{low}.{resource} must not exceed {high}.{resource}",
                field_path=f".{low}.{resource}",
                message_expression=f"'{low}.{resource} ' + string({a}) + ' exceeds {high}.{resource} ' + string({b})",
            )
        )
    return rules


def check_not_above(model: BaseModel, low: str, high: str) -> None:
    """What `_not_above` checks at admission, for a spec that reaches the operator another way."""
    for resource in ("cpu", "memory"):
        a, b = getattr(getattr(model, low), resource), getattr(getattr(model, high), resource)
        if a is not None and b is not None and quantity_value(a) > quantity_value(b):
            raise ValueError(f"{low}.{resource} {a} exceeds {high}.{resource} {b}")


class Resources(Model):
    """Requests and limits of one component's container."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _not_above("requests", "limits")})

    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        check_not_above(self, "requests", "limits")
        return self


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Any:
    return Field(
        default_factory=lambda: Resources(
            requests=ResourceList(cpu=cpu_request, memory=memory_request),
            limits=ResourceList(cpu=cpu_limit, memory=memory_limit),
        )
    )


class ControlPlaneResources(Model):
    etcd: Resources = _resources("100m", "256Mi", "1", "1Gi")
    api_server: Resources = _resources("250m", "512Mi", "2", "2Gi")
    controller_manager: Resources = _resources("100m", "192Mi", "1", "512Mi")
    scheduler: Resources = _resources("50m", "96Mi", "500m", "256Mi")


class StorageType(StrEnum):
    PERSISTENT = "PersistentVolume"
    EPHEMERAL = "Ephemeral"


class EtcdStorage(Model):
    type: StorageType = Field(
        StorageType.PERSISTENT,
        description="PersistentVolume keeps the tenant's data across restarts; Ephemeral loses it with the pod.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "etcd storage type is immutable",
                    message_expression="'etcd storage type is immutable: ' + oldSelf + ' cannot become ' + self",
                )
            ]
        },
    )
    size: Quantity = Field("2Gi", description="Size of each etcd member's volume (PersistentVolume only).")
    storage_class_name: str | None = Field(
        None,
        description="StorageClass of the etcd volumes; the cluster default when empty. Immutable.",
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "storageClassName is immutable",
                    message_expression="'storageClassName is immutable: ' + oldSelf + ' cannot become ' + self",
                )
            ]
        },
    )


class EtcdSpec(Model):
    storage: EtcdStorage = Field(default_factory=EtcdStorage)


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ServiceSpec(Model):
    type: ServiceType = Field(
        ServiceType.CLUSTER_IP, description="How the tenant API server is exposed from the super cluster."
    )
    extra_sans: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        description="Extra DNS names or IP addresses for the API server's certificate (e.g. a load balancer's name).",
        max_length=32,
    )


class ControlPlaneSpec(Model):
    replicas: Literal[1, 3] = Field(
        1,
        description="1, or 3 for high availability (3 etcd members, 3 API servers, leader-elected controllers). "
        "Immutable: etcd membership is fixed at creation.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "replicas is immutable: etcd membership is fixed when the tenant is created",
                    message_expression="'replicas is immutable: ' + (self == 3 ? '1 cannot become 3' : "
                    "'3 cannot become 1') + ' (etcd membership is fixed when the tenant is created)'",
                )
            ]
        },
    )
    runtime_class_name: str | None = Field(
        None,
        description="Sandbox RuntimeClass of the control-plane pods; the operator's default (kata) when empty.",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    resources: ControlPlaneResources = Field(default_factory=ControlPlaneResources)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    image_registry: str = Field(
        "registry.k8s.io",
        description="Registry of the control-plane images, for air-gapped clusters.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-zA-Z0-9.:\-/]+$",
    )


class Quota(Model):
    """Hard limits of the tenant's workloads in the super cluster (a ResourceQuota)."""

    cpu: Quantity = Field("8", description="Sum of CPU requests (sandbox overhead included).")
    memory: Quantity = Field("16Gi", description="Sum of memory requests (sandbox overhead included).")
    pods: int = Field(100, ge=0, le=100_000)
    services: int = Field(20, ge=0, le=10_000)
    storage: Quantity = Field("50Gi", description="Sum of PersistentVolumeClaim requests.")
    limits: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="16", memory="32Gi"),
        description="Sums of CPU and memory limits (limits.cpu, limits.memory).",
    )
    config_maps: int = Field(200, ge=0, le=100_000, description="ConfigMaps the tenant may sync down.")
    secrets: int = Field(
        200, ge=0, le=100_000, description="Secrets the tenant may sync down (service-account tokens come on top)."
    )
    service_accounts: int = Field(100, ge=0, le=100_000, description="ServiceAccounts the tenant may sync down.")
    persistent_volume_claims: int = Field(50, ge=0, le=10_000, description="PersistentVolumeClaims.")
    config_bytes: Quantity = Field(
        "16Mi",
        description="Total size of the ConfigMaps and Secrets the syncer copies into the super cluster; "
        "beyond it new ones are refused with an Event.",
    )
    extended: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Extended resources by name, e.g. {nvidia.com/gpu: 2}.",
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.all(k, k.matches('{EXTENDED_RESOURCE_PATTERN}'))",
                    "extended resource names must look like vendor.com/resource",
                )
            ]
        },
    )


class ContainerDefaults(Model):
    """Requests and limits given to tenant containers that set none (a LimitRange)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [*_not_above("requests", "limits"), *_not_above("limits", "max")]
        }
    )

    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="100m", memory="128Mi"))
    limits: ResourceList = Field(default_factory=lambda: ResourceList(cpu="1", memory="512Mi"))
    max: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="4", memory="8Gi"),
        description="The most one container may ask for (a LimitRange maximum on requests and limits).",
    )

    @model_validator(mode="after")
    def _defaults_within_limits_within_max(self) -> ContainerDefaults:
        check_not_above(self, "requests", "limits")
        check_not_above(self, "limits", "max")
        return self


class PodSecurityLevel(StrEnum):
    RESTRICTED = "restricted"
    BASELINE = "baseline"


class EgressSpec(Model):
    internet: bool = Field(
        False,
        description="Allow tenant pods to reach addresses outside the cluster. Other tenants, the super "
        "cluster's API server and cloud metadata (169.254.169.254) are never reachable.",
    )


# Volume types every tenant pod may use, whatever its Pod Security level: none mounts anything of the
# host. Pod Security "restricted" allows the same set, plus inline `csi` (left out: an inline CSI
# driver, e.g. a secrets-store one, acts with the node's identity). The superuser can add types.
DEFAULT_VOLUME_TYPES = (
    "configMap", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
)  # fmt: skip
VOLUME_TYPE_PATTERN = r"^[a-z][a-zA-Z0-9]*$"


class Toleration(Model):
    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class PlacementSpec(Model):
    """Where tenant pods run in the super cluster. Set by the superuser only: a tenant pod's own
    nodeSelector, affinity, tolerations and topology spread never reach the super cluster."""

    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)


class WorkloadsSpec(Model):
    runtime_class_name: str | None = Field(
        None,
        description="Sandbox RuntimeClass forced on every tenant pod; the operator's default (kata) when empty.",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    quota: Quota = Field(default_factory=Quota)
    container_defaults: ContainerDefaults = Field(default_factory=ContainerDefaults)
    pod_security: PodSecurityLevel = Field(
        PodSecurityLevel.RESTRICTED, description="Pod Security Standard enforced on tenant pods."
    )
    egress: EgressSpec = Field(default_factory=EgressSpec)
    volume_types: list[Annotated[str, Field(pattern=VOLUME_TYPE_PATTERN, max_length=64)]] = Field(
        default_factory=list,
        description="Volume types allowed besides " + ", ".join(DEFAULT_VOLUME_TYPES) + " (e.g. csi, nfs). "
        "Each one added lets tenant pods make the super cluster's nodes mount what the tenant names.",
        max_length=32,
    )
    placement: PlacementSpec = Field(default_factory=PlacementSpec)

    @property
    def allowed_volume_types(self) -> frozenset[str]:
        return frozenset((*DEFAULT_VOLUME_TYPES, *self.volume_types))


RESERVED_SUBJECT_MESSAGE = "system: identities are reserved for Kubernetes itself"


def _not_system(subject: str) -> str:
    if subject.startswith("system:"):
        raise ValueError(f"{subject!r}: {RESERVED_SUBJECT_MESSAGE}")
    return subject


# A user or group name; `system:` names would let a tenant admin pose as a Kubernetes component.
Subject = Annotated[
    str,
    AfterValidator(_not_system),
    Field(
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.startsWith('system:')",
                    RESERVED_SUBJECT_MESSAGE,
                    message_expression=f"self + ': {RESERVED_SUBJECT_MESSAGE}'",
                )
            ]
        },
    ),
]


class AdminsSpec(Model):
    """Who becomes cluster-admin inside the tenant, through a revocable ClusterRoleBinding."""

    users: list[Subject] = Field(default_factory=list, max_length=64)
    groups: list[Subject] = Field(default_factory=list, max_length=64)


class TenantSpec(Model):
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    control_plane: ControlPlaneSpec = Field(default_factory=ControlPlaneSpec)
    workloads: WorkloadsSpec = Field(default_factory=WorkloadsSpec)
    admins: AdminsSpec = Field(default_factory=AdminsSpec)
    suspended: bool = Field(False, description="Scale the control plane to zero and stop syncing; all data is kept.")

    # -- status -------------------------------------------------------------------------------------

    def runtime_classes(self, default: str) -> tuple[str, str]:
        """(control plane, workloads): each part's sandbox RuntimeClass, else the operator's `default`."""
        return self.control_plane.runtime_class_name or default, self.workloads.runtime_class_name or default


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    UPDATING = "Updating"
    SUSPENDED = "Suspended"
    DEGRADED = "Degraded"
    DELETING = "Deleting"
    FAILED = "Failed"


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class Endpoint(Model):
    internal: str | None = None
    external: str | None = None


class SecretReference(Model):
    namespace: str
    name: str
    key: str


class TenantNamespaces(Model):
    control_plane: str
    workloads: str


class RotationStatus(Model):
    """The last handled values of the rotation annotations (see README, "Certificates")."""

    certificates: str | None = None
    ca: str | None = None


class TenantStatus(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase | None = None
    observed_generation: int | None = None
    version: str | None = None
    endpoint: Endpoint | None = None
    kubeconfig_secret_ref: SecretReference | None = None
    namespaces: TenantNamespaces | None = None
    certificates_not_after: str | None = None
    rotation: RotationStatus | None = None
    service_range: str | None = Field(
        None, description="The tenant's Service range: its own block of the super cluster's Service pool."
    )
    conditions: list[Condition] = Field(default_factory=list)
    kopf: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(None, description="Handler progress of the kopf framework.")


def tenant_name_problem(name: str) -> str | None:
    """Why `name` cannot name a Tenant, or None. The CRD checks the same rule at admission."""
    if len(name) > MAX_TENANT_NAME or not re.match(TENANT_NAME_PATTERN, name):
        return (
            f"metadata.name: {name!r} must be a DNS label of at most {MAX_TENANT_NAME} characters "
            "starting with a letter (it names the tenant's namespaces)"
        )
    return None
