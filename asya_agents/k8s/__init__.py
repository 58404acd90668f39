"""Kubernetes: the CRDs, the renderer and the operator.

The same ``AsyncActor`` manifests that ``asya up`` runs locally deploy to a cluster, in
one of two ways that share one renderer (:mod:`.render`):

* ``asya render MESH -o DIR`` writes plain manifests (Deployments, KEDA ScaledObjects,
  a TriggerAuthentication, …) for GitOps, with no operator in the cluster;
* ``asya operator`` (:mod:`.operator`, needs kopf) reconciles ``AsyncActor`` resources
  whose schema ``asya crd`` (:mod:`.crd`) generates from the pydantic models.

Nothing here talks to a cluster except :mod:`.operator` (through :mod:`.client`), and
only that module imports kopf, lazily.
"""

from __future__ import annotations

__all__: list[str] = []
