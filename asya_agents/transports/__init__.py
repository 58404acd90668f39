"""Transports: one protocol (:mod:`.base`), one module per backend.

:func:`open_transport` is the one place that picks a backend from settings; it imports
the backend module lazily so that a missing optional dependency (aio-pika, aiobotocore)
only matters to the mesh that uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asya_agents.errors import ConfigError
from asya_agents.transports.base import (
    Backend,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportAdmin,
)

if TYPE_CHECKING:
    from asya_agents.settings import Settings

__all__ = ["Backend", "Delivery", "Outgoing", "QueueStats", "Transport", "TransportAdmin",
           "open_transport"]


def open_transport(kind: str, *, settings: Settings, state_dir: Path, mesh: str) -> Backend:
    """Build the transport ``kind`` ("embedded", "rabbitmq", "sqs") for a mesh."""
    if kind == "embedded":
        from asya_agents.transports.embedded import EmbeddedTransport

        return EmbeddedTransport(state_dir / "queues.db")
    if kind == "rabbitmq":
        try:
            from asya_agents.transports.rabbitmq import RabbitMQTransport
        except ImportError as exc:
            raise ConfigError(
                "the rabbitmq transport needs aio-pika: "
                f"pip install 'asya-agents[rabbitmq]' ({exc})"
            ) from exc
        return RabbitMQTransport.from_settings(settings.rabbitmq, mesh=mesh)
    if kind == "sqs":
        try:
            from asya_agents.transports.sqs import SQSTransport
        except ImportError as exc:
            raise ConfigError(
                f"the sqs transport needs aiobotocore: pip install 'asya-agents[sqs]' ({exc})"
            ) from exc
        return SQSTransport.from_settings(settings.sqs, mesh=mesh)
    raise ConfigError(f"unknown transport {kind!r} (embedded, rabbitmq or sqs)")
