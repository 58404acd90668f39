"""Resiliency as configuration: what happens when a handler raises.

A handler raises; the actor's ``spec.resiliency`` decides. This package holds the
declared data (:mod:`asya_agents.resiliency.spec`) and the decision the runtime asks
for on each failure (:mod:`asya_agents.resiliency.decide`). A retry is never a sleep in
a replica: it is a delayed redelivery through the transport, and the attempt count
travels in the envelope's ``meta`` so that it survives crashes.
"""
