"""The Kubernetes objects of a mesh: Deployments, KEDA objects, the crew and the console.

Per actor a Deployment and a KEDA ScaledObject (0..N on queue depth); per mesh a
ServiceAccount, a TriggerAuthentication that points KEDA at the broker's Secret, the
crew actors ``happy-end`` and ``error-end``, and the review console. Every pod runs the
same command as a local replica, against the mesh folder mounted from the ConfigMap
(:mod:`.meshfolder`)::

    python -m asya_agents.replica /etc/asya/mesh ACTOR --transport T --state-dir …

and reads its settings from the environment (:mod:`.envvars`). Each builder is a plain
function of the manifest and the options that returns plain dicts, in a fixed key
order, so that the same input gives the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from asya_agents.crew import CREW_SCALING
from asya_agents.envelope import ERROR_END, HAPPY_END
from asya_agents.k8s.envvars import console_env, settings_env
from asya_agents.k8s.options import (
    CONSOLE_PORT,
    HEARTBEAT_FILE,
    MESH_MOUNT,
    METRICS_PORT,
    REVIEWERS_MOUNT,
    RUN_AS,
    STATE_DIR,
    RenderOptions,
    queue_name,
)
from asya_agents.k8s.validate import check_actor
from asya_agents.manifest import AsyncActor, ScalingSpec

__all__ = [
    "render_actor",
    "render_console",
    "render_crew",
    "service_account",
    "trigger_authentication",
]


# -- building blocks -------------------------------------------------------------------


def _labels(mesh: str, name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": mesh, "app.kubernetes.io/managed-by": "asya",
            "asya.sh/mesh": mesh, "asya.sh/actor": name}


def _selector(mesh: str, name: str) -> dict[str, str]:
    return {"asya.sh/mesh": mesh, "asya.sh/actor": name}


def _volumes(mesh: str) -> list[dict[str, Any]]:
    return [{"name": "mesh", "configMap": {"name": f"asya-mesh-{mesh}"}},
            {"name": "state", "emptyDir": {}}]


_MOUNTS = [{"name": "mesh", "mountPath": MESH_MOUNT, "readOnly": True},
           {"name": "state", "mountPath": STATE_DIR}]

_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                 "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}}


def _heartbeat_probes() -> dict[str, Any]:
    """A replica touches its heartbeat file every few seconds from its event loop; a
    loop that stopped turning (a hung replica) leaves it stale and is restarted. The
    startup probe waits for the first beat, which comes once the handler (and its model)
    has loaded: up to 15 minutes."""
    stale = ["sh", "-c",
             f'test $(( $(date +%s) - $(stat -c %Y {HEARTBEAT_FILE}) )) -lt 60']
    return {
        "startupProbe": {"exec": {"command": ["test", "-f", HEARTBEAT_FILE]},
                         "periodSeconds": 5, "failureThreshold": 180},
        "livenessProbe": {"exec": {"command": stale}, "periodSeconds": 15,
                          "timeoutSeconds": 5, "failureThreshold": 4},
    }


def _pod_annotations(mesh_digest: str) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics", "asya.sh/mesh-digest": mesh_digest}


@dataclass(frozen=True)
class _Replica:
    """What differs between one actor's Deployment and another's."""

    mesh: str
    name: str
    component: str
    image: str
    timeout: float
    env: list[dict[str, Any]]
    env_from: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def _deployment(rep: _Replica, options: RenderOptions, mesh_digest: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "actor",
        "image": rep.image,
        "command": ["python", "-m", "asya_agents.replica"],
        "args": [MESH_MOUNT, rep.name, "--transport", options.transport,
                 "--state-dir", STATE_DIR, "--heartbeat-file", HEARTBEAT_FILE],
        "env": rep.env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        **_heartbeat_probes(),
        "volumeMounts": _MOUNTS,
        "securityContext": _CONTAINER_SECURITY,
    }
    if rep.env_from:
        container["envFrom"] = rep.env_from
    if rep.resources:
        container["resources"] = rep.resources
    pod: dict[str, Any] = {
        "serviceAccountName": options.service_account,
        # SIGTERM stops intake; in-flight work may run up to the actor's timeout
        "terminationGracePeriodSeconds": math.ceil(rep.timeout) + options.termination_margin,
        "securityContext": _POD_SECURITY,
        "containers": [container],
        "volumes": _volumes(rep.mesh),
    }
    if rep.node_selector:
        pod["nodeSelector"] = dict(sorted(rep.node_selector.items()))
    if rep.tolerations:
        pod["tolerations"] = rep.tolerations
    labels = _labels(rep.mesh, rep.name, rep.component)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # no spec.replicas: KEDA owns the count, and re-applying must not reset it
        "metadata": {"name": rep.name, "labels": labels},
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _selector(rep.mesh, rep.name)},
            "strategy": _strategy(rep.resources),
            "template": {"metadata": {"labels": labels,
                                      "annotations": _pod_annotations(mesh_digest)},
                         "spec": pod},
        },
    }


def _strategy(resources: dict[str, Any]) -> dict[str, Any]:
    """Roll one replica at a time; a GPU replica gives its card back first, since a
    cluster rarely has a spare GPU for a surge replica and the rollout would stall."""
    gpu = any(str(k).endswith("/gpu") for k in (resources.get("limits") or {}))
    surge, unavailable = (0, 1) if gpu else (1, 0)
    return {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


def _trigger(options: RenderOptions, queue: str, scaling: ScalingSpec) -> dict[str, Any]:
    if options.transport == "rabbitmq":
        # protocol http: the management API counts unacked messages too
        meta = {"protocol": "http", "queueName": queue, "mode": "QueueLength",
                "value": str(scaling.queueLength),
                "activationValue": str(scaling.activationQueueLength)}
        return {"type": "rabbitmq", "metadata": meta,
                "authenticationRef": {"name": "asya-rabbitmq"}}
    meta = {"queueURL": queue, "awsRegion": options.sqs_region,
            "queueLength": str(scaling.queueLength),
            "activationQueueLength": str(scaling.activationQueueLength),
            "scaleOnInFlight": "true", "scaleOnDelayed": "false"}
    if options.sqs_endpoint:
        meta["awsEndpoint"] = options.sqs_endpoint
    return {"type": "aws-sqs-queue", "metadata": meta,
            "authenticationRef": {"name": "asya-sqs"}}


def _scaled_object(mesh: str, name: str, component: str, scaling: ScalingSpec,
                   options: RenderOptions) -> dict[str, Any]:
    behavior = {"scaleDown": {
        "stabilizationWindowSeconds": math.ceil(scaling.scaleDownStabilization)}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": _labels(mesh, name, component)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": scaling.minReplicaCount,
            "maxReplicaCount": scaling.maxReplicaCount,
            "pollingInterval": _seconds(scaling.pollingInterval),
            "cooldownPeriod": _seconds(scaling.cooldownPeriod),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": [_trigger(options, queue_name(options, mesh, name), scaling)],
        },
    }


def trigger_authentication(options: RenderOptions) -> dict[str, Any]:
    """Points KEDA at the broker's Secret; the Secret itself is never rendered."""
    if options.transport == "rabbitmq":
        name, targets = "asya-rabbitmq", [("host", "keda-host")]
    else:
        name, targets = "asya-sqs", [("awsAccessKeyID", "access-key-id"),
                                     ("awsSecretAccessKey", "secret-access-key")]
    refs = [{"parameter": p, "name": name, "key": k} for p, k in targets]
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": name,
                         "labels": {"app.kubernetes.io/managed-by": "asya"}},
            "spec": {"secretTargetRef": refs}}


