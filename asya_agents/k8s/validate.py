"""Checks that a manifest passes the models but would fail on Kubernetes.

The manifest models read every field strictly (a stray toleration key or a resource
quantity that is not one fails when the manifest loads, see :mod:`asya_agents.podspec`),
but some rules only hold on a cluster: KEDA refuses a minimum above the maximum, a
Secret has a DNS name, and the renderer sets the ``ASYA_*`` variables itself.
:func:`check_actor` refuses those before anything is rendered, naming the file and the
field, so that ``asya render`` and the operator report the same error instead of the
API server's later and vaguer one.

:func:`cluster_rate_limit` does the same for an actor-wide rate limit: on a cluster its
bucket must live where every replica reaches it. The renderer deploys no Redis of its
own (one that holds the limit of a paid provider deserves an operator's choice of
persistence and placement), so an actor whose limit would use a Redis on the pod itself
(``redisUrl`` left at ``redis://127.0.0.1:6379/0``) or a SQLite file in the pod's own
state folder is refused, with what to set; ``asya render --redis-url`` fills in the
Redis for actors that name none.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from asya_agents.errors import ManifestError
from asya_agents.k8s.options import RenderOptions
from asya_agents.manifest import AsyncActor

__all__ = ["check_actor", "cluster_rate_limit"]

_LOOPBACK = ("localhost", "::1")
_RATE = "spec.resiliency.rateLimit"

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def check_actor(actor: AsyncActor, file: str) -> None:
    """Refuse what the models accept but Kubernetes would not, naming the field."""
    spec = actor.spec
    if spec.scaling.minReplicaCount > spec.scaling.maxReplicaCount:
        raise ManifestError("must not exceed maxReplicaCount", file=file,
                            field="spec.scaling.minReplicaCount")
    for index, secret in enumerate(spec.envFromSecrets):
        if not _DNS_NAME.match(secret):
            raise ManifestError(f"not a Secret name: {secret!r}", file=file,
                                field=f"spec.envFromSecrets[{index}]")
    _check_env(spec.env, file)


def _check_env(env: dict[str, str], file: str) -> None:
    for name in env:
        if not _ENV_NAME.match(name):
            raise ManifestError("not a valid environment variable name", file=file,
                                field=f"spec.env.{name}")
        if name.startswith("ASYA_"):
            raise ManifestError("ASYA_* variables are set by the renderer", file=file,
                                field=f"spec.env.{name}")


def cluster_rate_limit(actor: AsyncActor, options: RenderOptions, *, file: str) -> AsyncActor:
    """``actor`` as it runs on the cluster: its rate limit's Redis resolved (from
    ``options.redis_url`` where it names none), or :class:`ManifestError` naming the
    actor and what to set."""
    limit = actor.spec.resiliency.rateLimit
    if limit is None or limit.store == "local":
        return actor
    if limit.store == "sqlite":
        raise ManifestError(
            f"actor {actor.name!r}: store sqlite keeps the bucket in each pod's own state "
            "folder, so every replica would get the whole limit; use store redis (set "
            f"{_RATE}.redisUrl or pass --redis-url to asya render) or store local",
            file=file, field=f"{_RATE}.store")
    url, field = limit.redisUrl, f"{_RATE}.redisUrl"
    if _on_the_pod(url):
        if options.redis_url is None:
            how = "store redis" if limit.store == "redis" else f"store auto on {options.transport}"
            raise ManifestError(
                f"actor {actor.name!r} shares its rate limit through Redis ({how}), and "
                f"{_shown(url)} is the pod itself on a cluster: set {field} to a Redis every "
                "replica reaches, or pass --redis-url URL to asya render",
                file=file, field=field)
        url, field = options.redis_url, "--redis-url"
    if urlsplit(url).password:
        raise ManifestError(
            f"actor {actor.name!r}: the Redis URL carries a password, and it would be "
            "written into the mesh ConfigMap (nothing rendered holds a credential); use a "
            "Redis that needs none inside the cluster network", file=file, field=field)
    return _with_redis(actor, url)


def _shown(url: str) -> str:
    """``url`` without its user and password, for a message."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _on_the_pod(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.startswith("127.") or host in _LOOPBACK


def _with_redis(actor: AsyncActor, url: str) -> AsyncActor:
    spec = actor.spec
    limit = spec.resiliency.rateLimit
    assert limit is not None
    if limit.redisUrl == url:
        return actor
    resiliency = spec.resiliency.model_copy(
        update={"rateLimit": limit.model_copy(update={"redisUrl": url})})
    return actor.model_copy(update={"spec": spec.model_copy(update={"resiliency": resiliency})})
