"""Per-cluster overrides of a mesh (``asya render --overrides FILE``).

A mesh folder is written once and runs everywhere; a cluster often needs other images,
a GPU flavor or another model. Rather than fork the mesh, an overrides file holds
``AsyncActor`` documents deep-merged over the mesh's actors (mappings merge, anything
else is replaced by the override) and parsed again by the same models, so that an
override is checked as strictly as the manifest it changes. It only touches the loaded mesh;
rendering it is :mod:`.render`'s business.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from asya_agents.errors import ManifestError
from asya_agents.manifest import Flavor, LoadedMesh, merge_specs, parse_actor, read_documents

__all__ = ["apply_overrides"]


def apply_overrides(loaded: LoadedMesh, file: Path,
                    flavors: dict[str, Flavor] | None = None) -> LoadedMesh:
    """``loaded`` with the AsyncActor documents of ``file`` merged over its actors: the
    same mesh with a cluster's images, flavors and config, without forking the mesh.
    Flavors an override names are looked up in ``flavors``, then in the mesh's."""
    known = {**loaded.flavors, **(flavors or {})}
    actors = dict(loaded.actors)
    sources = dict(loaded.sources)
    for index, doc in enumerate(read_documents(file)):
        name = (doc.get("metadata") or {}).get("name")
        if doc["kind"] != "AsyncActor" or name not in actors:
            raise ManifestError(f"overrides AsyncActors of mesh {loaded.name} only "
                                f"(has: {', '.join(sorted(actors))})", file=str(file),
                                field=f"[{index}].metadata.name")
        base = actors[name].model_dump(mode="json", exclude_unset=True)
        spec = merge_specs(base["spec"], doc.get("spec") or {})
        spec["flavors"] = list((doc.get("spec") or {}).get("flavors") or [])
        actors[name] = parse_actor({**base, "spec": spec}, file, known)
        sources[name] = file
    return replace(loaded, actors=actors, sources=sources)