# -- per actor, crew, console ---------------------------------------------------------


def render_actor(actor: AsyncActor, mesh: str, options: RenderOptions, mesh_digest: str,
                 *, file: str = "") -> list[dict[str, Any]]:
    """Deployment and ScaledObject of one actor (flavors already merged)."""
    check_actor(actor, file or actor.name)
    spec = actor.spec
    # A fanIn actor keeps its groups in the mesh's PostgreSQL store (a pod's own SQLite
    # would not be shared by its replicas, nor outlive the pod): the Secret is required.
    env = settings_env(options, store_required=spec.fanIn is not None)
    env += [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    rep = _Replica(
        mesh=mesh, name=actor.name, component="actor",
        image=spec.image or options.runtime_image, timeout=spec.resiliency.actorTimeout,
        env=env, env_from=[{"secretRef": {"name": s}} for s in spec.envFromSecrets],
        resources=spec.resources.model_dump(exclude_unset=True),
        node_selector=spec.nodeSelector,
        tolerations=[t.model_dump(exclude_unset=True) for t in spec.tolerations],
    )
    return [_deployment(rep, options, mesh_digest),
            _scaled_object(mesh, actor.name, "actor", spec.scaling, options)]


def render_crew(mesh: str, options: RenderOptions, mesh_digest: str) -> dict[str, list[Any]]:
    files: dict[str, list[Any]] = {}
    for name in (HAPPY_END, ERROR_END):
        rep = _Replica(mesh=mesh, name=name, component="crew", image=options.runtime_image,
                       timeout=30.0, env=settings_env(options, store_required=True),
                       resources={"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "256Mi"}})
        files[f"crew-{name}.yaml"] = [
            _deployment(rep, options, mesh_digest),
            _scaled_object(mesh, name, "crew", CREW_SCALING, options),
        ]
    return files


def render_console(mesh: str, options: RenderOptions, mesh_digest: str) -> list[Any]:
    """The review console (``asya review``) and a ClusterIP Service in front of it."""
    name = "review-console"
    labels = _labels(mesh, name, "review-console")
    env = [*settings_env(options, store_required=True), *console_env()]
    health = {"httpGet": {"path": "/_stcore/health", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": "console", "image": options.runtime_image,
        "command": ["asya", "review", MESH_MOUNT, "--headless", "--transport",
                    options.transport, "--state-dir", STATE_DIR],
        "env": env,
        "ports": [{"name": "http", "containerPort": CONSOLE_PORT, "protocol": "TCP"}],
        "readinessProbe": health, "livenessProbe": {**health, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"memory": "1Gi"}},
        "volumeMounts": [*_MOUNTS, {"name": "reviewers", "mountPath": REVIEWERS_MOUNT,
                                    "readOnly": True}],
        "securityContext": _CONTAINER_SECURITY,
    }
    reviewers = {"name": "reviewers", "secret": {"secretName": "asya-reviewers"}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _selector(mesh, name)},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"asya.sh/mesh-digest": mesh_digest}},
                "spec": {"serviceAccountName": options.service_account,
                         "securityContext": _POD_SECURITY, "containers": [container],
                         "volumes": [*_volumes(mesh), reviewers]}},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": _selector(mesh, name),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP"}]},
    }
    return [deployment, service]



def service_account(options: RenderOptions) -> dict[str, Any]:
    # replicas need no Kubernetes API access; the token is not mounted
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": options.service_account,
                         "labels": {"app.kubernetes.io/managed-by": "asya"}},
            "automountServiceAccountToken": False}

