"""A mesh as its users open it: manifests, settings, transport and stores, resolved once.

Every program that works on a running mesh from outside its replicas (``asya send``,
``asya status``, ``asya results``, the review console, the gateway, the test helper)
starts the same way: read the mesh folder, read the ``ASYA_*`` settings, let flags
override both, find the state folder, and open the transport and the stores there.
:class:`MeshContext` is that one reading, so that programs started in separate
terminals, or beside each other in a pod, always see the same mesh.

Precedence, for the transport and the state folder alike: an explicit argument (a
command-line flag), then the setting (``ASYA_TRANSPORT``, ``ASYA_STATE_DIR``), then the
mesh's ``mesh.yaml``. The store URL comes from the argument, then ``ASYA_STORE_URL``;
unset means SQLite in the state folder.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from asya_agents import status
from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.errors import UnknownActorError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.settings import Settings
from asya_agents.storage import StoragePolicy
from asya_agents.stores import (
    ResultStore,
    open_group_store,
    open_result_store,
    open_review_store,
)
from asya_agents.stores.groups import GroupStore
from asya_agents.stores.review_base import ReviewStore
from asya_agents.transports import Backend, Outgoing, open_transport

__all__ = ["SEND_CHUNK", "MeshContext"]

#: Envelopes per transport call when many are sent at once.
SEND_CHUNK = 500


class MeshContext:
    """One mesh, opened from its folder; stores are opened on first use and shared."""

    def __init__(self, loaded: LoadedMesh, *, settings: Settings, kind: str, state_dir: Path,
                 store_url: str | None) -> None:
        self.loaded = loaded
        self.settings = settings
        self.kind = kind
        self.state_dir = state_dir
        self.store_url = store_url
        self._results: ResultStore | None = None
        self._reviews: ReviewStore | None = None
        self._groups: GroupStore | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, mesh: str | Path | LoadedMesh, *, transport: str | None = None,
             state_dir: str | Path | None = None, store_url: str | None = None,
             settings: Settings | None = None) -> MeshContext:
        """Read ``mesh`` (a folder or an already loaded mesh) with the overrides given."""
        settings = settings or Settings()
        loaded = mesh if isinstance(mesh, LoadedMesh) else load_mesh(mesh)
        kind = transport or settings.mesh.transport or loaded.mesh.spec.transport
        folder = loaded.state_dir(state_dir or settings.mesh.state_dir)
        return cls(loaded, settings=settings, kind=kind, state_dir=folder,
                   store_url=store_url or settings.store.url)

    # -- what the mesh is ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def actors(self) -> list[str]:
        """The mesh's actors in manifest order, then the crew."""
        return [*self.loaded.actors, HAPPY_END, ERROR_END]

    def route(self, actors: list[str] | None = None) -> list[str]:
        """``actors`` checked against the mesh (``mesh.yaml``'s route when ``None``);
        :class:`UnknownActorError` names the actors the mesh does not have."""
        route = list(actors) if actors else self.loaded.route
        unknown = [a for a in route if a not in self.loaded.actor_names]
        if unknown:
            raise UnknownActorError(
                f"unknown actor(s) {', '.join(unknown)} in the route "
                f"(mesh {self.name} has: {', '.join(sorted(self.loaded.actors))})")
        return route

    def storage(self) -> StoragePolicy:
        """What URLs the mesh as a whole may read (the console's images): its ``data/``
        and state folders, ``mesh.yaml``'s ``spec.storage`` and ``ASYA_BLOB_*``."""
        return self.loaded.storage_policy(None, self.settings.s3, self.state_dir)

    # -- connections ----------------------------------------------------------------------

    def transport(self) -> Backend:
        """A new connection to the mesh's queues; the caller closes it."""
        return open_transport(self.kind, settings=self.settings, state_dir=self.state_dir,
                              mesh=self.name)

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Backend]:
        """A connection to the mesh's queues for the length of a ``with`` block."""
        transport = self.transport()
        try:
            yield transport
        finally:
            await transport.close()

    def results(self) -> ResultStore:
        """The result store, reading this mesh's records only (opened once, closed by
        :meth:`close`)."""
        with self._lock:
            if self._results is None:
                self._results = open_result_store(self.store_url, state_dir=self.state_dir,
                                                  mesh=self.name)
            return self._results

    def reviews(self) -> ReviewStore:
        """The review store (opened once, closed by :meth:`close`)."""
        with self._lock:
            if self._reviews is None:
                self._reviews = open_review_store(self.store_url, state_dir=self.state_dir)
            return self._reviews

    def groups(self) -> GroupStore | None:
        """The fan-in group store, when the mesh has a ``fanIn`` actor (opened once,
        closed by :meth:`close`)."""
        if not self.loaded.gathers:
            return None
        with self._lock:
            if self._groups is None:
                url = self.settings.store.groups_url or self.store_url
                self._groups = open_group_store(url, state_dir=self.state_dir,
                                                mesh=self.name)
            return self._groups

    def supervisor(self) -> dict[str, Any]:
        """The local supervisor's status, ``{}`` when none runs for this state folder."""
        return status.read_supervisor(self.state_dir)

    def close(self) -> None:
        with self._lock:
            stores: list[Any] = [self._results, self._reviews, self._groups]
            self._results, self._reviews, self._groups = None, None, None
        for store in stores:
            if store is not None:
                store.close()

    # -- doing ----------------------------------------------------------------------------

    async def status(self, transport: Backend) -> dict[str, Any]:
        """The ``asya status --json`` object (see :func:`asya_agents.status.snapshot`)."""
        return await status.snapshot(mesh=self.name, transport_kind=self.kind,
                                     actors=self.actors, transport=transport,
                                     store=self.results(), supervisor=self.supervisor(),
                                     state_dir=self.state_dir, groups=self.groups())

    async def send(self, transport: Backend, envelopes: list[Envelope]) -> None:
        """Declare the mesh's queues and enqueue ``envelopes`` (durably, when this
        returns)."""
        await transport.ensure_queues(sorted(self.loaded.actor_names))
        for start in range(0, len(envelopes), SEND_CHUNK):
            await transport.send([Outgoing(e.route.curr, e.encode())
                                  for e in envelopes[start:start + SEND_CHUNK]])

    def __enter__(self) -> MeshContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
