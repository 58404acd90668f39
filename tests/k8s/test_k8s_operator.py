"""The operator's handlers, called directly with representative resources.

No Kubernetes API server can run here, so the cluster is an in-memory stand-in
(:class:`MemoryCluster`, the only fake in these tests); every object the operator
applies is validated against the real Kubernetes and KEDA schemas on the way in. Queue
declaration is real: SQLite through the embedded transport, and RabbitMQ where it runs.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from asya_agents.k8s.client import ClusterError
from asya_agents.k8s.operator import Operator, on_actor, on_actor_delete, on_flavor
from asya_agents.k8s.render import RenderOptions
from asya_agents.settings import RabbitMQSettings, Settings
from asya_agents.transports import Transport, open_transport
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import require_service
from tests.k8s.conftest import validate_any

NS = "pics"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class MemoryCluster:
    """Objects by (kind, namespace, name); validates what is applied."""

    def __init__(self, keda: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.keda = keda

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return obj

    async def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and ns == namespace]

    async def apply(self, obj: dict[str, Any]) -> None:
        validate_any(obj, self.keda)
        self.add(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> None:
        self.objects[(kind, namespace, name)]["status"] = status

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, NS, name))


def actor(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"handler": f"steps.{name}", **spec}}


GPU = {"apiVersion": "asya.sh/v1alpha1", "kind": "Flavor",
       "metadata": {"name": "gpu", "namespace": NS},
       "spec": {"resources": {"limits": {"nvidia.com/gpu": 1}},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}


@pytest.fixture
def cluster(keda: dict[str, Any]) -> MemoryCluster:
    return MemoryCluster(keda)


@pytest.fixture
def queues_db(tmp_path: Path) -> Path:
    return tmp_path / "queues.db"


@pytest.fixture
def op(cluster: MemoryCluster, queues_db: Path) -> Operator:
    return Operator(cluster, RenderOptions(transport="rabbitmq"),
                    lambda mesh: EmbeddedTransport(queues_db), clock=lambda: NOW)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


async def create(op: Operator, cluster: MemoryCluster, body: dict[str, Any]
                 ) -> dict[str, Any]:
    stored = cluster.add(body)
    patch: dict[str, Any] = {}
    await on_actor(op, body=stored, namespace=NS, name=stored["metadata"]["name"],
                   patch=patch)
    status: dict[str, Any] = patch["status"]
    return status


def test_create_deploys_the_actor_and_declares_its_queues(
        op: Operator, cluster: MemoryCluster, queues_db: Path) -> None:
    # Given an AsyncActor on the gpu flavor, with the flavor in the cluster
    cluster.add(GPU)
    status = asyncio.run(create(op, cluster, actor("enhance", flavors=["gpu"],
                                                   image="reg/enhance:1")))
    # Then its Deployment carries the flavor's GPU, owned by the AsyncActor
    deployment = cluster.get("Deployment", "enhance")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("AsyncActor", "enhance")
    assert cluster.get("ScaledObject", "enhance") is not None
    # and the mesh (named after the namespace) has its ConfigMap, crew and console
    for kind, name in [("ConfigMap", "asya-mesh-pics"), ("Deployment", "happy-end"),
                       ("Deployment", "error-end"), ("Service", "review-console"),
                       ("TriggerAuthentication", "asya-rabbitmq")]:
        assert cluster.get(kind, name) is not None, (kind, name)
    # and the queues exist on the broker
    with sqlite3.connect(queues_db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM queues")}
    assert {"enhance", "happy-end", "error-end"} <= names
    # and the status says so
    conds = conditions(status)
    assert conds["Ready"]["status"] == "True"
    assert conds["Valid"]["status"] == conds["QueuesDeclared"]["status"] == "True"
    assert status["queue"] == "asya-pics-enhance" and status["flavors"] == ["gpu"]
    assert status["observedGeneration"] == 1
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_an_invalid_spec_is_reported_naming_the_field(op: Operator,
                                                      cluster: MemoryCluster) -> None:
    # Given an actor with a misspelled scaling field
    status = asyncio.run(create(op, cluster, actor("judge", scaling={"queueLenght": 3})))
    # Then nothing is deployed and the status names the field
    conds = conditions(status)
    assert conds["Valid"]["status"] == "False" and conds["Ready"]["status"] == "False"
    assert conds["Valid"]["reason"] == "InvalidSpec"
    assert "spec.scaling.queueLenght" in conds["Valid"]["message"]
    assert conds["Ready"]["message"] == conds["Valid"]["message"]
    assert cluster.get("Deployment", "judge") is None


def test_an_unknown_flavor_is_reported(op: Operator, cluster: MemoryCluster) -> None:
    status = asyncio.run(create(op, cluster, actor("judge", flavors=["llm-resilient"])))
    message = conditions(status)["Valid"]["message"]
    assert "spec.flavors[0]" in message and "llm-resilient" in message


def test_a_kubernetes_level_error_is_reported(op: Operator, cluster: MemoryCluster) -> None:
    status = asyncio.run(create(op, cluster, actor("judge", resources={"limits": {"cpu": "x"}})))
    assert "spec.resources.limits.cpu" in conditions(status)["Valid"]["message"]


def test_an_invalid_sibling_does_not_block_a_valid_actor(op: Operator,
                                                         cluster: MemoryCluster) -> None:
    # Given a sibling whose resources Kubernetes would refuse
    cluster.add(actor("broken", resources={"limits": {"cpu": "lots"}}))
    # When a valid actor of the same mesh is reconciled
    conds = conditions(asyncio.run(create(op, cluster, actor("judge"))))
    # Then it is deployed, and the mesh leaves the broken one out until it is fixed
    assert conds["Ready"]["status"] == "True", conds
    data = cluster.get("ConfigMap", "asya-mesh-pics")["data"]  # type: ignore[index]
    assert "name: judge" in data["actors.yaml"] and "name: broken" not in data["actors.yaml"]


def test_an_unreachable_broker_is_reported(cluster: MemoryCluster) -> None:
    def no_broker(mesh: str) -> Transport:
        # a real transport, pointed at a broker port where nothing listens
        settings = RabbitMQSettings(url="amqp://guest:guest@127.0.0.1:1/")
        return open_transport("rabbitmq", settings=Settings(rabbitmq=settings),
                              state_dir=Path("/tmp"), mesh=mesh)

    op = Operator(cluster, RenderOptions(), no_broker, clock=lambda: NOW)
    status = asyncio.run(create(op, cluster, actor("judge")))
    conds = conditions(status)
    assert conds["Valid"]["status"] == "True"
    assert conds["QueuesDeclared"]["status"] == "False"
    assert conds["QueuesDeclared"]["reason"] == "BrokerUnavailable"
    assert cluster.get("Deployment", "judge") is not None


class NoKedaCluster(MemoryCluster):
    """As the API server answers when KEDA's CRDs are not installed."""

    async def apply(self, obj: dict[str, Any]) -> None:
        if obj["kind"] == "ScaledObject":
            raise ClusterError("PATCH /apis/keda.sh/v1alpha1/namespaces/pics/scaledobjects/"
                               "judge: HTTP 404 (is KEDA installed?): not found")
        await super().apply(obj)


