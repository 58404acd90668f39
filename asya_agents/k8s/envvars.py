"""The settings a rendered pod runs with, as environment variables.

A replica, a crew actor or the console in a pod reads its settings the way it does on
a laptop: :class:`asya_agents.settings.Settings` from ``ASYA_*`` variables. The names
are not written out here; :func:`env_name` derives each from the settings model (the
group's ``env_prefix`` and the field, or the field's first alias), so that renaming a
setting renames the variable and the two cannot drift apart. Values that are
credentials (broker URLs, keys, the store's URL) are references to Secrets, never
values.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from asya_agents.k8s.options import CONSOLE_PORT, METRICS_PORT, REVIEWERS_MOUNT, RenderOptions
from asya_agents.settings import (
    ConsoleSettings,
    MeshSettings,
    RabbitMQSettings,
    SQSSettings,
    StoreSettings,
)

__all__ = ["console_env", "env_name", "settings_env"]


def env_name(group: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of the settings ``group``: its
    alias (the first of its :class:`~pydantic.AliasChoices`) where it has one, else the
    group's ``env_prefix`` and the field's name, upper-cased."""
    alias = group.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    if isinstance(alias, str):
        return alias
    if alias is not None:  # an AliasPath points into a value; no variable is named so
        raise TypeError(f"{group.__name__}.{field} has no environment variable of its own")
    return f"{group.model_config.get('env_prefix', '')}{field}".upper()


def _value(group: type[BaseSettings], field: str, value: str) -> dict[str, Any]:
    return {"name": env_name(group, field), "value": value}


def _secret(group: type[BaseSettings], field: str, secret: str, key: str, *,
            optional: bool) -> dict[str, Any]:
    ref = {"name": secret, "key": key, "optional": optional}
    return {"name": env_name(group, field), "valueFrom": {"secretKeyRef": ref}}


def settings_env(options: RenderOptions, *, store_required: bool) -> list[dict[str, Any]]:
    """What every pod of the mesh reads: transport, logs, metrics, broker, store."""
    env = [
        _value(MeshSettings, "transport", options.transport),
        _value(MeshSettings, "log_format", "json"),
        _value(MeshSettings, "metrics_port", str(METRICS_PORT)),
        # Prometheus scrapes from outside the pod: listen on every interface there.
        _value(MeshSettings, "metrics_host", "0.0.0.0"),
    ]
    env += _rabbitmq_env(options) if options.transport == "rabbitmq" else _sqs_env(options)
    env.append(_secret(StoreSettings, "url", "asya-store", "url",
                       optional=not store_required))
    return env


def _rabbitmq_env(options: RenderOptions) -> list[dict[str, Any]]:
    return [
        _value(RabbitMQSettings, "queue_prefix", options.queue_prefix),
        _secret(RabbitMQSettings, "url", "asya-rabbitmq", "url", optional=False),
        _secret(RabbitMQSettings, "management_url", "asya-rabbitmq", "management-url",
                optional=True),
    ]


def _sqs_env(options: RenderOptions) -> list[dict[str, Any]]:
    env = [_value(SQSSettings, "queue_prefix", options.queue_prefix),
           _value(SQSSettings, "region", options.sqs_region)]
    if options.sqs_endpoint:
        env.append(_value(SQSSettings, "endpoint_url", options.sqs_endpoint))
    # optional: on EKS the pod's IAM role (IRSA) replaces keys
    return [*env,
            _secret(SQSSettings, "access_key_id", "asya-sqs", "access-key-id", optional=True),
            _secret(SQSSettings, "secret_access_key", "asya-sqs", "secret-access-key",
                    optional=True)]


def console_env() -> list[dict[str, Any]]:
    """What the review console reads on top of :func:`settings_env`."""
    return [
        _value(ConsoleSettings, "address", "0.0.0.0"),
        _value(ConsoleSettings, "port", str(CONSOLE_PORT)),
        # name:hash lines (`asya review hash-password`), from a Secret
        _value(ConsoleSettings, "reviewers_file", f"{REVIEWERS_MOUNT}/reviewers"),
    ]
