"""CustomResourceDefinitions generated from the manifest models (``asya crd``).

The pydantic models in :mod:`asya_agents.manifest` are the one definition of an
``AsyncActor``; the CRD's schema is derived from them so that the API server and
``asya up`` cannot disagree. Pydantic writes JSON Schema (``$ref``, ``anyOf`` with
``null``, ``const``, numeric ``exclusiveMinimum``), while Kubernetes wants a
*structural* OpenAPI v3 schema: every node typed, no references, no ``anyOf`` that
carries types. :func:`structural` translates one into the other; a construct it cannot
express becomes ``x-kubernetes-preserve-unknown-fields`` and is left to the operator,
which validates with the same models and reports the field in a status condition.

Durations (``300s``, ``1m``) are numbers to pydantic but strings in a manifest, so they
are marked while generating and written as ``x-kubernetes-int-or-string``.

:data:`RESOURCES` is the one table of where each kind the operator touches lives in the
API (apiVersion and plural); it sits here, below both, so that the HTTP client and the
operator share it without importing each other.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from asya_agents.durations import parse_duration
from asya_agents.manifest import ActorSpec

__all__ = [
    "GROUP",
    "RESOURCES",
    "VERSION",
    "actor_spec_schema",
    "asyncactor_crd",
    "crd_documents",
    "dump_yaml",
    "flavor_crd",
    "schema_of",
    "structural",
]

GROUP = "asya.sh"
VERSION = "v1alpha1"

#: kind → (apiVersion, plural) of everything the operator writes or reads.
RESOURCES: dict[str, tuple[str, str]] = {
    "AsyncActor": (f"{GROUP}/{VERSION}", "asyncactors"),
    "Flavor": (f"{GROUP}/{VERSION}", "flavors"),
    "ConfigMap": ("v1", "configmaps"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Deployment": ("apps/v1", "deployments"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
    "TriggerAuthentication": ("keda.sh/v1alpha1", "triggerauthentications"),
}
_DURATION = "x-asya-duration"
_KEEP = {
    "type", "description", "properties", "required", "items", "enum", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
    "maxItems", "nullable", "format", "additionalProperties",
}

#: ``kubectl explain`` text for the top-level fields that the models leave undescribed.
SPEC_DESCRIPTIONS = {
    "image": "Container image holding the handler's code (default: the runtime image)",
    "handler": "Importable callable: module.func or module.Class.method",
    "handlerMode": "payload: f(payload) -> payload; envelope: f(envelope), may rewrite route.next",
    "config": "Keyword arguments of a class handler's constructor (free-form)",
    "concurrency": "Messages in flight per replica",
    "scaling": "KEDA scaling: replicas 0..N on queue depth",
    "resiliency": "Actor timeout and retry policies",
    "batch": "Gather up to maxSize messages or maxWait for one batch handler call",
    "flavors": "Flavor names merged under this spec, later over earlier, the actor over all",
    "env": "Extra environment variables of the container (never credentials: use a Secret)",
    "resources": "Container resources (requests, limits; nvidia.com/gpu for a GPU)",
    "nodeSelector": "Pod nodeSelector",
    "tolerations": "Pod tolerations",
    "maxMessageBytes": "Largest envelope this actor sends (default: the transport's limit)",
}


class _CRDSchema(GenerateJsonSchema):
    """Marks Duration fields, which pydantic would otherwise describe as plain numbers."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema.get("function", {}).get("function")
        if function is parse_duration:
            return {_DURATION: True}
        return super().function_before_schema(schema)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of ``model``."""
    raw = model.model_json_schema(schema_generator=_CRDSchema)
    return structural(raw, raw.get("$defs", {}))


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate a pydantic JSON Schema node into a Kubernetes structural schema node."""
    node = _inline(node, defs)
    if node.get(_DURATION):
        return _described({"x-kubernetes-int-or-string": True}, node,
                          "A duration: 300s, 1m, 1h30m, 250ms, or whole seconds")
    if "anyOf" in node:
        return _any_of(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            out.update(_additional(value, defs))
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out.update(minimum=value, exclusiveMinimum=True)
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out.update(maximum=value, exclusiveMaximum=True)
        elif key in _KEEP:
            out[key] = value
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref`` (or a one-item ``allOf`` of one) by the definition it names."""
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", [])) == 1:
        ref = node["allOf"][0].get("$ref")
    if ref is None:
        return node
    target = defs[ref.rsplit("/", 1)[-1]]
    rest = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    return {**_inline(target, defs), **rest}


def _described(out: dict[str, Any], node: dict[str, Any], fallback: str = "") -> dict[str, Any]:
    text = node.get("description") or fallback
    return {**out, "description": text} if text else out


def _any_of(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in node["anyOf"] if b.get("type") != "null"]
    nullable = len(branches) < len(node["anyOf"])
    if len(branches) == 1:
        merged = {**branches[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        out = structural(merged, defs)
        return {**out, "nullable": True} if nullable else out
    types = {b.get("type") for b in branches}
    if types == {"string", "integer"} and all(len(b) == 1 for b in branches):
        out = {"x-kubernetes-int-or-string": True}
    else:
        out = {"x-kubernetes-preserve-unknown-fields": True}
    return _described({**out, "nullable": True} if nullable else out, node)


def _additional(value: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if value is True or value == {}:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if value is False:
        return {}  # the API server prunes unknown fields; kubectl's strict validation refuses
    return {"additionalProperties": structural(value, defs)}


# -- the CRDs ---------------------------------------------------------------------------


def actor_spec_schema(*, for_flavor: bool = False) -> dict[str, Any]:
    schema = schema_of(ActorSpec)
    props = schema["properties"]
    for name, text in SPEC_DESCRIPTIONS.items():
        if name in props and "description" not in props[name]:
            props[name]["description"] = text
    props["config"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                       "description": SPEC_DESCRIPTIONS["config"]}
    # Kept open to the API server, which would prune a misspelled key silently: the
    # operator reads them with the models, which name that key in a status condition.
    _open = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}
    props["resources"] = {**_open, "description": SPEC_DESCRIPTIONS["resources"]}
    props["tolerations"] = {"items": dict(_open), "type": "array",
                            "description": SPEC_DESCRIPTIONS["tolerations"]}
    if for_flavor:
        del props["flavors"]
        schema.pop("required", None)
    schema["description"] = ("A Flavor's spec: any subset of an AsyncActor's spec"
                             if for_flavor else "What runs, how it scales and how it fails")
    return schema


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "description": "Ready, Valid or QueuesDeclared"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "description": "CamelCase reason"},
            "message": {"type": "string", "description": "what is wrong, naming the field"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64"},
        },
    }


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Written by the operator",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "mesh": {"type": "string", "description": "mesh the actor belongs to"},
            "queue": {"type": "string", "description": "the actor's queue on the broker"},
            "flavors": {"type": "array", "items": {"type": "string"},
                        "description": "flavors merged, in order"},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def _ready_column(name: str, condition: str) -> dict[str, Any]:
    return {"name": name, "type": "string",
            "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status'}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(kind: str, plural: str, short: str, spec: dict[str, Any], *,
         columns: list[dict[str, Any]], status: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if status:
        properties["status"] = _status_schema()
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = columns
    version["schema"] = {"openAPIV3Schema": {"type": "object", "required": ["spec"],
                                             "properties": properties}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "asya"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": [short],
                      "categories": ["asya"]},
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def asyncactor_crd() -> dict[str, Any]:
    columns = [
        {"name": "Handler", "type": "string", "jsonPath": ".spec.handler"},
        {"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minReplicaCount"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxReplicaCount"},
        _ready_column("Ready", "Ready"),
        {"name": "Reason", "type": "string", "priority": 1,
         "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
        {"name": "Image", "type": "string", "priority": 1, "jsonPath": ".spec.image"},
        _AGE,
    ]
    return _crd("AsyncActor", "asyncactors", "aa", actor_spec_schema(),
                columns=columns, status=True)


def flavor_crd() -> dict[str, Any]:
    return _crd("Flavor", "flavors", "afl", actor_spec_schema(for_flavor=True),
                columns=[_AGE], status=False)


def crd_documents() -> list[dict[str, Any]]:
    """Every CRD this project installs, in a stable order."""
    return [asyncactor_crd(), flavor_crd()]


class _Dumper(yaml.SafeDumper):
    """No anchors (a shared dict is written out twice) and multi-line strings as
    literal blocks, so that a rendered ConfigMap reads like the files it holds."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    """Stable multi-document YAML: same objects, same bytes."""
    return "---\n".join(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                  width=100, allow_unicode=True)
        for obj in objects
    )
