"""Glue of the voting pattern: the ballots, the count, the decision, the offline model.

:class:`Ballots` fans one question out to ``voters`` children, each with its own
``seed`` (the ``vote`` actor passes it to the model, with a high temperature, so the
votes are independent samples). :class:`Tally` is the ``fanIn`` handler: it counts the
labels in voter order and says whether the winner has ``quorum`` of the votes cast.
:func:`decide` runs after the gather: a vote without a clear winner goes to review.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

from actors.llm import usage


class Ballots:
    def __init__(self, *, voters: int = 5) -> None:
        if voters < 1:
            raise ValueError(f"voters must be >= 1, got {voters}")
        self.voters = voters

    def split(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        base = {k: v for k, v in payload.items() if k not in ("usage", "usage_before")}
        return [{**base, "seed": seed, "usage": {}, "usage_before": payload.get("usage") or {}}
                for seed in range(int(payload.get("voters", self.voters)))]


class Tally:
    def __init__(self, *, quorum: float = 0.6) -> None:
        if not 0.0 < quorum <= 1.0:
            raise ValueError(f"quorum must be within (0, 1], got {quorum}")
        self.quorum = quorum

    def count(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        votes = [str(p["vote"]["label"]).lower() for p in payloads]
        counts = Counter(votes).most_common()
        winner, top = counts[0]
        tied = len(counts) > 1 and counts[1][1] == top
        share = top / len(votes)
        base = {k: v for k, v in payloads[0].items()
                if k not in ("seed", "vote", "usage", "usage_before")}
        return {**base, "votes": votes, "counts": dict(counts),
                "winner": None if tied else winner, "agreement": round(share, 4),
                "decided": not tied and share >= self.quorum,
                "usage": usage.combine(payloads[0].get("usage_before"),
                                       [p.get("usage") for p in payloads])}


def decide(envelope: dict[str, Any]) -> dict[str, Any]:
    """On along the route when the vote decided, else to review first."""
    rest = envelope["route"]["next"]
    nxt = rest if envelope["payload"]["decided"] else ["review", *rest]
    return {**envelope, "route": {**envelope["route"], "next": nxt}}


def offline_model(request: dict[str, Any]) -> str:
    """A noisy moderator: links and shouting read as spam, and one seed in five (by a
    hash of the comment and the seed) votes the other way, as independent samples do."""
    comment = request["messages"][-1]["content"].removeprefix("Comment: ")
    spam = "http" in comment or comment.isupper()
    flip = zlib.crc32(f"{comment}|{request.get('seed')}".encode()) % 5 == 0
    label = "spam" if spam != flip else "ok"
    return json.dumps({"label": label, "reason": "offline rule"})
