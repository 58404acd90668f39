"""The manifests: ``AsyncActor``, ``Flavor`` and ``Mesh`` (``asya.sh/v1alpha1``).

A data scientist writes ``handler.py``; a platform engineer writes the manifest, usually
by picking flavors. The same files run locally (``asya up``) and on Kubernetes
(``asya render``), so this module is the single reading of them: every unknown field is
an error that names the file and the field path, and flavors merge *under* the actor's
own fields (later flavors over earlier ones, the actor over all).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asya_agents.builtin import CONFIG_MODELS
from asya_agents.durations import Duration
from asya_agents.envelope import DEFAULT_HOP_LIMIT, ERROR_END, HAPPY_END
from asya_agents.errors import ManifestError
from asya_agents.podspec import Resources, Toleration
from asya_agents.resiliency.spec import ResiliencySpec
from asya_agents.settings import BlobSettings
from asya_agents.storage import StoragePolicy, StorageSpec, mesh_policy
from asya_agents.suggest import explain

__all__ = [
    "API_VERSION",
    "ActorSpec",
    "AsyncActor",
    "BatchSpec",
    "FanInSpec",
    "Flavor",
    "GatewaySpec",
    "LoadedMesh",
    "Mesh",
    "MeshSpec",
    "Metadata",
    "ScalingSpec",
    "StorageSpec",
    "load_flavors",
    "load_mesh",
    "merge_specs",
    "parse_actor",
    "parse_flavor",
    "read_documents",
]

API_VERSION = "asya.sh/v1alpha1"
CREW_ACTORS = (HAPPY_END, ERROR_END)
_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(_Spec):
    name: str = Field(pattern=_NAME_PATTERN, description="DNS-1123 label; the queue's name")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ScalingSpec(_Spec):
    """KEDA's semantics, applied by KEDA on Kubernetes and by ``asya up`` locally."""

    minReplicaCount: int = Field(default=0, ge=0)
    maxReplicaCount: int = Field(default=1, ge=1)
    queueLength: int = Field(default=5, ge=1, description="target messages per replica")
    activationQueueLength: int = Field(default=0, ge=0, description="scale from 0 above this")
    pollingInterval: Duration = 2.0
    cooldownPeriod: Duration = 60.0
    scaleDownStabilization: Duration = Field(
        default=30.0, description="HPA-style window: scale down to the highest recent wish"
    )


class BatchSpec(_Spec):
    maxSize: int = Field(ge=1)
    maxWait: Duration = 0.05


class FanInSpec(_Spec):
    """The actor gathers the children of one fan-out and calls its handler once per
    group (docs/manifest.md, section Fan-in)."""

    timeout: Duration = Field(default=600.0, gt=0, description=(
        "how long a group may wait, from its first child, before it ends as a failure "
        "(or, with partial, with what arrived)"))
    partial: bool = Field(default=False, description=(
        "a failed child does not fail the group: the handler gets the children that "
        "succeeded and the gathered envelope lists the failures"))


class ActorSpec(_Spec):
    """``spec`` of an AsyncActor; a Flavor's ``spec`` is any subset of it."""

    image: str | None = None
    handler: str | None = None
    handlerMode: Literal["payload", "envelope"] = "payload"
    config: dict[str, Any] = Field(default_factory=dict)
    concurrency: int = Field(default=1, ge=1)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    resiliency: ResiliencySpec = Field(default_factory=ResiliencySpec)
    batch: BatchSpec | None = None
    fanIn: FanInSpec | None = None
    flavors: list[str] = Field(default_factory=list)
    storage: StorageSpec = Field(default_factory=StorageSpec, description=(
        "folders and buckets this actor may use beyond the mesh's"))
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    maxMessageBytes: int | None = Field(default=None, ge=1024)
    envFromSecrets: list[str] = Field(
        default_factory=list,
        description="Kubernetes only: Secrets whose keys become environment variables "
        "(API keys, credentials); never write a credential into env",
    )

    @field_validator("handler")
    @classmethod
    def _handler_path(cls, value: str | None) -> str | None:
        if value is not None and ("." not in value or value.startswith(".")):
            raise ValueError(f"handler must be 'module.func' or 'module.Class.method': {value!r}")
        return value


