"""The RabbitMQ transport, as a package of one part per file (see :mod:`.transport`).

Importing it needs aio-pika (``pip install 'asya-agents[rabbitmq]'``); without it the
error says so.
"""

from __future__ import annotations

try:
    from asya_agents.transports.rabbitmq.topology import DELAY_CLASSES_MS
    from asya_agents.transports.rabbitmq.transport import RabbitMQTransport
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the rabbitmq transport needs aio-pika: pip install 'asya-agents[rabbitmq]' ({exc})"
    ) from exc

__all__ = ["DELAY_CLASSES_MS", "RabbitMQTransport"]
