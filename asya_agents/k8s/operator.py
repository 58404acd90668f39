"""The operator (``asya operator``): reconciles ``AsyncActor`` resources with kopf.

On a cluster a namespace holds one mesh (named after the namespace unless the actors
carry the label ``asya.sh/mesh``). Reconciling one actor renders its whole mesh with
:mod:`.render`, the same renderer as ``asya render``, and applies it with server-side
apply: the mesh ConfigMap (every valid actor of the mesh, so that replicas know every
route name), each actor's Deployment and ScaledObject (owned by its AsyncActor, so that
Kubernetes deletes them with it), the crew actors, the review console, the
ServiceAccount and the TriggerAuthentication. It then declares the actor's queues on the
broker and writes status conditions that say what is wrong:

* ``Valid``: the spec, with its flavors from the cluster merged, passes the same models
  as ``asya up`` (the message names the field);
* ``QueuesDeclared``: the broker accepted the queues;
* ``Ready``: both, and the API server accepted the objects (if not, its reason is
  ``ApplyFailed`` with the server's message, e.g. KEDA's CRDs missing).

The handlers (:func:`on_actor`, :func:`on_actor_delete`, :func:`on_flavor`) are plain
async functions that take what kopf passes; they talk to the cluster through the small
:class:`Cluster` protocol, so that tests call them directly with an in-memory cluster
(no API server can run where the tests run). kopf is imported only by
:func:`run_operator`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from asya_agents.envelope import ERROR_END, HAPPY_END
from asya_agents.errors import AsyaError, ConfigError, ManifestError
from asya_agents.k8s.crd import GROUP, VERSION
from asya_agents.k8s.render import (
    MeshLayout,
    Rendered,
    RenderOptions,
    check_actor,
    cluster_rate_limit,
    queue_name,
    render_layout,
)
from asya_agents.manifest import AsyncActor, Flavor, parse_actor, parse_flavor
from asya_agents.transports import Backend

__all__ = [
    "Cluster",
    "Operator",
    "Outcome",
    "condition",
    "mesh_of",
    "on_actor",
    "on_actor_delete",
    "on_flavor",
    "run_operator",
]

API_VERSION = f"{GROUP}/{VERSION}"
MESH_LABEL = "asya.sh/mesh"
MANAGER = "asya-operator"
log = logging.getLogger("asya.operator")


class Cluster(Protocol):
    """The few Kubernetes API calls the operator makes."""

    async def list(self, kind: str, namespace: str) -> list[dict[str, Any]]: ...

    async def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply (create or update) ``obj``; it carries its namespace."""

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete; an object that is already gone is no error."""

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> None: ...


# -- status ----------------------------------------------------------------------------


def condition(kind: str, ok: bool, reason: str, message: str, *, now: datetime,
              generation: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False",
                           "reason": reason, "message": message,
                           "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


@dataclass
class Outcome:
    """What one reconciliation found; becomes the AsyncActor's status."""

    valid: tuple[bool, str, str] = (False, "NotReconciled", "not checked yet")
    queues: tuple[bool, str, str] = (False, "NotReconciled", "not declared yet")
    applied: tuple[bool, str, str] = (False, "NotApplied", "objects not applied")
    mesh: str = ""
    queue: str = ""
    flavors: list[str] = field(default_factory=list)

    def status(self, *, now: datetime, generation: int | None) -> dict[str, Any]:
        why = next((c for c in (self.valid, self.applied, self.queues) if not c[0]), None)
        ready_cond = (why[1], why[2]) if why else (
            "Reconciled", "deployed; KEDA scales it on queue depth")
        conds = [
            condition("Valid", *self.valid, now=now, generation=generation),
            condition("QueuesDeclared", *self.queues, now=now, generation=generation),
            condition("Ready", why is None, *ready_cond, now=now, generation=generation),
        ]
        status: dict[str, Any] = {"conditions": conds, "mesh": self.mesh,
                                  "queue": self.queue, "flavors": self.flavors}
        if generation is not None:
            status["observedGeneration"] = generation
        return status


# -- the reconciler --------------------------------------------------------------------


def _where(namespace: str, name: str) -> str:
    return f"AsyncActor {namespace}/{name}"


def _document(body: dict[str, Any]) -> dict[str, Any]:
    """The manifest part of a resource: what a user wrote, not what the server added."""
    meta = body.get("metadata", {})
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": keep, "spec": body.get("spec") or {}}


def mesh_of(body: dict[str, Any], namespace: str) -> str:
    labels = body.get("metadata", {}).get("labels") or {}
    return str(labels.get(MESH_LABEL) or namespace)


