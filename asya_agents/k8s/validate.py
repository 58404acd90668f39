"""Checks that a manifest passes the models but would fail on Kubernetes.

The manifest models know nothing of Kubernetes: they accept a resource quantity that is
not one, a toleration with a stray key or an ``ASYA_*`` variable that the renderer
sets itself. :func:`check_actor` refuses those before anything is rendered, naming the
file and the field, so that ``asya render`` and the operator report the same error
instead of the API server's later and vaguer one.
"""

from __future__ import annotations

import re
from typing import Any

from asya_agents.errors import ManifestError
from asya_agents.manifest import AsyncActor

__all__ = ["check_actor"]

_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[numkMGTPE])?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def check_actor(actor: AsyncActor, file: str) -> None:
    """Refuse what the models accept but Kubernetes would not, naming the field."""
    spec = actor.spec
    if spec.scaling.minReplicaCount > spec.scaling.maxReplicaCount:
        raise ManifestError("must not exceed maxReplicaCount", file=file,
                            field="spec.scaling.minReplicaCount")
    _check_resources(spec.resources, file)
    for index, tol in enumerate(spec.tolerations):
        unknown = sorted(set(tol) - _TOLERATION_KEYS)
        if unknown:
            raise ManifestError(f"unknown field {unknown[0]!r}", file=file,
                                field=f"spec.tolerations[{index}].{unknown[0]}")
    for index, secret in enumerate(spec.envFromSecrets):
        if not _DNS_NAME.match(secret):
            raise ManifestError(f"not a Secret name: {secret!r}", file=file,
                                field=f"spec.envFromSecrets[{index}]")
    _check_env(spec.env, file)


def _check_resources(resources: dict[str, Any], file: str) -> None:
    for section, values in resources.items():
        where = f"spec.resources.{section}"
        if section not in ("requests", "limits"):
            raise ManifestError("unknown field (requests or limits)", file=file, field=where)
        if not isinstance(values, dict):
            raise ManifestError("must be a mapping of resource to quantity", file=file,
                                field=where)
        for name, qty in values.items():
            if isinstance(qty, bool) or not _QUANTITY.match(str(qty)):
                raise ManifestError(f"not a quantity: {qty!r}", file=file,
                                    field=f"{where}.{name}")


def _check_env(env: dict[str, str], file: str) -> None:
    for name in env:
        if not _ENV_NAME.match(name):
            raise ManifestError("not a valid environment variable name", file=file,
                                field=f"spec.env.{name}")
        if name.startswith("ASYA_"):
            raise ManifestError("ASYA_* variables are set by the renderer", file=file,
                                field=f"spec.env.{name}")
