"""The configs of the built-in actors, as declared data, by the handler that names them.

An AsyncActor whose ``spec.handler`` is a built-in (today the review actor's
:data:`PARK_HANDLER`) takes a ``spec.config`` that this project defines, so that config
is checked like the rest of the manifest: when it loads, naming the file and the field,
not when the actor's replica starts. The models live here, below the manifest, because
the manifest checks them and the review actor (far above it) runs them;
:data:`CONFIG_MODELS` is the one table from handler path to model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from asya_agents.durations import Duration

__all__ = ["CONFIG_MODELS", "PARK_HANDLER", "ReviewConfig"]

#: The ``spec.handler`` that makes an AsyncActor a review (parking) actor.
PARK_HANDLER = "asya_agents.review.park"


class ReviewConfig(BaseModel):
    """``spec.config`` of a review actor; every key is documented in actors/review/."""

    model_config = ConfigDict(extra="forbid")

    deadline: Duration | None = Field(
        default=None, description="decide automatically this long after parking")
    deadline_action: Literal["approve", "reject"] = "reject"
    send_back_route: list[str] | None = Field(
        default=None, min_length=1,
        description="where send_back goes; unset: the actors passed on the way here")
    reject_route: list[str] | None = Field(
        default=None, description="where rejected items go; unset: error-end")
    sweep_interval: Duration = Field(default=5.0, gt=0)
    publish_lease: Duration = Field(
        default=30.0, gt=0, description="after this, another publisher may take over")

    def options(self) -> dict[str, Any]:
        """What an item carries so that any process can resume it the same way."""
        return {"deadline_action": self.deadline_action,
                "send_back_route": self.send_back_route,
                "reject_route": self.reject_route}


#: ``spec.handler`` of a built-in actor → the model of its ``spec.config``.
CONFIG_MODELS: dict[str, type[BaseModel]] = {PARK_HANDLER: ReviewConfig}
