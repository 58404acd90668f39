"""Validators for rendered Kubernetes objects, shared by the k8s tests.

No API server can run here, so objects are checked offline: built-in kinds against the
Kubernetes OpenAPI schemas that ship with kubernetes-validate (strict: unknown fields
fail), KEDA's kinds against the openAPIV3Schema of KEDA's own CRDs, found at
``../shared/schemas/keda/`` from the project root (CI) or ``/work/shared/schemas/keda``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, SERVICE_SKIP

K8S_VERSION = "1.33"
KEDA_DIRS = [ROOT.parent / "shared" / "schemas" / "keda", Path("/work/shared/schemas/keda")]
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")


def keda_schemas() -> dict[str, dict[str, Any]]:
    folder = next((d for d in KEDA_DIRS if d.is_dir()), None)
    if folder is None:
        pytest.skip(f"{SERVICE_SKIP} KEDA CRD schemas not found at ../shared/schemas/keda/")
    out = {}
    for file in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(file.read_text())
        out[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"]
    return out


def validate_builtin(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def validate_keda(obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    import jsonschema

    jsonschema.validate(obj, schemas[obj["kind"]])


def validate_any(obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    if obj["kind"] in KEDA_KINDS:
        validate_keda(obj, schemas)
    else:
        validate_builtin(obj)


@pytest.fixture(scope="session")
def keda() -> dict[str, dict[str, Any]]:
    return keda_schemas()
