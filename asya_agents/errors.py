"""Every error asya-agents raises on purpose, under one root.

Foreign errors (sqlite3, aio-pika, botocore, pydantic, YAML) are translated where they
enter the project, with ``raise ... from exc``, so that callers catch one tree::

    AsyaError
    ├── ConfigError                 a manifest, flavor, mesh or setting is wrong
    │   └── ManifestError           names the file and the field path
    ├── HandlerError                a handler path does not import or cannot be called
    ├── EnvelopeError               a message is not a valid envelope (poison)
    │   ├── HistoryAlteredError     a handler rewrote ``route.prev`` or ``route.curr``
    │   └── UnknownActorError       the route names an actor the mesh does not have
    ├── TransportError              a queue operation failed
    │   ├── TransportUnavailable    the broker or the state file cannot be reached
    │   └── MessageTooLarge         the encoded envelope exceeds the transport's limit
    ├── StoreError                  the results or review store failed
    │   └── ReviewItemNotFound      no review item has that id
    ├── BlobError                   large data at a ``file://`` or ``s3://`` URL failed
    │   └── BlobNotFound            nothing is stored at that URL
    ├── ClusterError                the Kubernetes API refused or failed a request
    └── ActorTimeout                a handler ran past ``resiliency.actorTimeout``
"""

from __future__ import annotations

__all__ = [
    "ActorTimeout",
    "AsyaError",
    "BlobError",
    "BlobNotFound",
    "ClusterError",
    "ConfigError",
    "EnvelopeError",
    "HandlerError",
    "HistoryAlteredError",
    "ManifestError",
    "MessageTooLarge",
    "ReviewItemNotFound",
    "StoreError",
    "TransportError",
    "TransportUnavailable",
    "UnknownActorError",
]


class AsyaError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AsyaError):
    """Configuration (settings, mesh layout) is invalid."""


class ManifestError(ConfigError):
    """A manifest file is invalid; the message names the file and the field path."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file = file
        self.field = field
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class HandlerError(AsyaError):
    """A handler cannot be imported or its signature cannot work."""


class EnvelopeError(AsyaError):
    """A message is not a valid envelope."""


class HistoryAlteredError(EnvelopeError):
    """A handler changed ``route.prev`` or ``route.curr``, which are history."""


class UnknownActorError(EnvelopeError):
    """The route names an actor that is not part of the mesh."""


class TransportError(AsyaError):
    """A transport operation failed."""


class TransportUnavailable(TransportError):
    """The broker (or the embedded state file) cannot be reached."""


class MessageTooLarge(TransportError):
    """The encoded envelope is larger than the transport accepts."""


class StoreError(AsyaError):
    """The results or review store failed."""


class ReviewItemNotFound(StoreError):
    """No review item has this id."""


class BlobError(AsyaError):
    """Reading or writing large data by URL failed; the message names the URL."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(f"{url}: {message}" if url else message)


class BlobNotFound(BlobError):
    """No file or object exists at the URL (or its bucket does not exist)."""


class ClusterError(AsyaError):
    """The Kubernetes API refused or failed a request; the message names the method and
    the path."""


class ActorTimeout(AsyaError):
    """A handler ran longer than the actor's timeout."""
