"""Every error asya-agents raises on purpose, under one root.

Foreign errors (sqlite3, aio-pika, botocore, pydantic, YAML) are translated where they
enter the project, with ``raise ... from exc``, so that callers catch one tree::

    AsyaError
    ├── ConfigError                 a manifest, flavor, mesh or setting is wrong
    │   └── ManifestError           names the file and the field path
    ├── HandlerError                a handler path does not import or cannot be called
    ├── EnvelopeError               a message is not a valid envelope (poison)
    │   ├── HistoryAlteredError     a handler rewrote ``route.prev`` or ``route.curr``
    │   ├── HopLimitExceeded        the route passed the mesh's ``spec.hopLimit`` (a loop)
    │   └── UnknownActorError       the route names an actor the mesh does not have
    ├── TransportError              a queue operation failed
    │   ├── TransportUnavailable    the broker or the state file cannot be reached
    │   └── MessageTooLarge         the encoded envelope exceeds the transport's limit
    ├── StoreError                  the results or review store failed
    │   └── ReviewItemNotFound      no review item has that id
    ├── BlobError                   large data at a ``file://`` or ``s3://`` URL failed
    │   ├── BlobNotFound            nothing is stored at that URL
    │   └── BlobRefused             the storage policy does not allow that URL
    ├── ClusterError                the Kubernetes API refused or failed a request
    ├── GatewayError                the gateway cannot serve a request as asked
    │   ├── JobNotFound             no job has that id
    │   └── JobConflict             the job's state forbids it (a reused key, a cancel)
    ├── FanInError                  a fan-in group cannot be gathered (``reason`` says why)
    ├── ActorTimeout                a handler ran past ``resiliency.actorTimeout``
    └── DeliveryLimitExceeded       a message came more often than ``resiliency.maxDeliveries``
"""

from __future__ import annotations

__all__ = [
    "ActorTimeout",
    "AsyaError",
    "BlobError",
    "BlobNotFound",
    "BlobRefused",
    "ClusterError",
    "ConfigError",
    "DeliveryLimitExceeded",
    "EnvelopeError",
    "FanInError",
    "GatewayError",
    "HandlerError",
    "HistoryAlteredError",
    "HopLimitExceeded",
    "JobConflict",
    "JobNotFound",
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


class HopLimitExceeded(EnvelopeError):
    """The envelope would pass through more actors than the mesh's ``spec.hopLimit``
    allows: a route that loops. Retrying cannot help, so it is never retried."""


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


class BlobRefused(BlobError):
    """The storage policy refused the URL: outside the allowed roots, not a regular file,
    a bucket not allowed, over the size limit. The message names the URL and the rule
    (``rule``); retrying cannot help, so the runtime never retries it."""

    def __init__(self, rule: str, *, url: str | None = None) -> None:
        self.rule = rule
        super().__init__(f"refused: {rule}", url=url)


class ClusterError(AsyaError):
    """The Kubernetes API refused or failed a request; the message names the method and
    the path."""


class GatewayError(AsyaError):
    """A request to the gateway cannot be served as asked; the message says why."""


class JobNotFound(GatewayError):
    """No job (root envelope) has this id."""


class JobConflict(GatewayError):
    """The job's state forbids the request: an Idempotency-Key reused with another
    body, a cancel of work already on its way, a decision on a job that waits for none."""


class FanInError(AsyaError):
    """A fan-in group ends without a gathered envelope: a child failed, the group timed
    out, its children disagree on the route after the gather, the gather's handler
    returned something other than one payload, or an envelope reached a ``fanIn``
    actor without a fan-out group. ``reason`` is the ``meta.error.reason`` it ends
    with at ``error-end`` (``fan-in-child-failed``, ``fan-in-timeout``, ...); it is
    never retried."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class ActorTimeout(AsyaError):
    """A handler ran longer than the actor's timeout."""


class DeliveryLimitExceeded(AsyaError):
    """A message was delivered more often than ``resiliency.maxDeliveries`` (or than the
    broker's own limit) without a result: every replica that took it died holding it."""