def test_a_refused_apply_is_reported(keda: dict[str, Any], queues_db: Path) -> None:
    cluster = NoKedaCluster(keda)
    op = Operator(cluster, RenderOptions(), lambda mesh: EmbeddedTransport(queues_db),
                  clock=lambda: NOW)
    conds = conditions(asyncio.run(create(op, cluster, actor("judge"))))
    assert conds["Valid"]["status"] == "True"
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "ApplyFailed")
    assert "is KEDA installed?" in conds["Ready"]["message"]
    assert conds["QueuesDeclared"]["status"] == "False"


def test_update_and_siblings_share_one_mesh(op: Operator, cluster: MemoryCluster) -> None:
    # Given two actors of one mesh
    asyncio.run(create(op, cluster, actor("judge")))
    asyncio.run(create(op, cluster, actor("upload")))
    data = cluster.get("ConfigMap", "asya-mesh-pics")["data"]  # type: ignore[index]
    assert "name: judge" in data["actors.yaml"] and "name: upload" in data["actors.yaml"]
    before = cluster.get("Deployment", "judge")
    # When one is updated
    body = actor("judge", concurrency=4, scaling={"maxReplicaCount": 7})
    body["metadata"]["generation"] = 2
    status = asyncio.run(create(op, cluster, body))
    # Then its ScaledObject follows and only its own pods roll
    assert cluster.get("ScaledObject", "judge")["spec"]["maxReplicaCount"] == 7  # type: ignore[index]
    digest = "asya.sh/mesh-digest"
    after = cluster.get("Deployment", "judge")
    assert before is not None and after is not None
    assert (before["spec"]["template"]["metadata"]["annotations"][digest]
            != after["spec"]["template"]["metadata"]["annotations"][digest])
    assert status["observedGeneration"] == 2


