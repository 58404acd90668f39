"""The Kubernetes pod settings of an AsyncActor, as declared data.

``spec.resources`` and ``spec.tolerations`` only mean something on a cluster, but they
are part of the manifest, so they are read as strictly as the rest of it: a stray key
(``efect``, ``limts``) or a quantity that is not one fails when the manifest loads,
naming the file and the field, locally as much as in ``asya render`` and the operator.
Values are kept as written (``cpu: "1"`` stays text, ``nvidia.com/gpu: 1`` a number),
and so is the order of the keys, so that the rendered objects carry exactly what the
manifest said and a Deployment's digest (which rolls its pods) does not change.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

__all__ = ["Quantity", "ResourceClaim", "Resources", "Toleration"]

_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[numkMGTPE])?$")


def _quantity(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str) \
            or not _QUANTITY.match(str(value)):
        raise ValueError(f"not a quantity: {value!r} (e.g. 500m, 2, 4Gi)")
    return value


#: A Kubernetes resource quantity (``500m``, ``2``, ``4Gi``), kept as written.
Quantity = Annotated[int | float | str, BeforeValidator(_quantity)]


class _Spec(BaseModel):
    """Strict, and dumped with its keys in the order the manifest wrote them."""

    model_config = ConfigDict(extra="forbid")
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._order = [str(key) for key in data]
        return model

    @model_serializer(mode="wrap")
    def _in_written_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        rank = {key: index for index, key in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))


class ResourceClaim(_Spec):
    """One entry of ``resources.claims`` (dynamic resource allocation)."""

    name: str
    request: str | None = None


class Resources(_Spec):
    """``spec.resources``: the container's requests and limits (``nvidia.com/gpu: 1``)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)
    claims: list[ResourceClaim] = Field(default_factory=list)


class Toleration(_Spec):
    """One entry of ``spec.tolerations``, as a Kubernetes pod takes it."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None
