"""What the renderer knows about a cluster beyond the mesh folder, and the pod layout.

A mesh folder says what runs; :class:`RenderOptions` says what it cannot (the broker,
the images, where the image holds the project, the queue prefix). The constants are
the paths and ports that every rendered pod shares, so that the objects
(:mod:`.objects`) and the environment (:mod:`.envvars`) agree on them. Every part of
the renderer reads this module and it reads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CONSOLE_PORT",
    "HEARTBEAT_FILE",
    "MESH_MOUNT",
    "METRICS_PORT",
    "REVIEWERS_MOUNT",
    "RUN_AS",
    "STATE_DIR",
    "RenderOptions",
    "Transport",
    "queue_name",
]

Transport = Literal["rabbitmq", "sqs"]
MESH_MOUNT = "/etc/asya/mesh"
STATE_DIR = "/var/run/asya"
HEARTBEAT_FILE = f"{STATE_DIR}/heartbeat"
METRICS_PORT = 9090
CONSOLE_PORT = 8501
REVIEWERS_MOUNT = "/etc/asya/reviewers"
RUN_AS = 10001


@dataclass(frozen=True)
class RenderOptions:
    """Everything about the cluster that the mesh folder does not say."""

    transport: Transport = "rabbitmq"
    runtime_image: str = "asya-runtime:latest"
    image_root: str = "/app"
    project_root: Path | None = None
    queue_prefix: str = "asya"
    sqs_region: str = "us-east-1"
    sqs_endpoint: str | None = None
    termination_margin: int = 30
    service_account: str = "asya-actor"
    #: The Redis that actor-wide rate limits use where an actor names none (its
    #: ``rateLimit.redisUrl`` unset, i.e. the pod itself): ``asya render --redis-url``.
    redis_url: str | None = None


def queue_name(options: RenderOptions, mesh: str, actor: str) -> str:
    return f"{options.queue_prefix}-{mesh}-{actor}"