def test_delete_removes_the_actor_and_the_last_takes_the_mesh(
        op: Operator, cluster: MemoryCluster) -> None:
    asyncio.run(create(op, cluster, actor("judge")))
    asyncio.run(create(op, cluster, actor("upload")))
    # When judge is deleted
    body = cluster.get("AsyncActor", "judge")
    assert body is not None
    body["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    cluster.add(body)
    asyncio.run(on_actor_delete(op, body=body, namespace=NS, name="judge"))
    cluster.objects.pop(("AsyncActor", NS, "judge"))
    # Then its objects are gone and the mesh no longer routes to it
    assert cluster.get("Deployment", "judge") is None
    assert cluster.get("ScaledObject", "judge") is None
    data = cluster.get("ConfigMap", "asya-mesh-pics")["data"]  # type: ignore[index]
    assert "name: judge" not in data["actors.yaml"]
    assert cluster.get("Deployment", "happy-end") is not None
    # When the last actor goes, the crew, the console and the ConfigMap go too
    body = cluster.get("AsyncActor", "upload")
    assert body is not None
    cluster.objects.pop(("AsyncActor", NS, "upload"))
    asyncio.run(on_actor_delete(op, body=body, namespace=NS, name="upload"))
    remaining = {k for k, _, _ in cluster.objects}
    assert remaining == {"ServiceAccount", "TriggerAuthentication"}


def test_a_changed_flavor_reconciles_its_users(op: Operator, cluster: MemoryCluster) -> None:
    cluster.add(GPU)
    asyncio.run(create(op, cluster, actor("enhance", flavors=["gpu"])))
    asyncio.run(create(op, cluster, actor("judge")))
    # When the platform team raises the flavor's GPU count
    changed = copy.deepcopy(GPU)
    changed["spec"]["resources"]["limits"]["nvidia.com/gpu"] = 2
    cluster.add(changed)
    done = asyncio.run(on_flavor(op, namespace=NS, name="gpu"))
    # Then only its users are reconciled, and their status is written
    assert done == ["enhance"]
    deployment = cluster.get("Deployment", "enhance")
    assert deployment is not None
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    stored = cluster.get("AsyncActor", "enhance")
    assert stored is not None
    assert conditions(stored["status"])["Ready"]["status"] == "True"


def test_queues_are_declared_on_rabbitmq(cluster: MemoryCluster) -> None:
    require_service("RabbitMQ", port=5672)
    aio_pika = pytest.importorskip("aio_pika")
    mesh = f"op{uuid.uuid4().hex[:8]}"
    settings = Settings()

    def broker(name: str) -> Transport:
        return open_transport("rabbitmq", settings=settings, state_dir=Path("/tmp"), mesh=name)

    op = Operator(cluster, RenderOptions(), broker, clock=lambda: NOW)
    body = actor("judge")
    body["metadata"]["labels"] = {"asya.sh/mesh": mesh}
    status = asyncio.run(create(op, cluster, body))
    assert conditions(status)["QueuesDeclared"]["status"] == "True", status

    async def exists_then_delete(queue: str) -> None:
        conn = await aio_pika.connect(settings.rabbitmq.url)
        async with conn:
            channel = await conn.channel()
            declared = await channel.declare_queue(queue, passive=True)
            await declared.delete(if_unused=False, if_empty=False)

    for name in ("judge", "happy-end", "error-end"):
        asyncio.run(exists_then_delete(f"asya-{mesh}-{name}"))


def test_kopf_body_and_patch_work_as_kopf_passes_them(op: Operator,
                                                      cluster: MemoryCluster) -> None:
    # Given the objects kopf itself hands a handler
    kopf = pytest.importorskip("kopf")
    stored = cluster.add(actor("judge", scaling={"maxReplicaCount": 3}))
    patch = kopf.Patch()
    # When the handler runs
    asyncio.run(on_actor(op, body=kopf.Body(stored), namespace=NS, name="judge",
                         patch=patch, logger=None, reason="create"))
    # Then kopf's patch carries the status, and the objects were applied
    assert conditions(dict(patch)["status"])["Ready"]["status"] == "True"
    assert cluster.get("ScaledObject", "judge")["spec"]["maxReplicaCount"] == 3  # type: ignore[index]
