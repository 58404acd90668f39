"""Settings: the one place that reads ``ASYA_*`` environment variables.

Grouped by concern; each group reads its own prefix, so ``ASYA_RABBITMQ_URL`` sets
``settings.rabbitmq.url``. Command-line flags override these by building a model with
explicit values (see ``cli.py``); nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "DEFAULT_BLOB_MAX_BYTES",
    "BlobSettings",
    "ConsoleSettings",
    "GatewaySettings",
    "LLMSettings",
    "MeshSettings",
    "RabbitMQSettings",
    "SQSSettings",
    "Settings",
    "StoreSettings",
    "environ_with",
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
    dlq_sweep_interval: float = Field(
        default=5.0, gt=0,
        description="seconds between error-end's sweeps of the brokers' dead-letter "
        "queues (PREFIX-MESH-ACTOR-dlq) into the result store (rabbitmq, sqs)",
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
        default=20,
        description="the quorum queues' x-delivery-limit: returned deliveries before a "
        "message moves to PREFIX-MESH-ACTOR-dlq; above every actor's maxDeliveries"
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
        default=20,
        description="the redrive policy's maxReceiveCount: receives before SQS moves a "
        "message to PREFIX-MESH-ACTOR-dlq; above every actor's maxDeliveries",
    )


#: The most bytes one blob read returns unless ``ASYA_BLOB_MAX_BYTES`` says other.
DEFAULT_BLOB_MAX_BYTES = 64 * 1024 * 1024


class BlobSettings(BaseSettings):
    """Large data (images) by URL: where ``s3://`` objects live (``ASYA_S3_*``), and what
    a payload's URLs may name at all (``ASYA_BLOB_*``, see ``storage.py``). A mesh adds
    its own ``data/`` and state folders and ``spec.storage`` to the roots and buckets."""

    model_config = SettingsConfigDict(env_prefix="ASYA_S3_", extra="ignore",
                                      populate_by_name=True)

    endpoint_url: str | None = Field(default=None, description="None for AWS; moto/MinIO URL")
    region: str = Field(default="us-east-1", description="AWS region")
    access_key_id: str | None = Field(default=None, description="None: the default chain")
    secret_access_key: str | None = Field(default=None, description="None: the default chain")
    roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(), validation_alias="ASYA_BLOB_ROOTS",
        description=f"folders that local paths and file:// URLs may be in, separated by "
                    f"{os.pathsep!r}; unset: none beyond the mesh's own",
    )
    buckets: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias="ASYA_BLOB_BUCKETS",
        description="s3 buckets that URLs may name, comma-separated; '*' allows every "
                    "bucket; unset: none beyond the mesh's spec.storage.buckets",
    )
    max_bytes: int = Field(
        default=DEFAULT_BLOB_MAX_BYTES, ge=1, validation_alias="ASYA_BLOB_MAX_BYTES",
        description="the most bytes one read returns; reading stops one byte past it",
    )

    @field_validator("roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return [p for p in value.split(os.pathsep) if p] if isinstance(value, str) else value

    @field_validator("buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASYA_STORE_", extra="ignore")

    url: str | None = Field(
        default=None,
        description="postgresql://… for a cluster; unset: SQLite in the state folder",
    )
    groups_url: str | None = Field(
        default=None,
        description="where fanIn actors keep their groups (ASYA_STORE_GROUPS_URL); "
                    "unset: the store URL, or SQLite in the state folder",
    )


def _console(name: str) -> AliasChoices:
    """``ASYA_CONSOLE_<NAME>``: the console's own variables."""
    return AliasChoices(f"ASYA_CONSOLE_{name.upper()}")


