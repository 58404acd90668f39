"""The envelope: wire format, routing and history rules."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from asya_agents.envelope import Envelope
from asya_agents.errors import EnvelopeError, HistoryAlteredError


def test_create_encode_decode_round_trip_keeps_every_field() -> None:
    # Given a new envelope with a unicode payload and headers
    env = Envelope.create({"dish": "crème brûlée 🍮"}, ["enhance", "judge", "upload"],
                          headers={"trace": "t1"}, now=100.0)
    # When it travels as bytes
    back = Envelope.decode(env.encode())
    # Then nothing is lost
    assert back == env
    assert back.route.curr == "enhance" and back.route.next == ["judge", "upload"]
    assert back.meta.root_id == env.id and back.meta.created == 100.0
    assert json.loads(env.encode())["payload"]["dish"] == "crème brûlée 🍮"


def test_advance_moves_curr_to_prev_and_pops_next() -> None:
    env = Envelope.create({}, ["a", "b"])
    one = env.advanced()
    assert (one.route.prev, one.route.curr, one.route.next) == (["a"], "b", [])
    two = one.advanced()
    assert (two.route.prev, two.route.curr, two.route.next) == (["a", "b"], "happy-end", [])
    assert env.route.curr == "a", "advancing returns a copy"


def test_advance_resets_attempts_for_the_next_actor() -> None:
    env = Envelope.create({}, ["a", "b"])
    env.meta.attempt = 3
    assert env.advanced().meta.attempt == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"id": "x", "payload": {}}', "route"),
        (b'{"id": "x", "route": {"curr": ""}}', "route.curr"),
        (b'{"id": "", "route": {"curr": "a"}}', "id"),
        (b'{"id": "x", "route": {"curr": "a"}, "meta": {"weight": "3/2"}}', "weight"),
        (b'{"id": "x", "route": {"curr": "a"}, "surprise": 1}', "surprise"),
    ],
)
def test_malformed_messages_are_errors_with_a_reason(body: bytes, needle: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        Envelope.decode(body)
    assert needle in str(err.value)


def test_oversized_message_is_refused_before_parsing() -> None:
    body = Envelope.create({"x": "y" * 2000}, ["a"]).encode()
    with pytest.raises(EnvelopeError, match="over the limit of 1000"):
        Envelope.decode(body, max_bytes=1000)


def test_history_check_allows_next_only() -> None:
    env = Envelope.create({}, ["a", "b", "c"]).advanced()
    rewritten = env.model_copy(update={"route": env.route.model_copy(update={"next": ["x"]})})
    rewritten.check_history(env)  # next may change
    for field, value in (("prev", ["zzz"]), ("curr", "c")):
        altered = env.model_copy(update={"route": env.route.model_copy(update={field: value})})
        with pytest.raises(HistoryAlteredError, match=f"route.{field}"):
            altered.check_history(env)


def test_fan_out_children_have_stable_ids_parent_and_shares_of_weight() -> None:
    # Given an envelope that is itself a child (weight 1/2)
    env = Envelope.create({}, ["a"], id="root")
    half = env.fan_out([1, 2])[1]
    # When it fans out into three
    kids = half.fan_out(["x", "y", "z"])
    # Then ids are derived (the same on a redelivery), the parent and root are kept
    assert [k.id for k in kids] == ["root.1.0", "root.1.1", "root.1.2"]
    assert {k.meta.parent_id for k in kids} == {"root.1"}
    assert {k.meta.root_id for k in kids} == {"root"}
    assert sum(Fraction(k.meta.weight) for k in kids) == Fraction(1, 2)
    assert half.fan_out(["x", "y", "z"])[2].id == kids[2].id
