"""Broker transports are built from ``ASYA_*`` settings by ``open_transport`` alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.settings import Settings
from asya_agents.transports import open_transport


def test_rabbitmq_settings_come_from_asya_variables(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    # Given RabbitMQ settings in the environment
    monkeypatch.setenv("ASYA_RABBITMQ_URL", "amqp://u:secret@broker.example:5673/vh")
    monkeypatch.setenv("ASYA_RABBITMQ_QUEUE_PREFIX", "team")
    monkeypatch.setenv("ASYA_RABBITMQ_DELIVERY_LIMIT", "7")
    monkeypatch.setenv("ASYA_RABBITMQ_MANAGEMENT_URL", "")
    monkeypatch.setenv("ASYA_RABBITMQ_FRAME_READER", "false")
    # When the transport of a mesh is opened
    t = open_transport("rabbitmq", settings=Settings(), state_dir=tmp_path, mesh="food")
    # Then it uses them, names queues PREFIX-MESH-ACTOR, and never shows the password
    assert t.name == "rabbitmq"
    assert t.queue_name("judge") == "team-food-judge"
    assert t.delivery_limit == 7
    assert t.management_url is None
    assert t._frame_reader is False
    assert "secret" not in repr(t)


def test_sqs_settings_come_from_asya_variables(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("ASYA_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("ASYA_SQS_REGION", "eu-west-1")
    monkeypatch.setenv("ASYA_SQS_QUEUE_PREFIX", "team")
    monkeypatch.setenv("ASYA_SQS_MAX_RECEIVE_COUNT", "3")
    t = open_transport("sqs", settings=Settings(), state_dir=tmp_path, mesh="food")
    assert t.name == "sqs"
    assert t.queue_name("judge") == "team-food-judge"
    assert (t.endpoint_url, t.region) == ("http://127.0.0.1:4566", "eu-west-1")
    assert t.max_receive_count == 3
    assert t.max_message_bytes < 256 * 1024
