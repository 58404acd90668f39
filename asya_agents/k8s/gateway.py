"""The gateway of a mesh on a cluster: a Deployment and a Service, when the mesh asks.

A mesh whose ``mesh.yaml`` has ``spec.gateway`` gets ``asya gateway`` beside its
actors: ``spec.gateway.replicas`` pods (it keeps no state of its own, so any number
serve the same jobs) behind a ClusterIP Service on port 80, with readiness and
liveness probes on ``/healthz`` and Prometheus annotations for ``/metrics``. Its
clients' key hashes come from the Secret ``asya-gateway-keys`` (key ``keys``, one
``NAME:HASH`` a line, written with ``asya gateway hash-key``), mounted as a file; its
streams and the replicas share the mesh's PostgreSQL store (``asya-store``), whose
event feed wakes it with ``NOTIFY``. The replicas write hop events because the mounted
``mesh.yaml`` carries ``spec.gateway`` too (:mod:`.meshfolder`).
"""

from __future__ import annotations

from typing import Any

from asya_agents.k8s.envvars import env_name, settings_env
from asya_agents.k8s.objects import (
    _CONTAINER_SECURITY,
    _MOUNTS,
    _POD_SECURITY,
    _labels,
    _selector,
    _volumes,
)
from asya_agents.k8s.options import MESH_MOUNT, STATE_DIR, RenderOptions
from asya_agents.manifest import GatewaySpec
from asya_agents.settings import GatewaySettings

__all__ = ["GATEWAY_KEYS_MOUNT", "GATEWAY_PORT", "render_gateway"]

GATEWAY_PORT = 8080
GATEWAY_KEYS_MOUNT = "/etc/asya/gateway-keys"
_NAME = "gateway"
_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _container(options: RenderOptions, spec: GatewaySpec) -> dict[str, Any]:
    env = [*settings_env(options, store_required=True),
           {"name": env_name(GatewaySettings, "keys_file"),
            "value": f"{GATEWAY_KEYS_MOUNT}/keys"}]
    health = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
    resources = spec.resources.model_dump(exclude_unset=True) or _RESOURCES
    return {
        "name": _NAME, "image": options.runtime_image,
        "command": ["asya", "gateway", MESH_MOUNT, "--host", "0.0.0.0", "--port",
                    str(GATEWAY_PORT), "--transport", options.transport,
                    "--state-dir", STATE_DIR],
        "env": env,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": health, "livenessProbe": {**health, "failureThreshold": 6},
        "resources": resources,
        "volumeMounts": [*_MOUNTS, {"name": "gateway-keys", "mountPath": GATEWAY_KEYS_MOUNT,
                                    "readOnly": True}],
        "securityContext": _CONTAINER_SECURITY,
    }


def render_gateway(mesh: str, gateway: dict[str, Any], options: RenderOptions,
                   mesh_digest: str) -> list[dict[str, Any]]:
    """The gateway's Deployment and Service for ``spec.gateway`` (as written)."""
    spec = GatewaySpec.model_validate(gateway)
    labels = _labels(mesh, _NAME, "gateway")
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(GATEWAY_PORT),
                   "prometheus.io/path": "/metrics", "asya.sh/mesh-digest": mesh_digest}
    keys = {"name": "gateway-keys", "secret": {"secretName": "asya-gateway-keys"}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": _NAME, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _selector(mesh, _NAME)},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"serviceAccountName": options.service_account,
                         # SIGTERM: open streams get a last event, requests finish
                         "terminationGracePeriodSeconds": 30,
                         "securityContext": _POD_SECURITY,
                         "containers": [_container(options, spec)],
                         "volumes": [*_volumes(mesh), keys]}},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": _NAME, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": _selector(mesh, _NAME),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP"}]},
    }
    return [deployment, service]