def _owner(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": "AsyncActor", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


@dataclass
class Operator:
    """Reconciles the AsyncActors of one cluster; one per operator process."""

    cluster: Cluster
    options: RenderOptions
    open_queues: Callable[[str], Backend]
    image_root: str = "/app"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def flavors(self, namespace: str) -> dict[str, Flavor]:
        found: dict[str, Flavor] = {}
        for body in await self.cluster.list("Flavor", namespace):
            name = body["metadata"]["name"]
            try:
                found[name] = parse_flavor(_document(body), Path(f"Flavor {namespace}/{name}"))
            except ManifestError as exc:
                log.warning("ignoring invalid flavor: %s", exc)
        return found

    async def mesh_actors(self, namespace: str, mesh: str, flavors: dict[str, Flavor],
                          ) -> tuple[dict[str, AsyncActor], dict[str, dict[str, Any]]]:
        """Valid actors of ``mesh`` (by name) and their resources; invalid ones are left
        out (their own reconciliation reports why)."""
        actors: dict[str, AsyncActor] = {}
        bodies: dict[str, dict[str, Any]] = {}
        for body in await self.cluster.list("AsyncActor", namespace):
            meta = body.get("metadata", {})
            if mesh_of(body, namespace) != mesh or meta.get("deletionTimestamp"):
                continue
            where = _where(namespace, meta["name"])
            try:
                actor = parse_actor(_document(body), Path(where), flavors)
                check_actor(actor, where)
                cluster_rate_limit(actor, self.options, file=where)
            except ManifestError:
                continue
            actors[actor.name], bodies[actor.name] = actor, body
        return actors, bodies

    def render(self, mesh: str, actors: dict[str, AsyncActor]) -> Rendered:
        route = [sorted(actors)[0]] if actors else [HAPPY_END]
        layout = MeshLayout(mesh, route, [self.image_root])
        return render_layout(layout, list(actors.values()), self.options)

    async def apply_mesh(self, namespace: str, mesh: str, actors: dict[str, AsyncActor],
                         bodies: dict[str, dict[str, Any]]) -> None:
        for obj in self.render(mesh, actors).objects():
            obj["metadata"]["namespace"] = namespace
            owner = bodies.get(obj["metadata"]["labels"].get("asya.sh/actor", ""))
            if owner is not None and obj["metadata"]["labels"].get(
                    "app.kubernetes.io/component") == "actor":
                obj["metadata"]["ownerReferences"] = [_owner(owner)]
            await self.cluster.apply(obj)

    async def declare(self, mesh: str, names: list[str]) -> None:
        transport = self.open_queues(mesh)
        try:
            await transport.ensure_queues(names)
        finally:
            await transport.close()

    async def reconcile(self, body: dict[str, Any], *, namespace: str,
                        name: str) -> Outcome:
        mesh = mesh_of(body, namespace)
        out = Outcome(mesh=mesh, queue=queue_name(self.options, mesh, name))
        flavors = await self.flavors(namespace)
        try:
            actor = parse_actor(_document(body), Path(_where(namespace, name)), flavors)
        except ManifestError as exc:
            out.valid = (False, "InvalidSpec", str(exc))
            return out
        out.flavors = list(actor.spec.flavors)
        actors, bodies = await self.mesh_actors(namespace, mesh, flavors)
        actors[name], bodies[name] = actor, body
        try:
            await self.apply_mesh(namespace, mesh, actors, bodies)
        except ManifestError as exc:
            out.valid = (False, "InvalidSpec", str(exc))
            return out
        except AsyaError as exc:  # the API refused: RBAC, KEDA missing, admission
            out.valid = (True, "Valid", "spec and flavors are valid")
            out.applied = (False, "ApplyFailed", str(exc))
            return out
        out.valid = (True, "Valid", "spec and flavors are valid")
        out.applied = (True, "Applied", "objects applied")
        try:
            await self.declare(mesh, [name, HAPPY_END, ERROR_END])
        except AsyaError as exc:
            out.queues = (False, "BrokerUnavailable", str(exc))
            return out
        out.queues = (True, "Declared", f"queue {out.queue} is ready")
        return out

    async def remove(self, body: dict[str, Any], *, namespace: str, name: str) -> None:
        """The actor is going: drop its objects, and re-render the rest of the mesh so
        that its replicas stop routing to it; the last actor takes the mesh along."""
        mesh = mesh_of(body, namespace)
        for kind in ("ScaledObject", "Deployment"):
            await self.cluster.delete(kind, namespace, name)
        flavors = await self.flavors(namespace)
        actors, bodies = await self.mesh_actors(namespace, mesh, flavors)
        actors.pop(name, None)
        if actors:
            await self.apply_mesh(namespace, mesh, actors, bodies)
            return
        for obj in self.render(mesh, {}).objects():
            if obj["kind"] not in ("ServiceAccount", "TriggerAuthentication"):
                await self.cluster.delete(obj["kind"], namespace, obj["metadata"]["name"])

    async def users_of(self, namespace: str, flavor: str) -> list[dict[str, Any]]:
        return [b for b in await self.cluster.list("AsyncActor", namespace)
                if flavor in ((b.get("spec") or {}).get("flavors") or [])]


# -- the handlers kopf calls (and tests call directly) ----------------------------------


async def on_actor(op: Operator, *, body: dict[str, Any], namespace: str, name: str,
                   patch: Any, **_: Any) -> Outcome:
    """create / update / resume of an AsyncActor: reconcile, then write the status."""
    outcome = await op.reconcile(body, namespace=namespace, name=name)
    generation = body.get("metadata", {}).get("generation")
    patch["status"] = outcome.status(now=op.clock(), generation=generation)
    if not outcome.valid[0]:
        log.warning("%s: %s", _where(namespace, name), outcome.valid[2])
    return outcome


async def on_actor_delete(op: Operator, *, body: dict[str, Any], namespace: str, name: str,
                          **_: Any) -> None:
    await op.remove(body, namespace=namespace, name=name)


async def on_flavor(op: Operator, *, namespace: str, name: str, **_: Any) -> list[str]:
    """A flavor changed: reconcile every actor that names it. Returns their names."""
    done = []
    for body in await op.users_of(namespace, name):
        actor = body["metadata"]["name"]
        patch: dict[str, Any] = {}
        await on_actor(op, body=body, namespace=namespace, name=actor, patch=patch)
        await op.cluster.patch_status("AsyncActor", namespace, actor, patch["status"])
        done.append(actor)
    return done


# -- wiring into kopf -------------------------------------------------------------------


def _import_kopf() -> Any:
    try:
        import kopf
    except ImportError as exc:
        raise ConfigError(f"the operator needs kopf: pip install 'asya-agents[k8s]' ({exc})"
                          ) from exc
    return kopf


def run_operator(*, transport: str, namespaces: list[str], runtime_image: str,
                 liveness: str | None = None) -> None:
    """Run until stopped: register the handlers with kopf and hand it the loop."""
    kopf = _import_kopf()
    from asya_agents.k8s.client import HttpCluster
    from asya_agents.settings import Settings
    from asya_agents.transports import open_transport

    settings = Settings()
    cluster = HttpCluster()
    prefix = settings.sqs.queue_prefix if transport == "sqs" else settings.rabbitmq.queue_prefix
    options = replace(RenderOptions(), transport=transport,  # type: ignore[arg-type]
                      runtime_image=runtime_image, queue_prefix=prefix,
                      sqs_region=settings.sqs.region, sqs_endpoint=settings.sqs.endpoint_url)

    def open_queues(mesh: str) -> Backend:
        return open_transport(transport, settings=settings, state_dir=Path("/tmp"), mesh=mesh)

    op = Operator(cluster, options, open_queues)
    registry = kopf.OperatorRegistry()
    _register(kopf, registry, op, cluster)
    kopf.run(registry=registry, standalone=True, clusterwide=not namespaces,
             namespaces=namespaces, liveness_endpoint=liveness)


def _register(kopf: Any, registry: Any, op: Operator, cluster: Any) -> None:
    actors = (GROUP, VERSION, "asyncactors")

    def login(**kwargs: Any) -> Any:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        cluster.connect(info)
        return info

    kopf.on.login(registry=registry)(login)

    async def reconcile(**kwargs: Any) -> None:
        outcome = await on_actor(op, **kwargs)
        for ok, _, message in (outcome.applied, outcome.queues):
            if outcome.valid[0] and not ok:  # worth retrying; an invalid spec is not
                raise kopf.TemporaryError(message, delay=30)

    for decorate in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorate(*actors, registry=registry)(reconcile)

    async def delete(**kwargs: Any) -> None:
        await on_actor_delete(op, **kwargs)

    kopf.on.delete(*actors, registry=registry)(delete)

    async def flavor(**kwargs: Any) -> None:
        await on_flavor(op, **kwargs)

    for decorate in (kopf.on.create, kopf.on.update):
        decorate(GROUP, VERSION, "flavors", registry=registry)(flavor)

