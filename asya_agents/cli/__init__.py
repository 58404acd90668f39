"""``asya``: the one entry point (see ``docs/cli.md``).

Every command that reads a mesh takes the mesh folder. Connection settings come from
flags or ``ASYA_*`` variables (``settings.py``); ``--json`` output is for scripts and
stays stable. The group lives in :mod:`.app`; the commands, grouped by what they work
on, register themselves on it when imported here.
"""

from __future__ import annotations

from asya_agents.cli import cluster, gateway, mesh, new, tools
from asya_agents.cli.app import main

__all__ = ["main"]

_COMMANDS = (cluster, gateway, mesh, new, tools)  # imported for their commands
