"""The SQS transport (aiobotocore): the mesh on Amazon SQS, LocalStack or moto server.

Each actor has one standard queue ``PREFIX-MESH-ACTOR`` with a redrive policy to
``PREFIX-MESH-ACTOR-dlq`` after ``max_receive_count`` receives, so a message that keeps
killing its consumers ends up where a person can look at it. Endpoint, region and
credentials come from settings, so the same code talks to AWS and to emulators.

SQS already has the lease model of the protocol: ``receive`` is a long poll (up to 20 s)
that takes up to 10 messages and hides them for ``visibility`` seconds; ``extend`` is
``ChangeMessageVisibility`` (the runtime's heartbeat calls it while a handler runs);
``nack(delay=d)`` sets the visibility to ``d`` so the message comes back after the
backoff with no consumer holding it. Acks from concurrent handlers are gathered for a
few milliseconds and sent as ``DeleteMessageBatch``; sends likewise as
``SendMessageBatch``.

Delays: ``DelaySeconds`` is whole seconds (rounded up) and at most 900 s, and a
visibility timeout at most 12 h. A longer delay is served in steps: the message carries
its due time (``asya-due``, epoch seconds) as a message attribute, and a consumer that
receives it early sends it again with the next step of delay and deletes the old copy,
before the runtime ever sees it.

Bodies: SQS carries text. A body that is not UTF-8 (never an envelope, but a poison
message must still reach ``error-end``) travels base64-encoded, flagged by the
``asya-encoding`` attribute. A message over the SQS limit (256 KiB, attributes included)
raises :class:`MessageTooLarge` before anything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asya_agents.errors import MessageTooLarge, TransportError, TransportUnavailable
from asya_agents.transports.base import Delivery, Outgoing, QueueStats

if TYPE_CHECKING:
    from asya_agents.settings import SQSSettings

try:
    from aiobotocore.session import get_session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the sqs transport needs aiobotocore: pip install 'asya-agents[sqs]' ({exc})"
    ) from exc

__all__ = ["SQS_MAX_BYTES", "SQSTransport"]

#: What SQS accepts for one message, body and attributes together.
SQS_MAX_BYTES = 256 * 1024
_ATTRIBUTE_ROOM = 512
_MAX_DELAY = 900
_MAX_VISIBILITY = 43_200
_DUE = "asya-due"
_PRIOR = "asya-receives"
_ENCODING = "asya-encoding"
_GATHER = 0.005
#: A stepped delay is delivered this early at most (SQS delays are whole seconds).
_EARLY = 0.1
_FOREIGN = (BotoCoreError, ClientError, OSError, asyncio.TimeoutError)


@dataclass
class _Token:
    url: str
    receipt: str
    attributes: dict[str, str]


class _Batcher:
    """Gathers the entries that concurrent handlers submit to one queue for a few
    milliseconds and sends them as one batch call (up to 10 entries): fewer requests,
    the same per-entry outcome (each caller gets its own error)."""

    def __init__(self, call: Callable[[str, list[dict[str, Any]]], Awaitable[Any]]) -> None:
        self._call = call
        self._pending: dict[str, list[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, url: str, entry: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending.setdefault(url, [])
        pending.append((entry, future))
        if len(pending) == 1:
            task = asyncio.create_task(self._flush(url))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await future

    async def _flush(self, url: str) -> None:
        await asyncio.sleep(_GATHER)
        while self._pending.get(url):
            taken, self._pending[url] = self._pending[url], []
            await asyncio.gather(*(self._send(url, taken[i:i + 10])
                                   for i in range(0, len(taken), 10)))

    async def _send(self, url: str, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]
                    ) -> None:
        entries = [{**entry, "Id": str(i)} for i, (entry, _) in enumerate(batch)]
        try:
            reply = await self._call(url, entries)
        except TransportError as exc:
            reply = {"Failed": [{"Id": str(i), "Message": str(exc)} for i in range(len(batch))]}
        failed = {f["Id"]: f.get("Message", "failed") for f in reply.get("Failed") or []}
        for i, (_, future) in enumerate(batch):
            if future.done():  # its caller was cancelled
                continue
            if str(i) in failed:
                future.set_exception(TransportError(f"SQS refused an entry: {failed[str(i)]}"))
            else:
                future.set_result(None)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class SQSTransport:
    """Queues on SQS (or an emulator), named ``PREFIX-MESH-ACTOR``."""

    name = "sqs"
    max_message_bytes = SQS_MAX_BYTES - _ATTRIBUTE_ROOM

    def __init__(
        self,
        *,
        mesh: str,
        prefix: str = "asya",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_receive_count: int = 20,
        max_delay: int = _MAX_DELAY,
    ) -> None:
        self.mesh = mesh
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self._keys = (access_key_id, secret_access_key)
        self.max_receive_count = max_receive_count
        #: The longest single ``DelaySeconds`` (SQS allows 900); tests lower it to see
        #: long delays served in steps without waiting a quarter of an hour.
        self.max_delay = max_delay
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._urls: dict[str, str] = {}
        self._sends = _Batcher(lambda url, entries: self._call(
            url, "send_message_batch", QueueUrl=url, Entries=entries))
        self._deletes = _Batcher(lambda url, entries: self._call(
            url, "delete_message_batch", QueueUrl=url, Entries=entries))

    @classmethod
    def from_settings(cls, settings: SQSSettings, *, mesh: str) -> SQSTransport:
        return cls(mesh=mesh, prefix=settings.queue_prefix, endpoint_url=settings.endpoint_url,
                   region=settings.region, access_key_id=settings.access_key_id,
                   secret_access_key=settings.secret_access_key,
                   max_receive_count=settings.max_receive_count)

    @property
    def delivery_limit(self) -> int:
        """Receives after which the redrive policy moves a message to the ``-dlq``."""
        return self.max_receive_count

    def queue_name(self, actor: str) -> str:
        return f"{self.prefix}-{self.mesh}-{actor}"

    # -- plumbing ---------------------------------------------------------------------

    async def _sqs(self) -> Any:
        async with self._lock:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                key, secret = self._keys
                config = Config(retries={"max_attempts": 3, "mode": "standard"},
                                max_pool_connections=32)
                try:
                    self._client = await stack.enter_async_context(get_session().create_client(
                        "sqs", region_name=self.region, endpoint_url=self.endpoint_url,
                        aws_access_key_id=key, aws_secret_access_key=secret, config=config))
                except _FOREIGN as exc:
                    raise TransportUnavailable(f"cannot open an SQS client: {exc}") from exc
                self._stack = stack
            return self._client

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        """Call the SQS API, translating botocore's errors at this boundary."""
        client = await self._sqs()
        try:
            return await getattr(client, method)(**kwargs)
        except ClientError as exc:
            raise TransportError(f"SQS {method} for {what}: {exc}") from exc
        except _FOREIGN as exc:
            raise TransportUnavailable(
                f"SQS at {self.endpoint_url or 'AWS ' + self.region} unreachable ({method} "
                f"for {what}): {exc}"
            ) from exc

    async def _url(self, actor: str) -> str:
        if actor not in self._urls:
            name = self.queue_name(actor)
            reply = await self._call(name, "get_queue_url", QueueName=name)
            self._urls[actor] = reply["QueueUrl"]
        return self._urls[actor]

    # -- protocol -----------------------------------------------------------------------

    async def ensure_queues(self, queues: list[str]) -> None:
        for actor in queues:
            name = self.queue_name(actor)
            dlq = await self._call(name, "create_queue", QueueName=name + "-dlq",
                                   Attributes={"MessageRetentionPeriod": "1209600"})
            dlq_arn = (await self._call(name, "get_queue_attributes", QueueUrl=dlq["QueueUrl"],
                                        AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
            redrive = json.dumps({"deadLetterTargetArn": dlq_arn,
                                  "maxReceiveCount": str(self.max_receive_count)})
            reply = await self._call(name, "create_queue", QueueName=name,
                                     Attributes={"RedrivePolicy": redrive})
            self._urls[actor] = reply["QueueUrl"]

    async def send(self, messages: list[Outgoing]) -> None:
        entries: dict[str, list[dict[str, Any]]] = {}
        for msg in messages:
            entry = self._entry(msg.queue, msg.body, msg.delay, {})
            entries.setdefault(msg.queue, []).append(entry)
        await asyncio.gather(*(self._send_entries(actor, items)
                               for actor, items in entries.items()))

    def _entry(self, actor: str, body: bytes, delay: float,
               attributes: dict[str, str]) -> dict[str, Any]:
        """One SendMessageBatch entry; checks the size and plans the delay."""
        attrs = dict(attributes)
        try:
            text = body.decode("utf-8")
            attrs.pop(_ENCODING, None)
        except UnicodeDecodeError:
            text, attrs[_ENCODING] = base64.b64encode(body).decode("ascii"), "base64"
        size = len(text.encode()) + sum(len(k) + len(v) + 6 for k, v in attrs.items())
        if size > self.max_message_bytes:
            raise MessageTooLarge(
                f"message for {actor!r} is {size} bytes as SQS sends it, over the SQS "
                f"transport's limit of {self.max_message_bytes} (SQS takes {SQS_MAX_BYTES} "
                f"with attributes; {_ATTRIBUTE_ROOM} are kept for those): pass large data by URL"
            )
        seconds = math.ceil(max(delay, 0.0))
        if seconds > self.max_delay:
            attrs[_DUE] = f"{time.time() + delay:.3f}"
            seconds = self.max_delay
        entry: dict[str, Any] = {"MessageBody": text, "DelaySeconds": seconds}
        if attrs:
            entry["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v}
                                          for k, v in attrs.items()}
        return entry

    async def _send_entries(self, actor: str, entries: list[dict[str, Any]]) -> None:
        url = await self._url(actor)
        await asyncio.gather(*(self._sends.submit(url, entry) for entry in entries))

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float,
        capacity: int | None = None,
    ) -> list[Delivery]:
        """``capacity`` is not used: SQS hands out only what a receive asks for."""
        url = await self._url(queue)
        deadline = time.monotonic() + wait
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            reply = await self._call(
                queue, "receive_message", QueueUrl=url,
                MaxNumberOfMessages=max(1, min(max_messages, 10)),
                WaitTimeSeconds=min(math.ceil(left), 20),
                VisibilityTimeout=min(math.ceil(visibility), _MAX_VISIBILITY),
                AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"],
            )
            got = [d for m in reply.get("Messages", [])
                   if (d := await self._admit(queue, url, m)) is not None]
            if got or time.monotonic() >= deadline:
                return got

    async def _admit(self, queue: str, url: str, message: dict[str, Any]) -> Delivery | None:
        """A delivery for the runtime, or None for a message re-parked until it is due."""
        attrs = {k: v.get("StringValue", "")
                 for k, v in (message.get("MessageAttributes") or {}).items()}
        token = _Token(url, message["ReceiptHandle"], attrs)
        body = message["Body"].encode()
        if attrs.get(_ENCODING) == "base64":
            body = base64.b64decode(body)
        due = float(attrs.get(_DUE, 0) or 0)
        if due - time.time() > _EARLY:
            await self._repark(queue, body, due, token)
            return None
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        return Delivery(queue, body, token, receives + int(attrs.get(_PRIOR, 0) or 0))

    async def _repark(self, queue: str, body: bytes, due: float, token: _Token) -> None:
        attrs = {k: v for k, v in token.attributes.items() if k != _DUE}
        entry = self._entry(queue, body, due - time.time(), attrs)
        await self._send_entries(queue, [entry])
        await self._delete(token)

    async def ack(self, delivery: Delivery) -> None:
        await self._delete(delivery.token)

    async def _delete(self, token: _Token) -> None:
        await self._deletes.submit(token.url, {"ReceiptHandle": token.receipt})

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        await self.send(messages)
        await self.ack(delivery)

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        token: _Token = delivery.token
        if delay <= _MAX_VISIBILITY:
            await self._call(delivery.queue, "change_message_visibility", QueueUrl=token.url,
                             ReceiptHandle=token.receipt, VisibilityTimeout=math.ceil(delay))
            return
        attrs = {**token.attributes, _PRIOR: str(delivery.delivery_count)}
        entry = self._entry(delivery.queue, delivery.body, delay, attrs)
        await self._send_entries(delivery.queue, [entry])
        await self._delete(token)

    async def extend(self, delivery: Delivery, *, visibility: float) -> None:
        token: _Token = delivery.token
        await self._call(delivery.queue, "change_message_visibility", QueueUrl=token.url,
                         ReceiptHandle=token.receipt,
                         VisibilityTimeout=min(math.ceil(visibility), _MAX_VISIBILITY))

    async def stats(self, queue: str) -> QueueStats:
        url = await self._url(queue)
        reply = await self._call(queue, "get_queue_attributes", QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])
        attrs = reply.get("Attributes", {})
        return QueueStats(depth=int(attrs.get("ApproximateNumberOfMessages", 0)),
                          in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                          delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)))

    async def close(self) -> None:
        await self._sends.drain()
        await self._deletes.drain()
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(*_FOREIGN):
                await stack.aclose()

    async def delete_queues(self, actors: list[str]) -> None:
        """Delete the work and dead-letter queues of ``actors`` (tests, teardown)."""
        for actor in actors:
            url = await self._url(actor)
            await self._call(actor, "delete_queue", QueueUrl=url)
            dlq = await self._call(actor, "get_queue_url",
                                   QueueName=self.queue_name(actor) + "-dlq")
            await self._call(actor, "delete_queue", QueueUrl=dlq["QueueUrl"])
            self._urls.pop(actor, None)

    def __repr__(self) -> str:
        return f"SQSTransport({self.endpoint_url or self.region!r}, mesh={self.mesh!r})"