class AsyncActor(_Spec):
    apiVersion: Literal["asya.sh/v1alpha1"]
    kind: Literal["AsyncActor"]
    metadata: Metadata
    spec: ActorSpec

    @property
    def name(self) -> str:
        return self.metadata.name


class Flavor(_Spec):
    apiVersion: Literal["asya.sh/v1alpha1"]
    kind: Literal["Flavor"]
    metadata: Metadata
    spec: dict[str, Any]


class GatewaySpec(_Spec):
    """``spec.gateway`` of a Mesh: the mesh serves other programs through ``asya
    gateway`` (its replicas then write hop events for the gateway's streams, and
    ``asya render`` adds the gateway's Deployment and Service)."""

    description: str | None = Field(
        default=None, description="what the mesh does, for its MCP tool and A2A card")
    replicas: int = Field(default=1, ge=1, description="gateway pods on a cluster")
    resources: Resources = Field(default_factory=Resources,
                                 description="the gateway container's resources")


class MeshSpec(_Spec):
    route: list[str] = Field(min_length=1, description="default route of `asya send`")
    transport: Literal["embedded", "rabbitmq", "sqs"] = "embedded"
    flavorPaths: list[str] = Field(
        default_factory=lambda: ["flavors", "../flavors"],
        description="folders searched for Flavor files, relative to the mesh folder",
    )
    pythonPath: list[str] = Field(
        default_factory=lambda: ["."],
        description="folders put on sys.path for handler imports, relative to the mesh",
    )
    stateDir: str | None = None
    hopLimit: int = Field(
        default=DEFAULT_HOP_LIMIT, ge=1,
        description="most actors an envelope may pass through; one more ends it in "
                    "error-end with reason hop-limit (a route that loops)")
    storage: StorageSpec = Field(default_factory=StorageSpec, description=(
        "folders and buckets every actor and the console may use, beyond the mesh's"))
    gateway: GatewaySpec | None = Field(
        default=None, description="serve the mesh to other programs (`asya gateway`)")


class Mesh(_Spec):
    apiVersion: Literal["asya.sh/v1alpha1"]
    kind: Literal["Mesh"]
    metadata: Metadata
    spec: MeshSpec


# -- loading -------------------------------------------------------------------------


@dataclass
class LoadedMesh:
    """A mesh folder read as one object: its Mesh, its actors (flavors merged), and
    the flavors it could see."""

    path: Path
    mesh: Mesh
    actors: dict[str, AsyncActor]
    flavors: dict[str, Flavor] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.mesh.metadata.name

    @property
    def route(self) -> list[str]:
        return list(self.mesh.spec.route)

    @property
    def actor_names(self) -> set[str]:
        return set(self.actors) | set(CREW_ACTORS)

    @property
    def gathers(self) -> set[str]:
        """The actors with ``spec.fanIn``."""
        return {name for name, a in self.actors.items() if a.spec.fanIn is not None}

    def python_paths(self) -> list[Path]:
        return [(self.path / p).resolve() for p in self.mesh.spec.pythonPath]

    def storage_policy(self, actor: str | None, settings: BlobSettings,
                       state_dir: Path) -> StoragePolicy:
        """What ``actor`` (the mesh as a whole when ``None``) may read and write."""
        own = [self.actors[actor].spec.storage] if actor in self.actors else []
        return mesh_policy(settings, folder=self.path, state_dir=state_dir,
                           specs=[self.mesh.spec.storage, *own])

    def state_dir(self, override: str | Path | None = None) -> Path:
        if override:
            return Path(override)
        if self.mesh.spec.stateDir:
            return (self.path / self.mesh.spec.stateDir).resolve()
        return self.path / ".asya"