class ConsoleSettings(BaseSettings):
    """The review console (``asya review``): who may sign in, for how long, and where it
    listens.

    Reviewers are ``name:hash`` entries (``asya review hash-password`` writes a hash);
    only hashes are ever stored. ``reviewers_file`` (one entry a line) suits a mounted
    Kubernetes Secret; both sources are merged. With ``oidc_metadata_url`` set, people
    may also sign in through an OpenID Connect provider, if ``oidc_allow`` lets them.
    Failed sign-ins are throttled per name and per client: ``throttle_free_failures``
    are free, then each attempt waits ``throttle_delay`` seconds, doubled per further
    failure, and ``throttle_lockout_failures`` (per name) or
    ``throttle_client_lockout_failures`` (per client) lock the key for
    ``throttle_lockout_minutes``; a key quiet that long after its wait is forgotten.
    Sessions last ``session_hours`` and are signed with ``session_secret``.
    """

    model_config = SettingsConfigDict(env_prefix="ASYA_", extra="ignore",
                                      populate_by_name=True)

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
    session_secret: str | None = Field(
        default=None, validation_alias=_console("session_secret"),
        description="key that signs session tokens (share it between console replicas); "
                    "unset: generated once into STATE/console-secret, mode 0600",
    )
    session_hours: float = Field(
        default=8.0, gt=0, validation_alias=_console("session_hours"),
        description="a sign-in lasts this long, across reloads, until signing out",
    )
    throttle_free_failures: int = Field(
        default=3, ge=0, validation_alias=_console("throttle_free_failures"),
        description="failed sign-ins (per name, per client) before attempts must wait",
    )
    throttle_delay: float = Field(
        default=1.0, ge=0, validation_alias=_console("throttle_delay"),
        description="seconds the first throttled attempt waits; doubled per failure",
    )
    throttle_lockout_failures: int = Field(
        default=10, ge=1, validation_alias=_console("throttle_lockout_failures"),
        description="failed sign-ins that lock a name out",
    )
    throttle_client_lockout_failures: int = Field(
        default=30, ge=1, validation_alias=_console("throttle_client_lockout_failures"),
        description="failed sign-ins that lock a client (an address) out, whatever names",
    )
    throttle_lockout_minutes: float = Field(
        default=15.0, gt=0, validation_alias=_console("throttle_lockout_minutes"),
        description="how long a lockout lasts; failures older than this are forgotten",
    )
    client_ip_header: str | None = Field(
        default=None, validation_alias=_console("client_ip_header"),
        description="header with the client's address behind a trusted proxy (first "
                    "entry, e.g. X-Forwarded-For); unset: the connection's address",
    )
    oidc_metadata_url: str | None = Field(
        default=None, validation_alias=_console("oidc_metadata_url"),
        description="OpenID Connect discovery URL (…/.well-known/openid-configuration); "
                    "set: single sign-on beside the reviewer list",
    )
    oidc_client_id: str | None = Field(
        default=None, validation_alias=_console("oidc_client_id"),
        description="the console's client id at the provider",
    )
    oidc_client_secret: str | None = Field(
        default=None, validation_alias=_console("oidc_client_secret"),
        description="the console's client secret at the provider",
    )
    oidc_redirect_uri: str | None = Field(
        default=None, validation_alias=_console("oidc_redirect_uri"),
        description="the console's URL + /oauth2callback, as registered at the provider; "
                    "unset: http://localhost:PORT/oauth2callback",
    )
    oidc_cookie_secret: str | None = Field(
        default=None, validation_alias=_console("oidc_cookie_secret"),
        description="key of Streamlit's identity cookie; unset: a new one per start "
                    "(people then sign in through the provider again)",
    )
    oidc_allow: str | None = Field(
        default=None, validation_alias=_console("oidc_allow"),
        description="comma-separated e-mail addresses or @domains that may review through "
                    "the provider; nobody else may, whatever account they hold",
    )
    oidc_label: str = Field(
        default="single sign-on", validation_alias=_console("oidc_label"),
        description="the provider's name on the button: Sign in with LABEL",
    )

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_metadata_url)


class GatewaySettings(BaseSettings):
    """The gateway (``asya gateway``): its credentials, where it listens, and whether
    replicas write the hop events its streams read.

    Clients are ``name:hash`` entries (``asya gateway hash-key NAME`` writes one); only
    hashes are stored. ``keys_file`` (one entry a line) suits a mounted Kubernetes
    Secret; both sources are merged.
    """

    model_config = SettingsConfigDict(env_prefix="ASYA_GATEWAY_", extra="ignore")

    keys: str | None = Field(
        default=None, description="comma-separated name:hash entries (ASYA_GATEWAY_KEYS)"
    )
    keys_file: Path | None = Field(
        default=None, description="file of name:hash lines, e.g. a mounted Secret"
    )
    host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    port: int = Field(default=8080, description="port the gateway listens on")
    events: bool = Field(
        default=False,
        description="replicas append hop events for the gateway's streams "
                    "(also on when mesh.yaml has spec.gateway, or under asya up --gateway)",
    )
    poll_interval: float = Field(
        default=0.002, gt=0,
        description="seconds between reads of a SQLite event feed when idle "
                    "(PostgreSQL wakes the gateway with NOTIFY instead)",
    )
    reconcile_interval: float = Field(
        default=1.0, gt=0,
        description="seconds between checks of the result store for the jobs streams "
                    "watch, so that an event lost with a killed replica never hangs one",
    )
    events_retention: float = Field(
        default=7 * 24 * 3600.0, gt=0,
        description="seconds hop events are kept (Last-Event-ID resumes within it)",
    )
    public_url: str | None = Field(
        default=None,
        description="URL clients reach the gateway at, for the A2A agent card "
                    "(unset: the URL of each request)",
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
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)


def environ_with(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``: what a child process started
    with a setting of its own (``asya up --gateway``) runs with."""
    return {**os.environ, **overrides}
