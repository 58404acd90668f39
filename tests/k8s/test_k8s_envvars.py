"""The ``ASYA_*`` variables rendered into pods are the ones Settings() reads."""

from __future__ import annotations

from typing import Any

import pytest

from asya_agents.k8s.envvars import env_name
from asya_agents.k8s.render import RenderOptions, render_mesh
from asya_agents.manifest import load_mesh
from asya_agents.settings import (
    ConsoleSettings,
    LLMSettings,
    MeshSettings,
    RabbitMQSettings,
    Settings,
    SQSSettings,
)
from tests.conftest import ROOT

EXAMPLE = ROOT / "mesh" / "example"
OPTIONS = [
    RenderOptions(transport="rabbitmq", project_root=ROOT),
    RenderOptions(transport="sqs", project_root=ROOT, sqs_endpoint="http://localstack:4566"),
]


def rendered_names() -> list[str]:
    """Every ASYA_* name any container of the example mesh gets, on either broker."""
    names: set[str] = set()
    for options in OPTIONS:
        for obj in render_mesh(load_mesh(EXAMPLE), options).objects():
            if obj["kind"] != "Deployment":
                continue
            for container in obj["spec"]["template"]["spec"]["containers"]:
                names.update(e["name"] for e in container["env"]
                             if e["name"].startswith("ASYA_"))
    return sorted(names)


def flat(settings: Settings) -> dict[str, Any]:
    return {f"{group}.{name}": value
            for group, fields in settings.model_dump().items()
            for name, value in fields.items()}


@pytest.mark.parametrize(("group", "field", "expected"), [
    (RabbitMQSettings, "url", "ASYA_RABBITMQ_URL"),
    (SQSSettings, "endpoint_url", "ASYA_SQS_ENDPOINT_URL"),
    (MeshSettings, "metrics_port", "ASYA_METRICS_PORT"),
    (ConsoleSettings, "reviewers_file", "ASYA_REVIEWERS_FILE"),
    (ConsoleSettings, "port", "ASYA_CONSOLE_PORT"),  # the first of its AliasChoices
    (LLMSettings, "api_key", "ASYA_LLM_API_KEY"),
])
def test_env_name_follows_the_settings_model(group: Any, field: str, expected: str) -> None:
    assert env_name(group, field) == expected


def test_the_renderer_emits_the_settings_it_used_to_spell_out() -> None:
    # Given both brokers rendered; Then each settings variable of a pod is there
    assert rendered_names() == sorted([
        "ASYA_CONSOLE_ADDRESS", "ASYA_CONSOLE_PORT", "ASYA_LOG_FORMAT", "ASYA_METRICS_HOST",
        "ASYA_METRICS_PORT", "ASYA_RABBITMQ_MANAGEMENT_URL", "ASYA_RABBITMQ_QUEUE_PREFIX",
        "ASYA_RABBITMQ_URL", "ASYA_REVIEWERS_FILE", "ASYA_SQS_ACCESS_KEY_ID",
        "ASYA_SQS_ENDPOINT_URL", "ASYA_SQS_QUEUE_PREFIX", "ASYA_SQS_REGION",
        "ASYA_SQS_SECRET_ACCESS_KEY", "ASYA_STORE_URL", "ASYA_TRANSPORT",
    ])


def test_every_rendered_name_is_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an environment without any of the rendered names
    names = rendered_names()
    for name in names:
        monkeypatch.delenv(name, raising=False)
    before = flat(Settings())
    for index, name in enumerate(names):
        # When one of them is set to a value no default has
        probe = str(10000 + index)
        with monkeypatch.context() as env:
            env.setenv(name, probe)
            after = flat(Settings())
        # Then exactly one setting took that value
        changed = {key: value for key, value in after.items() if value != before[key]}
        assert len(changed) == 1, (name, changed)
        assert str(next(iter(changed.values()))) == probe, (name, changed)