def merge_specs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` over ``base``: mappings merge, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_specs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _validation_error(exc: ValidationError, file: Path, model: type[BaseModel],
                      prefix: tuple[str, ...] = ()) -> ManifestError:
    field, message = explain(exc, model, prefix)
    return ManifestError(message, file=str(file), field=field or None)


def read_documents(file: Path) -> list[dict[str, Any]]:
    """YAML documents of ``file``; each must be a mapping with a ``kind``."""
    try:
        docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}", file=str(file)) from exc
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc}", file=str(file)) from exc
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError("a manifest is a mapping", file=str(file))
        if doc.get("kind") not in ("AsyncActor", "Flavor", "Mesh"):
            raise ManifestError(
                f"unknown kind {doc.get('kind')!r} (AsyncActor, Flavor or Mesh)",
                file=str(file),
                field="kind",
            )
    return docs


def parse_flavor(doc: dict[str, Any], file: Path) -> Flavor:
    try:
        flavor = Flavor.model_validate(doc)
    except ValidationError as exc:
        raise _validation_error(exc, file, Flavor) from exc
    try:
        ActorSpec.model_validate(flavor.spec)
    except ValidationError as exc:
        raise _validation_error(exc, file, ActorSpec, ("spec",)) from exc
    if "flavors" in flavor.spec:
        raise ManifestError("a flavor cannot list flavors", file=str(file), field="spec.flavors")
    return flavor


def parse_actor(doc: dict[str, Any], file: Path,
                flavors: dict[str, Flavor] | None = None) -> AsyncActor:
    """Validate an AsyncActor document, merging the flavors it names from ``flavors``."""
    flavors = flavors or {}
    spec = doc.get("spec")
    if isinstance(spec, dict):
        names = spec.get("flavors") or []
        if not isinstance(names, list):
            raise ManifestError("must be a list of flavor names", file=str(file),
                                field="spec.flavors")
        merged: dict[str, Any] = {}
        for index, name in enumerate(names):
            if name not in flavors:
                known = ", ".join(sorted(flavors)) or "none found"
                raise ManifestError(f"unknown flavor {name!r} (known: {known})",
                                    file=str(file), field=f"spec.flavors[{index}]")
            merged = merge_specs(merged, flavors[name].spec)
        doc = {**doc, "spec": merge_specs(merged, spec)}
    try:
        actor = AsyncActor.model_validate(doc)
    except ValidationError as exc:
        raise _validation_error(exc, file, AsyncActor) from exc
    if actor.spec.handler is None:
        raise ManifestError("field required", file=str(file), field="spec.handler")
    _check_builtin_config(actor, file)
    _check_fan_in(actor, file)
    if actor.name in CREW_ACTORS:
        raise ManifestError(f"{actor.name!r} is a crew actor name", file=str(file),
                            field="metadata.name")
    return actor


def _check_builtin_config(actor: AsyncActor, file: Path) -> None:
    """A built-in actor's ``spec.config`` (the review actor's) by its own model."""
    model = CONFIG_MODELS.get(actor.spec.handler or "")
    try:
        if model is not None:
            model.model_validate(actor.spec.config)
    except ValidationError as exc:
        raise _validation_error(exc, file, model or BaseModel, ("spec", "config")) from exc


def _check_fan_in(actor: AsyncActor, file: Path) -> None:
    """A gather calls its handler once per group, so it takes no batch; it keeps one
    replica up (``minReplicaCount: 1`` unless set), since a group's timeout is swept by
    a running replica."""
    spec = actor.spec
    if spec.fanIn is None:
        return
    if spec.batch is not None:
        raise ManifestError("a fanIn actor gathers groups and cannot batch; remove "
                            "spec.batch or spec.fanIn", file=str(file), field="spec.batch")
    if "minReplicaCount" not in spec.scaling.model_fields_set:
        spec.scaling.minReplicaCount = 1


def _check_fed(mesh: Mesh, actors: dict[str, AsyncActor], mesh_file: Path) -> None:
    """A fanIn actor first on the mesh's route has nothing before it that could fan
    out: every envelope sent there would end without a group."""
    first = mesh.spec.route[0]
    if actors[first].spec.fanIn is not None:
        raise ManifestError(
            f"actor {first!r} has spec.fanIn but is first on the route, so no fan-out "
            "feeds it; put the actor that fans out before it", file=str(mesh_file),
            field="spec.route[0]")


def _yaml_files(folder: Path) -> Iterable[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_flavors(folders: Iterable[Path]) -> dict[str, Flavor]:
    found: dict[str, Flavor] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for file in _yaml_files(folder):
            for doc in read_documents(file):
                if doc.get("kind") == "Flavor":
                    flavor = parse_flavor(doc, file)
                    found.setdefault(flavor.metadata.name, flavor)
    return found


def _read_folder(
    folder: Path,
) -> tuple[dict[str, Flavor], list[tuple[dict[str, Any], Path]]]:
    """Flavors and AsyncActor documents found in the mesh folder itself."""
    local: dict[str, Flavor] = {}
    actor_docs: list[tuple[dict[str, Any], Path]] = []
    for file in _yaml_files(folder):
        for doc in read_documents(file):
            if doc["kind"] == "Flavor":
                flavor = parse_flavor(doc, file)
                local[flavor.metadata.name] = flavor
            elif doc["kind"] == "AsyncActor":
                actor_docs.append((doc, file))
    return local, actor_docs


def load_mesh(path: str | Path) -> LoadedMesh:
    """Read a mesh folder: its ``mesh.yaml``, every AsyncActor and Flavor in it, and the
    flavors in ``spec.flavorPaths``. Raises :class:`ManifestError` naming file and field."""
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise ManifestError("mesh folder not found", file=str(folder))
    mesh_file = folder / "mesh.yaml"
    if not mesh_file.is_file():
        raise ManifestError("a mesh folder needs a mesh.yaml (kind: Mesh)", file=str(mesh_file))
    mesh_docs = [d for d in read_documents(mesh_file) if d.get("kind") == "Mesh"]
    if len(mesh_docs) != 1:
        raise ManifestError("needs exactly one document of kind Mesh", file=str(mesh_file))
    try:
        mesh = Mesh.model_validate(mesh_docs[0])
    except ValidationError as exc:
        raise _validation_error(exc, mesh_file, Mesh) from exc

    local, actor_docs = _read_folder(folder)
    flavors = {**load_flavors(folder / p for p in mesh.spec.flavorPaths), **local}

    actors: dict[str, AsyncActor] = {}
    sources: dict[str, Path] = {}
    for doc, file in actor_docs:
        actor = parse_actor(doc, file, flavors)
        if actor.name in actors:
            raise ManifestError(f"actor {actor.name!r} is also defined in "
                                f"{sources[actor.name]}", file=str(file), field="metadata.name")
        actors[actor.name] = actor
        sources[actor.name] = file
    for index, name in enumerate(mesh.spec.route):
        if name not in actors:
            raise ManifestError(f"route names unknown actor {name!r}", file=str(mesh_file),
                                field=f"spec.route[{index}]")
    _check_exhausted_targets(actors, sources)
    _check_fed(mesh, actors, mesh_file)
    return LoadedMesh(folder, mesh, actors, flavors, sources)


def _check_exhausted_targets(actors: dict[str, AsyncActor], sources: dict[str, Path]) -> None:
    """``onExhausted`` must name an actor of this mesh (or a crew actor)."""
    known = set(actors) | set(CREW_ACTORS)
    for name, actor in actors.items():
        for policy, spec in actor.spec.resiliency.policies.items():
            if spec.onExhausted not in known:
                raise ManifestError(
                    f"onExhausted names unknown actor {spec.onExhausted!r} "
                    f"(mesh has: {', '.join(sorted(known))})",
                    file=str(sources[name]),
                    field=f"spec.resiliency.policies.{policy}.onExhausted",
                )
