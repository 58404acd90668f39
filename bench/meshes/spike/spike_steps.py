"""The three steps of the spike benchmark (bench/bench_spike.py), shared by both designs.

The mesh runs them as actors (``actors.yaml``); the REST design serves the very same
functions over HTTP (bench/spike_rest.py). They import nothing from asya-agents:

- ``fast``: a few milliseconds of CPU, as parsing or resizing a thumbnail takes.
- ``llm``: one chat completion through litellm against the provider at
  ``$SPIKE_LLM_API_BASE``, with ``num_retries=0``: what a 429 means is the caller's
  business (the manifest's policies in the mesh, the caller's retry loop in REST).
- ``gpu``: holds this process's one "GPU" for ``$SPIKE_GPU_SECONDS`` (a sleep), one job
  at a time per process, as a model on a card serves one batch at a time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

FAST_MS = float(os.environ.get("SPIKE_FAST_MS", "3"))
GPU_SECONDS = float(os.environ.get("SPIKE_GPU_SECONDS", "1.5"))
#: One card per process: a second job waits for the first. Re-entrant, so that a server
#: may take it first to tell jobs waiting for the card from the one holding it.
GPU = threading.RLock()


def fast(payload: dict[str, Any]) -> dict[str, Any]:
    """Burn FAST_MS of CPU."""
    until = time.process_time() + FAST_MS / 1000
    spins = 0
    while time.process_time() < until:
        spins += 1
    return {**payload, "fast": spins}


class LLM:
    """The LLM step. litellm is imported when a replica or worker builds it, never by
    a process that only runs the other steps."""

    def __init__(self) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
        import litellm

        litellm.suppress_debug_info = True  # no banner on every 429
        self.litellm = litellm
        self.api_base = os.environ["SPIKE_LLM_API_BASE"]

    def llm(self, payload: dict[str, Any]) -> dict[str, Any]:
        reply = self.litellm.completion(
            model="openai/judge", api_base=self.api_base, api_key="x", num_retries=0,
            messages=[{"role": "user", "content": f"describe job {payload['job']}"}])
        return {**payload, "llm": json.loads(reply.choices[0].message.content)}


def gpu(payload: dict[str, Any]) -> dict[str, Any]:
    """Hold the process's GPU for GPU_SECONDS."""
    with GPU:
        time.sleep(GPU_SECONDS)
    return {**payload, "gpu": True}
