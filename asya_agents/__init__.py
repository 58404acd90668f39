"""asya-agents: agentic and AI pipelines on an actor mesh.

The public surface is small: the :class:`Envelope`, the manifest loader, the errors, and
:mod:`asya_agents.testing` for running a mesh in tests without a broker.
"""

from asya_agents.envelope import Envelope
from asya_agents.errors import AsyaError
from asya_agents.manifest import load_mesh

__all__ = ["AsyaError", "Envelope", "load_mesh"]
__version__ = "0.1.0"
