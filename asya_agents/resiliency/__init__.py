"""Resiliency as configuration: what happens when a handler raises.

A handler raises; the actor's ``spec.resiliency`` decides. This package holds the
declared data (:mod:`~asya_agents.resiliency.spec`), the retry policies that answer the
runtime's :class:`~asya_agents.seams.FailurePolicy` seam (:mod:`~.retry`), and the
brakes behind its :class:`~asya_agents.seams.Admission` seam (:mod:`~.admission`: the
breaker, adaptive concurrency and the shared rate limit); :mod:`~.build` makes both from
an actor's spec. A retry is never a sleep in a replica: it is a delayed redelivery
through the transport, and the attempt count travels in the envelope's ``meta`` so that
it survives crashes. Nothing here imports the runtime: it plugs into the seams.
"""

__all__: list[str] = []
