"""The mesh folder a replica reads on a cluster, and the ConfigMap that carries it.

On a cluster the mesh's manifests, flavors already merged, live in one ConfigMap
(``asya-mesh-MESH``) that every pod mounts at ``/etc/asya/mesh`` as a tiny mesh folder,
so that a replica starts exactly as it does locally. The whole mesh is mounted, not one
actor, because a replica checks every route against the mesh's actors. The handler's
code lives in the image, which holds the project tree at ``image_root`` (``/app``) as
the checkout holds it at ``project_root``; the mesh's ``pythonPath`` is rebased onto
the image accordingly.

Each Deployment carries a digest of what its replicas read (their own manifest, the
mesh, the set of actor names), so that changing one actor rolls that actor's pods and
no others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from asya_agents.envelope import DEFAULT_HOP_LIMIT, ERROR_END, HAPPY_END
from asya_agents.errors import ManifestError
from asya_agents.k8s.crd import dump_yaml
from asya_agents.k8s.options import RenderOptions
from asya_agents.manifest import API_VERSION, AsyncActor, LoadedMesh

__all__ = ["MeshFiles", "MeshLayout", "mesh_config_map", "mesh_files"]


def _image_python_paths(loaded: LoadedMesh, options: RenderOptions) -> list[str]:
    root = (options.project_root or Path.cwd()).resolve()
    out = []
    for index, path in enumerate(loaded.python_paths()):
        try:
            rel = path.relative_to(root)
        except ValueError as exc:
            raise ManifestError(
                f"{path} is outside the project root {root}, which the image holds at "
                f"{options.image_root}", file=str(loaded.path / "mesh.yaml"),
                field=f"spec.pythonPath[{index}]") from exc
        out.append(str(PurePosixPath(options.image_root, *rel.parts)))
    return out


def _actor_document(actor: AsyncActor) -> dict[str, Any]:
    """The actor as the replica reads it: flavors merged, defaults left to the models."""
    doc = actor.model_dump(mode="json", exclude_defaults=True, exclude={"metadata"})
    doc["spec"].pop("flavors", None)
    meta = {"name": actor.metadata.name}
    return {"apiVersion": API_VERSION, "kind": "AsyncActor", "metadata": meta, **doc}


@dataclass(frozen=True)
class MeshLayout:
    """The mesh as a cluster sees it: its name, its default route, where its code
    lives inside the image, the folders and buckets its URLs may name
    (``spec.storage``, carried as written) and its hop limit (``spec.hopLimit``)."""

    name: str
    route: list[str]
    python_path: list[str]
    storage: dict[str, Any] = field(default_factory=dict)
    hop_limit: int = DEFAULT_HOP_LIMIT
    #: ``spec.gateway`` as written, ``None`` when the mesh asks for no gateway.
    gateway: dict[str, Any] | None = None

    @classmethod
    def of(cls, loaded: LoadedMesh, options: RenderOptions) -> MeshLayout:
        storage = loaded.mesh.spec.storage.model_dump(exclude_defaults=True)
        gateway = loaded.mesh.spec.gateway
        return cls(loaded.name, loaded.route, _image_python_paths(loaded, options), storage,
                   hop_limit=loaded.mesh.spec.hopLimit,
                   gateway=None if gateway is None else
                   gateway.model_dump(mode="json", exclude_defaults=True))


@dataclass(frozen=True)
class MeshFiles:
    """The mounted mesh folder, and the digests that roll a Deployment when what its
    replicas read changed (its own manifest, the mesh, the set of actor names)."""

    data: dict[str, str]
    digests: dict[str, str]


def mesh_files(layout: MeshLayout, actors: list[AsyncActor],
               options: RenderOptions) -> MeshFiles:
    spec: dict[str, Any] = {"route": layout.route, "transport": options.transport,
                            "flavorPaths": [], "pythonPath": layout.python_path}
    if layout.storage:
        spec["storage"] = layout.storage
    if layout.hop_limit != DEFAULT_HOP_LIMIT:
        spec["hopLimit"] = layout.hop_limit
    if layout.gateway is not None:
        spec["gateway"] = layout.gateway  # its replicas then write hop events
    mesh = {"apiVersion": API_VERSION, "kind": "Mesh", "metadata": {"name": layout.name},
            "spec": spec}
    mesh_text = dump_yaml([mesh])
    docs = {a.name: dump_yaml([_actor_document(a)]) for a in actors}
    names = ",".join(sorted([*docs, HAPPY_END, ERROR_END]))
    digests = {name: _digest(mesh_text, names, text) for name, text in docs.items()}
    digests[""] = _digest(mesh_text, names)
    data = {"mesh.yaml": mesh_text, "actors.yaml": "---\n".join(docs.values())}
    return MeshFiles(data, digests)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def mesh_config_map(mesh: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"asya-mesh-{mesh}",
                         "labels": {"app.kubernetes.io/part-of": mesh,
                                    "app.kubernetes.io/managed-by": "asya",
                                    "asya.sh/mesh": mesh}},
            "data": data}

