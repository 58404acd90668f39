"""The gateway: how other systems use a mesh (``asya gateway MESH``).

A restaurant app uploading photos, a backend calling a QA loop, an AI assistant using a
mesh as a tool: each needs a network entry point, and this package is it. One process
beside the mesh (a Deployment and a Service on a cluster) that keeps no state of its
own beyond the mesh's stores. Top to bottom:

- :mod:`.server`: uvicorn, the credentials check, a clean stop on SIGTERM;
- :mod:`.app`: the FastAPI app, over the three protocols: :mod:`.http` (the jobs API
  and Server-Sent Events), :mod:`.mcp_server` (a Model Context Protocol tool) and
  :mod:`.a2a_server` (an Agent2Agent agent); :mod:`.auth` checks keys and sizes first;
- :mod:`.service`: the running :class:`~.service.Gateway`, its transport and stores;
- :mod:`.follow`: one job's stream of events, which every protocol is built on, over
  :mod:`.feed` (the one tail loop of the event feed) and :mod:`.jobs` (submitting,
  reading, deciding, cancelling);
- :mod:`.schema` (a tool's input schema from the entry handler) and :mod:`.keys`.

fastapi, uvicorn, sse-starlette, mcp and a2a-sdk are the ``gateway`` extra and are
imported only inside this package; :func:`require` says how to install them.
"""

from __future__ import annotations

import importlib.util

from asya_agents.errors import ConfigError

__all__ = ["EXTRA", "require"]

#: The modules the gateway needs, and what installs them.
EXTRA = ("fastapi", "uvicorn", "sse_starlette", "mcp", "a2a")


def require() -> None:
    """Raise :class:`ConfigError` with the install hint unless the extra is installed."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the gateway needs {', '.join(missing)}: "
                          "pip install 'asya-agents[gateway]'")
