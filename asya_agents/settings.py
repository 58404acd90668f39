"""Settings: the one place that reads ``ASYA_*`` environment variables.

Grouped by concern; each group reads its own prefix, so ``ASYA_RABBITMQ_URL`` sets
``settings.rabbitmq.url``. Command-line flags override these by building a model with
explicit values (see ``cli.py``); nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "BlobSettings",
    "ConsoleSettings",
    "LLMSettings",
    "MeshSettings",
    "RabbitMQSettings",
    "SQSSettings",
    "Settings",
    "StoreSettings",
]


class MeshSettings(BaseSettings):
    """How the local mesh runs."""

    model_config = SettingsConfigDict(env_prefix="ASYA_", extra="ignore")

    transport: str | None = Field(
        default=None, description="embedded, rabbitmq or sqs; overrides mesh.yaml"
    )
    state_dir: Path | None = Field(
        default=None, description="where the embedded queue and stores live (MESH/.asya)"
    )
    log_format: str = Field(default="auto", description="json, text or auto (text on a tty)")
    log_level: str = Field(default="INFO", description="logging level of replicas")
    metrics_port: int = Field(
        default=0,
        description="first port for replicas' /metrics; 0 picks free ports, -1 serves none",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address /metrics listens on (0.0.0.0 in a pod)"
    )
    trace_export: str = Field(
        default="none",
        description="where replicas send OpenTelemetry spans: none, console or otlp",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="replicas' event loop: uvloop, asyncio, or auto (uvloop when installed)",
    )


class RabbitMQSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASYA_RABBITMQ_", extra="ignore")

    url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/", description="AMQP URL")
    management_url: str = Field(
        default="http://127.0.0.1:15672",
        description="management API, read for unacked counts when it answers; '' disables",
    )
    queue_prefix: str = Field(default="asya", description="queues are PREFIX-MESH-ACTOR")
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024, description="larger messages raise MessageTooLarge"
    )
    delivery_limit: int = Field(
        default=20, description="deliveries before a message moves to PREFIX-MESH-ACTOR-dlq"
    )
    frame_reader: bool = Field(
        default=True,
        description="deliveries, confirms and acks in the transport's own frame reader "
                    "(amqp://); false leaves every frame to aiormq, as on amqps://",
    )


class SQSSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASYA_SQS_", extra="ignore")

    endpoint_url: str | None = Field(default=None, description="None for AWS; moto/LocalStack URL")
    region: str = Field(default="us-east-1", description="AWS region")
    access_key_id: str | None = Field(default=None, description="None: the default chain")
    secret_access_key: str | None = Field(default=None, description="None: the default chain")
    queue_prefix: str = Field(default="asya", description="queues are PREFIX-MESH-ACTOR")
    max_receive_count: int = Field(
        default=20, description="receives before SQS redrives a message to PREFIX-MESH-ACTOR-dlq"
    )


class BlobSettings(BaseSettings):
    """Where ``s3://`` URLs of large data (images) are read and written."""

    model_config = SettingsConfigDict(env_prefix="ASYA_S3_", extra="ignore")

    endpoint_url: str | None = Field(default=None, description="None for AWS; moto/MinIO URL")
    region: str = Field(default="us-east-1", description="AWS region")
    access_key_id: str | None = Field(default=None, description="None: the default chain")
    secret_access_key: str | None = Field(default=None, description="None: the default chain")


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASYA_STORE_", extra="ignore")

    url: str | None = Field(
        default=None,
        description="postgresql://… for a cluster; unset: SQLite in the state folder",
    )


class ConsoleSettings(BaseSettings):
    """The review console (``asya review``): who may sign in and where it listens.

    Reviewers are ``name:hash`` entries (``asya review hash-password`` writes a hash);
    only hashes are ever stored. ``reviewers_file`` (one entry a line) suits a mounted
    Kubernetes Secret; both sources are merged.
    """

    model_config = SettingsConfigDict(env_prefix="ASYA_", extra="ignore")

    reviewers: str | None = Field(
        default=None, description="comma-separated name:hash entries (ASYA_REVIEWERS)"
    )
    reviewers_file: Path | None = Field(
        default=None, description="file of name:hash lines, e.g. a mounted Secret"
    )
    address: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("ASYA_CONSOLE_ADDRESS", "STREAMLIT_SERVER_ADDRESS"),
        description="address the console listens on (0.0.0.0 in a pod)",
    )
    port: int = Field(
        default=8501,
        validation_alias=AliasChoices("ASYA_CONSOLE_PORT", "STREAMLIT_SERVER_PORT"),
        description="port the console listens on",
    )


class LLMSettings(BaseSettings):
    """The LLM behind the ready-made judge (and ``asya demo``): set a key to use it."""

    model_config = SettingsConfigDict(env_prefix="ASYA_LLM_", extra="ignore",
                                      populate_by_name=True)

    api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ASYA_LLM_API_KEY", "OPENAI_API_KEY"),
        description="provider API key; unset: the judge uses its heuristic backend",
    )
    model: str = Field(default="openai/gpt-4o-mini", description="any litellm model name")
    api_base: str | None = Field(default=None, description="OpenAI-compatible endpoint URL")


class Settings(BaseSettings):
    """All settings, grouped. ``Settings()`` reads the environment."""

    model_config = SettingsConfigDict(extra="ignore")

    mesh: MeshSettings = Field(default_factory=MeshSettings)
    rabbitmq: RabbitMQSettings = Field(default_factory=RabbitMQSettings)
    sqs: SQSSettings = Field(default_factory=SQSSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    s3: BlobSettings = Field(default_factory=BlobSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
